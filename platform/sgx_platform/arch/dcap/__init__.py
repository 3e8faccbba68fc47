"""Intel DCAP formats: ECDSA quotes (v3, v4, v5), the PCK certificate's SGX extension, TCB Info,
Enclave Identity and dcap-qvl's QuoteCollateralV3.

Invariants: pure (no I/O, no emulator state, no gRPC); every parser is strict (exact lengths, known
versions and types, no trailing data) and raises
:class:`~sgx_platform.arch.errors.MalformedStructureError`; every writer is the exact inverse of its
parser, byte for byte and, for Intel's signed JSON, character for character.
"""
