"""The shared service runtime of sgxemu (contract-level, component-free).

Invariants: imports no component package (``sgx_platform`` outside ``arch``, ``sgx_quoting``,
``sgx_verifier``, ``sgx_launchctl``); holds no domain logic. It gives every service the same
server bootstrap (health, reflection, graceful shutdown, Unix sockets with a file mode, TLS or
mTLS on TCP), authorization in an interceptor, errors as ``google.rpc.Status`` with a
``google.rpc.ErrorInfo`` beside a sentence for people, strict configuration tables
(:mod:`sgx_rpc.config_table`) that raise the calling component's own error class, and atomic
file writes with a durable directory (:mod:`sgx_rpc.files`).
"""
