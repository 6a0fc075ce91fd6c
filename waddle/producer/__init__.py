"""The producer: what a training process imports (init, log, finish and what they record)."""
