"""The platform's gRPC layer: the servicer, the status table, and a client.

Only this subpackage imports the generated ``sgx.platform.v1`` code (STYLE.md).
"""
