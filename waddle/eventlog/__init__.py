"""The append-only event log: line codec, segment files, writer and tailing reader."""
