"""Pure SGX architecture library: byte-exact structures, measurement, SIGSTRUCT, SGXS, DCAP formats.

Invariants: no I/O, no emulator state, no gRPC. Every structure is a frozen dataclass whose
``from_bytes`` demands the exact length, zero reserved bytes and known constants, and whose
``to_bytes`` is its exact inverse. Importing this package pulls in nothing outside it.
"""
