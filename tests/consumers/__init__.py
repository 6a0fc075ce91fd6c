"""Tests of waddle.consumers (the framework, the consumers, retention, the daemon)."""
