"""The verifier's gRPC layer: proto <-> domain conversion, the status table, the thin servicer,
metrics, the emulated PCS client and the server assembly. The only place in ``sgx_verifier``
that imports generated ``sgx.*`` code."""
