"""Local attestation inside an enclave: checking a REPORT targeted at it (``sgx_verify_report``).

The enclave derives its report key with EGETKEY (KEYNAME = REPORT, KEYID = the REPORT's KEYID)
through the platform and recomputes AES-128-CMAC over the 384 body bytes. A REPORT verifies
only if it was made by EREPORT on this platform, targeted at this enclave (its MRENCLAVE,
ATTRIBUTES, MISCSELECT, CONFIGID), and not altered afterwards.

Invariants: the MAC is compared with :func:`hmac.compare_digest`; the key never leaves this
module's functions; parse errors and a MAC mismatch is :class:`ReportMacMismatchError`.
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from sgx_platform.arch.attributes import KeyName
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.report import Report
from sgx_quoting.enclave_errors import ReportMacMismatchError
from sgx_quoting.ports import PlatformPort


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """AES-128-CMAC of ``data`` under the 16-byte ``key``."""
    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def report_key_request(report: Report) -> bytes:
    """The KEYREQUEST that derives the report key ``report`` was MAC'd with."""
    return KeyRequest(keyname=int(KeyName.REPORT), key_id=report.key_id).to_bytes()


def verify_report_mac(platform: PlatformPort, handle: bytes, report: Report) -> None:
    """Raise :class:`ReportMacMismatchError` unless ``report`` is MAC'd with the report key of
    the enclave ``handle`` names.

    EGETKEY failures (stale handle, platform down) propagate as the platform's error.
    """
    key = platform.get_key(handle, report_key_request(report))
    if not hmac.compare_digest(aes_cmac(key, report.mac_body()), report.mac):
        raise ReportMacMismatchError(
            "the REPORT's MAC does not verify with this enclave's report key: it was targeted "
            "at another enclave (use this enclave's TARGETINFO), made on another platform, or "
            "altered"
        )
