"""Tests of waddle.integrations against the real frameworks (CPU, tiny models, no downloads)."""
