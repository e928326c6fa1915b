"""The SP process: gRPC server and client, workflow engine, state store, CLI."""
