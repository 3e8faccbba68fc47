"""SGX instruction return codes (RAX) and ENCLS/ENCLU leaf numbers (SGX-REFERENCE §3.10).

Sources: RS ``ErrorCode``, DRV-OOT ``sgx_user.h``, OE; leaves per the SDM and RS.
"""

from __future__ import annotations

from enum import IntEnum


class SgxErrorCode(IntEnum):
    """Error codes an ENCLS/ENCLU leaf returns in RAX (ZF=1)."""

    SUCCESS = 0
    INVALID_SIG_STRUCT = 1
    INVALID_ATTRIBUTE = 2
    BLKSTATE = 3
    INVALID_MEASUREMENT = 4
    NOTBLOCKABLE = 5
    PG_INVLD = 6
    LOCKFAIL = 7
    INVALID_SIGNATURE = 8
    MAC_COMPARE_FAIL = 9
    PAGE_NOT_BLOCKED = 10
    NOT_TRACKED = 11
    VA_SLOT_OCCUPIED = 12
    CHILD_PRESENT = 13
    ENCLAVE_ACT = 14
    ENTRYEPOCH_LOCKED = 15
    INVALID_EINITTOKEN = 16
    PREV_TRK_INCMPL = 17
    PG_IS_SECS = 18
    PAGE_ATTRIBUTES_MISMATCH = 19
    PAGE_NOT_MODIFIABLE = 20
    PAGE_NOT_DEBUGGABLE = 21
    INVALID_REPORTMACSTRUCT = 28
    INVALID_CPUSVN = 32
    INVALID_ISVSVN = 64
    UNMASKED_EVENT = 128
    INVALID_KEYNAME = 256


#: The kernel encodes a CPU fault during ENCLS as ``ENCLS_FAULT_FLAG | trapnr`` (K-ENCLS).
ENCLS_FAULT_FLAG = 0x4000_0000


class EnclsLeaf(IntEnum):
    """ENCLS leaf numbers (EAX)."""

    ECREATE = 0
    EADD = 1
    EINIT = 2
    EREMOVE = 3
    EDBGRD = 4
    EDBGWR = 5
    EEXTEND = 6
    ELDB = 7
    ELDU = 8
    EBLOCK = 9
    EPA = 10
    EWB = 11
    ETRACK = 12
    EAUG = 13
    EMODPR = 14
    EMODT = 15


class EncluLeaf(IntEnum):
    """ENCLU leaf numbers (EAX)."""

    EREPORT = 0
    EGETKEY = 1
    EENTER = 2
    ERESUME = 3
    EEXIT = 4
    EACCEPT = 5
    EMODPE = 6
    EACCEPTCOPY = 7
    EVERIFYREPORT2 = 8
