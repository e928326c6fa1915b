"""Where a broker keeps its slices: implementations of the core's ``SliceStore`` port (SQLite, the embedded default)."""
