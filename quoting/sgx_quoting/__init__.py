"""The quoting side: PCE and quoting enclave on the platform, and the emulated PCS."""
