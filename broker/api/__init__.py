"""The broker's edge: gRPC servicers, the protobuf codec, status mapping, the lower-SP client, request files."""
