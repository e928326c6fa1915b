"""The broker's core: slice lifecycle, workflow engine, records, catalog feed, offers; no grpc, aiohttp or protobuf."""
