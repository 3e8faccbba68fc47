"""gRPC adapters of the quoting package: the only modules that import the generated ``sgx.*``."""
