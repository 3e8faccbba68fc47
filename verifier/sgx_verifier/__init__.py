"""The quote verification service: appraises emulated and real Intel DCAP quotes.

Invariant: imports only ``sgx_platform.arch`` from the platform; never quoting, emulator state
or dcap-qvl.

The appraisal (``sgxemu verify`` and the service use the same code):

* :mod:`sgx_verifier.appraisal` — ``appraise(quote, collateral, anchors=, at=, pck_chain=)``
  returns a :class:`~sgx_verifier.verdict.Verdict`; it never raises for bad input;
* :mod:`sgx_verifier.verdict` — the verdict, its checks and stable failure codes;
* :mod:`sgx_verifier.anchors` — named trust anchors pinned by key (the Intel SGX Root CA ships);
* :mod:`sgx_verifier.collateral` — the collateral items and readers for their file forms;
* :mod:`sgx_verifier.certificates`, :mod:`sgx_verifier.crl`, :mod:`sgx_verifier.signatures`,
  :mod:`sgx_verifier.tcb` — chains, CRLs, cached P-256 checks, TCB levels and status merging.
"""
