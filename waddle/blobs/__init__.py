"""Content-addressed files beside the event log (``<root>/blobs/``): see ``store``."""
