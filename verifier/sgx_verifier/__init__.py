"""The quote verification service: appraises emulated and real Intel DCAP quotes.

Invariant: imports only ``sgx_platform.arch`` from the platform; never quoting, emulator state
or dcap-qvl.
"""
