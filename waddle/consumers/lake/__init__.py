"""The Parquet lake consumer (``waddle-consume --consumer lake --lake DIR``)."""
