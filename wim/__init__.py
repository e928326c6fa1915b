"""The WIM adapter: connectivity services between connection points, stitched across domains."""
