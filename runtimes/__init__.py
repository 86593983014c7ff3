"""Model runtimes: numpy in, numpy out. Imports no transport (grpc, HTTP) code."""
