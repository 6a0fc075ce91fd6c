"""The DuckDB writer: events into the tables of the store (docs/schema.md)."""
