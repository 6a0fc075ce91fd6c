"""The DuckDB store: its schema, the read queries and downsampling for charts."""
