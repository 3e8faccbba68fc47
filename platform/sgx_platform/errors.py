"""The emulated platform's branch of the error tree (below :class:`SgxError`).

Invariants: every error the CPU library raises is a :class:`PlatformError`, except malformed
input bytes, which stay :class:`~sgx_platform.arch.errors.MalformedStructureError`. An
instruction that architecturally "fails" (ZF=1, an error code in RAX) raises
:class:`EnclaveInstructionError` carrying its :class:`SgxErrorCode`; an instruction that faults
raises :class:`GeneralProtectionFault` (#GP(0)) or :class:`PageFault` (#PF with its error
code). Messages never contain secret material (keys, root secrets, page contents).
"""

from __future__ import annotations

from enum import IntFlag

from sgx_platform.arch.codes import SgxErrorCode
from sgx_platform.arch.errors import SgxError


class PlatformError(SgxError):
    """Root of the platform (CPU, EPC, fuses, sealing) errors."""


class EnclaveInstructionError(PlatformError):
    """An ENCLS/ENCLU leaf returned an SGX error code (ZF=1, RAX=code)."""

    def __init__(self, leaf: str, code: SgxErrorCode, detail: str) -> None:
        super().__init__(f"{leaf}: SGX_{code.name} ({int(code)}): {detail}")
        self.leaf = leaf
        self.code = code
        self.detail = detail


class EvictedPageIntegrityError(EnclaveInstructionError):
    """ELDU found an evicted page altered or replayed (SGX_MAC_COMPARE_FAIL)."""

    def __init__(self, detail: str) -> None:
        super().__init__("ELDU", SgxErrorCode.MAC_COMPARE_FAIL, detail)


class GeneralProtectionFault(PlatformError):
    """#GP(0): the instruction's operands break an architectural rule."""

    def __init__(self, leaf: str, reason: str) -> None:
        super().__init__(f"{leaf}: #GP(0): {reason}")
        self.leaf = leaf
        self.reason = reason


class PageFaultCode(IntFlag):
    """#PF error-code bits (SGX-REFERENCE §8): P, W, U and SGX (an EPCM-caused fault)."""

    P = 0x1
    W = 0x2
    U = 0x4
    SGX = 0x8000


#: An enclave read denied by the EPCM (P|U|SGX), as the selftests see it.
PF_EPCM_READ = PageFaultCode.P | PageFaultCode.U | PageFaultCode.SGX  # 0x8005
#: An enclave write denied by the EPCM (P|W|U|SGX).
PF_EPCM_WRITE = PageFaultCode.P | PageFaultCode.W | PageFaultCode.U | PageFaultCode.SGX  # 0x8007
#: A user read of an address with no page (U).
PF_NOT_PRESENT_READ = PageFaultCode.U  # 0x4
#: A user write of an address with no page (W|U).
PF_NOT_PRESENT_WRITE = PageFaultCode.W | PageFaultCode.U  # 0x6


class PageFault(PlatformError):
    """#PF at ``address`` with the x86 error code (bit 15 set when the EPCM denied it)."""

    def __init__(self, address: int, error_code: PageFaultCode, reason: str) -> None:
        super().__init__(f"#PF at {address:#x} (error code {int(error_code):#x}): {reason}")
        self.address = address
        self.error_code = error_code
        self.reason = reason


class EpcExhaustedError(PlatformError):
    """The EPC cannot supply the pages an operation needs (and eviction cannot help)."""

    def __init__(self, requested: int, free: int, capacity: int, detail: str) -> None:
        super().__init__(
            f"EPC exhausted: {detail}: {requested} page(s) requested, {free} free of {capacity}"
        )
        self.requested = requested
        self.free = free
        self.capacity = capacity


class StaleEnclaveError(PlatformError):
    """An enclave reference from an earlier boot, or to an enclave already destroyed."""


class RegisterLockedError(PlatformError):
    """A write to IA32_SGXLEPUBKEYHASH after the registers were locked (until reset)."""


class LatchAlreadySetError(PlatformError):
    """The launch-policy latch already holds a digest (it is write-once until reset)."""


class FuseStoreError(PlatformError):
    """The platform's secret files are missing, corrupt, or readable by others."""


class TcbUpdateError(PlatformError, ValueError):
    """A TCB update that would not raise CPUSVN (a downgrade or no change)."""


class ReportVerificationError(PlatformError):
    """A REPORT whose MAC does not verify under the verifying enclave's report key."""


class SealingParameterError(PlatformError, ValueError):
    """Seal/unseal arguments the SDK rejects (SGX_ERROR_INVALID_PARAMETER)."""


class UnsealError(PlatformError):
    """Sealed data that does not open here (SDK: SGX_ERROR_MAC_MISMATCH)."""
