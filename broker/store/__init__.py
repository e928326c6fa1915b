"""Where a broker keeps its slices: the store port and its SQLite implementation (the embedded default)."""
