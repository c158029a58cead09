"""LND gRPC stubs generated from proto/ by `make proto`."""
