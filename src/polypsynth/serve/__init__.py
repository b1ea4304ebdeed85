"""The gRPC sampling service: server, servicer, dynamic batcher and client."""
