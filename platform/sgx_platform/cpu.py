"""The emulated SGX CPU: ENCLS (ECREATE, EADD, EEXTEND, EINIT, EREMOVE, EDBGRD, EDBGWR) and, through
an :class:`EnclaveContext`, ENCLU (EREPORT, EGETKEY) and enclave memory access.

Invariants:

* One :class:`SgxCpu` object is one boot of one platform. Its boot epoch comes from the fuses'
  persistent boot counter, so it differs after every :meth:`SgxCpu.reset` and every restart
  (a new object on the same fuse directory). An :class:`EnclaveRef` or :class:`EnclaveContext`
  from another boot, or of a destroyed enclave, raises :class:`StaleEnclaveError`.
* Emulation boundary: ENCLS leaves take an :class:`EnclaveRef` (what the kernel holds); EINIT
  returns the only :class:`EnclaveContext` for the enclave, and whoever holds it acts as code
  inside the enclave (EREPORT, EGETKEY, reading and writing its own pages within their EPCM
  permissions). From outside, enclave memory is reachable only through EDBGRD/EDBGWR, and only
  for a DEBUG enclave.
* Instruction outcomes follow the SDM: a failing leaf raises :class:`EnclaveInstructionError`
  with its SGX code, a fault raises :class:`GeneralProtectionFault` or :class:`PageFault`.
  EINIT makes its checks in the order of SGX-REFERENCE §5.1 (ADR 0004 for the UNVERIFIED
  token-attribute code). A failed EINIT leaves the enclave uninitialized and may be retried.
* Every public operation holds the CPU's lock: instructions are atomic with respect to each
  other (one logical processor).
* Out of scope: SGX2 leaves (EAUG, EMODPR, EMODT, EACCEPT, EMODPE), EENTER/ERESUME/AEX
  (there is no code execution: the context holder *is* the enclave code), CET and AEX-Notify
  semantics beyond accepting their attribute bits where noted.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace

from sgx_platform.arch.attributes import (
    U64_MAX,
    XFRM_LEGACY,
    AttributeFlags,
    Attributes,
    KeyName,
    MiscSelect,
    Xfrm,
)
from sgx_platform.arch.codes import SgxErrorCode
from sgx_platform.arch.einittoken import EinitToken
from sgx_platform.arch.errors import MalformedStructureError, SignatureError
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.measure import CHUNK_SIZE, MrEnclaveMeasurer
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.report import Report, TargetInfo
from sgx_platform.arch.secinfo import PageType, SecInfo, SecInfoFlags
from sgx_platform.arch.secs import Secs
from sgx_platform.arch.sigstruct import Sigstruct
from sgx_platform.arch.tcs import Tcs, TcsFlags
from sgx_platform.epc import PAGE_SIZE, EnclaveEpcUsage, Epc, EpcmInfo
from sgx_platform.errors import (
    PF_EPCM_READ,
    PF_EPCM_WRITE,
    PF_NOT_PRESENT_READ,
    PF_NOT_PRESENT_WRITE,
    EnclaveInstructionError,
    GeneralProtectionFault,
    PageFault,
    PageFaultCode,
    ReportVerificationError,
    StaleEnclaveError,
)
from sgx_platform.fuses import PlatformFuses, cpusvn_beyond
from sgx_platform.keys import (
    EnclaveIdentity,
    KeyDeriver,
    aes_cmac,
    egetkey_dependencies,
    einittoken_key_dependencies,
    ereport_key_dependencies,
)
from sgx_platform.launch import LaunchPolicyLatch, LePubKeyHashRegisters

#: ATTRIBUTES.FLAGS this CPU supports (CPUID.(0x12,1)); CET is not emulated (reserved here).
SUPPORTED_ATTRIBUTE_FLAGS = int(
    AttributeFlags.DEBUG
    | AttributeFlags.MODE64BIT
    | AttributeFlags.PROVISIONKEY
    | AttributeFlags.EINITTOKEN_KEY
    | AttributeFlags.KSS
    | AttributeFlags.AEXNOTIFY
)
_AVX512 = int(Xfrm.OPMASK | Xfrm.ZMM_HI256 | Xfrm.HI16_ZMM)
#: XFRM this CPU supports: x87, SSE, AVX, AVX-512 (all three components together), PKRU.
SUPPORTED_XFRM = XFRM_LEGACY | int(Xfrm.AVX) | _AVX512 | int(Xfrm.PKRU)
#: MISCSELECT this CPU supports (CPUID.(0x12,0).EBX).
SUPPORTED_MISCSELECT = int(MiscSelect.EXINFO)
#: log2 of the largest enclave (CPUID.(0x12,0).EDX): 64-bit and 32-bit enclaves.
MAX_ENCLAVE_SIZE_LOG2_64 = 36
MAX_ENCLAVE_SIZE_LOG2_32 = 31
MIN_ENCLAVE_SIZE = 2 * PAGE_SIZE
#: Default EPC: 128 MiB of 4 KiB pages (the size of the classic client EPC).
DEFAULT_EPC_PAGES = 32768
_TCS_FLAGS_FIELD = range(8, 16)  # EDBGWR may write only TCS.FLAGS


@dataclass(frozen=True, slots=True)
class EnclaveRef:
    """The outside reference to an enclave (its SECS): what ENCLS leaves take."""

    eid: int
    boot_epoch: int
    base_address: int
    size: int

    def contains(self, linaddr: int, length: int = 1) -> bool:
        return self.base_address <= linaddr and linaddr + length <= self.base_address + self.size


class _Enclave:
    """The CPU's private state of one enclave (SECS contents and hidden fields)."""

    __slots__ = ("destroyed", "identity", "measurement_final", "measurer", "ref", "secs")

    def __init__(self, ref: EnclaveRef, secs: Secs) -> None:
        self.ref = ref
        self.secs = secs
        self.measurer = MrEnclaveMeasurer(secs.ssa_frame_size, secs.size)
        self.identity: EnclaveIdentity | None = None
        self.measurement_final = False
        self.destroyed = False

    @property
    def debug(self) -> bool:
        return self.secs.attributes.debug


class SgxCpu:
    """One boot of an emulated SGX platform on ``fuses``, with an EPC of ``epc_pages`` pages."""

    def __init__(
        self, fuses: PlatformFuses, *, epc_pages: int = DEFAULT_EPC_PAGES, eviction: bool = True
    ) -> None:
        self._fuses = fuses
        self._keys = KeyDeriver(fuses.root_seal_secret, fuses.root_provisioning_secret)
        self._epc_pages = epc_pages
        self._eviction = eviction
        self._lock = threading.RLock()
        self._next_eid = 1
        self._le_hash = LePubKeyHashRegisters()
        self._latch = LaunchPolicyLatch()
        self._enclaves: dict[int, _Enclave] = {}
        self._epc = Epc(epc_pages, eviction=eviction)
        self._report_key_id = secrets.token_bytes(32)
        self._boot_epoch = fuses.next_boot()

    # -- platform state ------------------------------------------------------------------------

    @property
    def boot_epoch(self) -> int:
        """The boot number: changes at every reset and every restart."""
        return self._boot_epoch

    @property
    def cpusvn(self) -> bytes:
        """CR_CPUSVN, the platform's current security version."""
        return self._fuses.cpusvn

    @property
    def le_pubkeyhash(self) -> LePubKeyHashRegisters:
        """IA32_SGXLEPUBKEYHASH0..3 (write, lock, read)."""
        return self._le_hash

    @property
    def launch_policy_latch(self) -> LaunchPolicyLatch:
        return self._latch

    @property
    def epc(self) -> Epc:
        return self._epc

    def reset(self) -> None:
        """Platform reset: every enclave is gone, EPC and registers cleared, new boot epoch."""
        with self._lock:
            for enclave in self._enclaves.values():
                enclave.destroyed = True
            self._enclaves.clear()
            self._epc = Epc(self._epc_pages, eviction=self._eviction)
            self._le_hash.reset()
            self._latch.reset()
            self._report_key_id = secrets.token_bytes(32)
            self._boot_epoch = self._fuses.next_boot()

    def update_tcb(self, new_cpusvn: bytes | None = None) -> bytes:
        """Raise CPUSVN (owner operation; takes effect immediately). Returns the new CPUSVN."""
        with self._lock:
            return self._fuses.update_tcb(new_cpusvn)

    def set_owner_epoch(self, value: bytes) -> None:
        """Set OWNEREPOCH (owner operation); SEAL/REPORT/EINITTOKEN keys change with it."""
        with self._lock:
            self._fuses.set_owner_epoch(value)

    # -- enclave bookkeeping -------------------------------------------------------------------

    def _enclave(self, ref: EnclaveRef) -> _Enclave:
        if ref.boot_epoch != self._boot_epoch:
            raise StaleEnclaveError(
                f"enclave {ref.eid} belongs to boot {ref.boot_epoch}; the platform is at boot "
                f"{self._boot_epoch} (reset or restarted since)"
            )
        enclave = self._enclaves.get(ref.eid)
        if enclave is None or enclave.destroyed or enclave.ref != ref:
            raise StaleEnclaveError(f"enclave {ref.eid} has been destroyed")
        return enclave

    def enclaves(self) -> list[EnclaveRef]:
        with self._lock:
            return [e.ref for e in self._enclaves.values()]

    def epc_usage(self, ref: EnclaveRef) -> EnclaveEpcUsage:
        with self._lock:
            self._enclave(ref)
            return self._epc.usage(ref.eid)

    def is_initialized(self, ref: EnclaveRef) -> bool:
        with self._lock:
            return self._enclave(ref).identity is not None

    # -- ECREATE -------------------------------------------------------------------------------

    def ecreate(self, secs: Secs | bytes) -> EnclaveRef:
        """ECREATE: check the SECS, take a SECS page (and a VA page), start MRENCLAVE."""
        with self._lock:
            if isinstance(secs, bytes):
                try:
                    secs = Secs.from_bytes(secs)
                except MalformedStructureError as e:
                    raise GeneralProtectionFault("ECREATE", str(e)) from e
            _check_secs(secs)
            eid = self._next_eid
            self._epc.create_enclave(eid)
            self._next_eid += 1
            ref = EnclaveRef(eid, self._boot_epoch, secs.base_address, secs.size)
            # SECS identity fields are EINIT's to set; only the ECREATE-time fields are kept.
            kept = Secs(
                size=secs.size,
                base_address=secs.base_address,
                ssa_frame_size=secs.ssa_frame_size,
                miscselect=secs.miscselect,
                attributes=secs.attributes,
                configid=secs.configid,
                configsvn=secs.configsvn,
            )
            self._enclaves[eid] = _Enclave(ref, kept)
            return ref

    # -- EADD / EEXTEND ------------------------------------------------------------------------

    def eadd(self, ref: EnclaveRef, linaddr: int, page: bytes, secinfo: SecInfo) -> None:
        """EADD: copy ``page`` to a new EPC page at ``linaddr`` with ``secinfo``; measure it."""
        with self._lock:
            enclave = self._uninitialized(ref, "EADD")
            if len(page) != PAGE_SIZE:
                raise GeneralProtectionFault("EADD", f"source page is {len(page)} bytes, not 4096")
            if secinfo.page_type not in (PageType.REG, PageType.TCS):
                raise GeneralProtectionFault(
                    "EADD", f"page type {secinfo.page_type.name} cannot be added (REG or TCS)"
                )
            if secinfo.flags & (SecInfoFlags.PENDING | SecInfoFlags.MODIFIED | SecInfoFlags.PR):
                raise GeneralProtectionFault("EADD", "SECINFO PENDING/MODIFIED/PR must be 0")
            perms = secinfo.permissions
            if perms & SecInfoFlags.W and not perms & SecInfoFlags.R:
                raise GeneralProtectionFault("EADD", "SECINFO W without R")
            self._check_page_address(ref, linaddr, "EADD")
            if self._epc.page_info(ref.eid, linaddr) is not None:
                raise GeneralProtectionFault("EADD", f"a page is already added at {linaddr:#x}")
            contents = bytes(page)
            if secinfo.page_type is PageType.TCS:
                contents = _tcs_as_added(contents, enclave.secs)
                perms = SecInfoFlags(0)  # EPCM R/W/X forced to 0 for a TCS (SDM EADD)
            # The EPC page first: if the EPC is exhausted nothing has been measured.
            self._epc.add_page(ref.eid, linaddr, EpcmInfo(secinfo.page_type, perms), contents)
            enclave.measurer.eadd(linaddr - ref.base_address, secinfo)

    def eextend(self, ref: EnclaveRef, linaddr: int) -> None:
        """EEXTEND: measure the 256-byte chunk at ``linaddr`` (256-aligned, in an added page)."""
        with self._lock:
            enclave = self._uninitialized(ref, "EEXTEND")
            if linaddr % CHUNK_SIZE:
                raise GeneralProtectionFault("EEXTEND", f"{linaddr:#x} is not 256-byte aligned")
            if not ref.contains(linaddr, CHUNK_SIZE):
                raise GeneralProtectionFault("EEXTEND", f"{linaddr:#x} is outside ELRANGE")
            page_addr = linaddr - linaddr % PAGE_SIZE
            data = self._page_data(ref, page_addr, "EEXTEND")
            start = linaddr - page_addr
            enclave.measurer.eextend(
                linaddr - ref.base_address, bytes(data[start : start + CHUNK_SIZE])
            )

    def eextend_page(self, ref: EnclaveRef, linaddr: int) -> None:
        """The 16 EEXTENDs of the page at ``linaddr`` (the driver's SGX_PAGE_MEASURE)."""
        with self._lock:
            enclave = self._uninitialized(ref, "EEXTEND")
            self._check_page_address(ref, linaddr, "EEXTEND")
            data = self._page_data(ref, linaddr, "EEXTEND")
            enclave.measurer.eextend_page(linaddr - ref.base_address, bytes(data))

    # -- EINIT ---------------------------------------------------------------------------------

    def einit(
        self,
        ref: EnclaveRef,
        sigstruct: Sigstruct | bytes,
        token: EinitToken | bytes | None = None,
    ) -> EnclaveContext:
        """EINIT with its checks in the order of §5.1; returns the enclave's inside context.

        ``token`` None is the all-zero token Linux passes (VALID = 0).
        """
        with self._lock:
            enclave = self._enclave(ref)
            secs = enclave.secs

            def fail(code: SgxErrorCode, detail: str) -> EnclaveInstructionError:
                return EnclaveInstructionError("EINIT", code, detail)

            # Step 2: SIGSTRUCT structure (header, vendor, header2, exponent, reserved).
            try:
                sig = (
                    sigstruct
                    if isinstance(sigstruct, Sigstruct)
                    else Sigstruct.from_bytes(sigstruct)
                )
                sig.verify_structure()
            except MalformedStructureError as e:
                raise fail(SgxErrorCode.INVALID_SIG_STRUCT, str(e)) from e
            # Step 4: the RSA signature (with Q1, Q2).
            try:
                sig.verify_signature()
                sig.verify_q1()
                sig.verify_q2()
            except SignatureError as e:
                raise fail(SgxErrorCode.INVALID_SIGNATURE, str(e)) from e
            kss = secs.attributes.has(AttributeFlags.KSS)
            # Step 6: ISVFAMILYID needs KSS. (ISVEXTPRODID likewise, as the SDK simulator does.)
            if not kss and (any(sig.isvfamilyid) or any(sig.isvextprodid)):
                raise fail(
                    SgxErrorCode.INVALID_SIG_STRUCT,
                    "ISVFAMILYID/ISVEXTPRODID set but SECS.ATTRIBUTES.KSS is 0",
                )
            # Step 7: already initialized.
            if enclave.identity is not None:
                raise GeneralProtectionFault("EINIT", "the enclave is already initialized")
            # Step 8: MRENCLAVE (final from now on, even if a later check fails).
            enclave.measurement_final = True
            mrenclave = enclave.measurer.finalize()
            if sig.enclave_hash != mrenclave:
                raise fail(
                    SgxErrorCode.INVALID_MEASUREMENT,
                    f"SIGSTRUCT.ENCLAVEHASH {sig.enclave_hash} != MRENCLAVE {mrenclave}",
                )
            # Step 9.
            mrsigner = sig.mrsigner
            le_hash = self._le_hash.value
            # Step 10: EINITTOKEN_KEY only for the signer in IA32_SGXLEPUBKEYHASH.
            if secs.attributes.has(AttributeFlags.EINITTOKEN_KEY) and mrsigner != le_hash:
                raise fail(
                    SgxErrorCode.INVALID_ATTRIBUTE,
                    f"EINITTOKEN_KEY requested by MRSIGNER {mrsigner}, but "
                    f"IA32_SGXLEPUBKEYHASH is {le_hash}",
                )
            # Step 11: masked attributes (flags and XFRM).
            if secs.attributes & sig.attribute_mask != sig.attributes & sig.attribute_mask:
                raise fail(
                    SgxErrorCode.INVALID_ATTRIBUTE,
                    f"SECS.ATTRIBUTES {_attrs(secs.attributes)} differ from SIGSTRUCT "
                    f"{_attrs(sig.attributes)} under mask {_attrs(sig.attribute_mask)}",
                )
            # Step 12: masked MISCSELECT.
            if secs.miscselect & sig.miscmask != sig.miscselect & sig.miscmask:
                raise fail(
                    SgxErrorCode.INVALID_ATTRIBUTE,
                    f"SECS.MISCSELECT {secs.miscselect:#x} differs from SIGSTRUCT "
                    f"{sig.miscselect:#x} under mask {sig.miscmask:#x}",
                )
            # Step 12 (newer SDM, ADR 0006): CET_ATTRIBUTES under CET_ATTRIBUTES_MASK. CET is not
            # emulated, so SECS.CET_ATTRIBUTES is 0 and a SIGSTRUCT demanding a CET bit fails.
            if sig.cet_attributes & sig.cet_attributes_mask:
                raise fail(
                    SgxErrorCode.INVALID_ATTRIBUTE,
                    f"SIGSTRUCT requires CET_ATTRIBUTES {sig.cet_attributes:#x} under mask "
                    f"{sig.cet_attributes_mask:#x}; this CPU has no CET",
                )
            self._check_token(secs, mrenclave, mrsigner, token)
            # Step 18: COMMIT.
            enclave.identity = EnclaveIdentity(
                attributes=Attributes(
                    secs.attributes.flags | AttributeFlags.INIT, secs.attributes.xfrm
                ),
                miscselect=secs.miscselect,
                mrenclave=mrenclave,
                mrsigner=mrsigner,
                isvprodid=sig.isvprodid,
                isvsvn=sig.isvsvn,
                configid=secs.configid,
                configsvn=secs.configsvn,
                isvfamilyid=sig.isvfamilyid,
                isvextprodid=sig.isvextprodid,
            )
            return EnclaveContext(self, ref)

    def _check_token(
        self,
        secs: Secs,
        mrenclave: Measurement,
        mrsigner: Measurement,
        token: EinitToken | bytes | None,
    ) -> None:
        """EINIT steps 13-17."""

        def fail(code: SgxErrorCode, detail: str) -> EnclaveInstructionError:
            return EnclaveInstructionError("EINIT", code, detail)

        parsed: EinitToken | None
        if token is None:
            parsed = None
        elif isinstance(token, EinitToken):
            parsed = token if token.valid else None
        else:
            if len(token) != EinitToken.SIZE:
                raise GeneralProtectionFault("EINIT", f"EINITTOKEN is {len(token)} bytes, not 304")
            valid_bit = token[0] & 1
            try:
                parsed = EinitToken.from_bytes(token)
            except MalformedStructureError as e:
                # Reserved space (or VALID's upper bits) set: only checked for a valid token.
                if valid_bit:
                    raise fail(SgxErrorCode.INVALID_EINITTOKEN, str(e)) from e
                parsed = None
            if parsed is not None and not parsed.valid:
                parsed = None
        le_hash = self._le_hash.value
        # Step 13: no valid token: the signer must be the one in the LE hash registers.
        if parsed is None:
            if mrsigner != le_hash:
                raise fail(
                    SgxErrorCode.INVALID_EINITTOKEN,
                    f"no valid EINITTOKEN and MRSIGNER {mrsigner} != "
                    f"IA32_SGXLEPUBKEYHASH {le_hash}",
                )
            return
        # Step 14: debug LE cannot launch production enclaves; (reserved: parsed above); CPUSVN.
        if parsed.masked_attributes_le.debug and not secs.attributes.debug:
            raise fail(
                SgxErrorCode.INVALID_EINITTOKEN,
                "a token from a debug launch enclave cannot launch a production enclave",
            )
        if cpusvn_beyond(parsed.cpusvn_le, self._fuses.cpusvn):
            raise fail(
                SgxErrorCode.INVALID_CPUSVN,
                f"token CPUSVNLE {parsed.cpusvn_le.hex()} is beyond the platform's "
                f"{self._fuses.cpusvn.hex()}",
            )
        # Step 15: the token's MAC under the EINITTOKEN key of the LE named by the registers.
        key = self._keys.derive(
            einittoken_key_dependencies(parsed, le_hash, owner_epoch=self._fuses.owner_epoch)
        )
        if not hmac.compare_digest(aes_cmac(key, parsed.mac_body()), parsed.mac):
            raise fail(
                SgxErrorCode.INVALID_EINITTOKEN,
                "token MAC does not verify under the EINITTOKEN key of the registered LE",
            )
        # Step 16.
        if parsed.mrenclave != mrenclave or parsed.mrsigner != mrsigner:
            raise fail(
                SgxErrorCode.INVALID_MEASUREMENT,
                f"token is for MRENCLAVE {parsed.mrenclave} / MRSIGNER {parsed.mrsigner}, "
                f"enclave is {mrenclave} / {mrsigner}",
            )
        # Step 17 (code UNVERIFIED; ADR 0004).
        if parsed.attributes != secs.attributes:
            raise fail(
                SgxErrorCode.INVALID_EINITTOKEN,
                f"token ATTRIBUTES {_attrs(parsed.attributes)} != SECS.ATTRIBUTES "
                f"{_attrs(secs.attributes)}",
            )

    # -- EREMOVE -------------------------------------------------------------------------------

    def eremove(self, ref: EnclaveRef, linaddr: int) -> None:
        """EREMOVE of the REG/TCS page at ``linaddr`` (resident or evicted)."""
        with self._lock:
            self._enclave(ref)
            if self._epc.page_info(ref.eid, linaddr) is None:
                raise PageFault(linaddr, PageFaultCode(0), "EREMOVE: no EPC page at this address")
            self._epc.remove_page(ref.eid, linaddr)

    def eremove_secs(self, ref: EnclaveRef) -> None:
        """EREMOVE of the SECS: SGX_CHILD_PRESENT while pages remain; frees the VA pages too."""
        with self._lock:
            enclave = self._enclave(ref)
            remaining = self._epc.usage(ref.eid)
            if remaining.resident or remaining.evicted:
                raise EnclaveInstructionError(
                    "EREMOVE",
                    SgxErrorCode.CHILD_PRESENT,
                    f"{remaining.resident + remaining.evicted} page(s) of the enclave remain",
                )
            self._epc.destroy_enclave(ref.eid)
            enclave.destroyed = True
            del self._enclaves[ref.eid]

    def destroy(self, ref: EnclaveRef) -> None:
        """Tear the enclave down: EREMOVE every page, then the SECS (what the kernel does)."""
        with self._lock:
            self._enclave(ref)
            for linaddr in self._epc.linear_addresses(ref.eid):
                self._epc.remove_page(ref.eid, linaddr)
            self.eremove_secs(ref)

    # -- EDBGRD / EDBGWR -----------------------------------------------------------------------

    def edbgrd(self, ref: EnclaveRef, linaddr: int, length: int) -> bytes:
        """EDBGRD: read a DEBUG enclave's memory from outside (ignores EPCM R/W/X)."""
        with self._lock:
            self._debuggable(ref, "EDBGRD")
            out = bytearray()
            for addr, start, end in self._span(ref, linaddr, length, "EDBGRD"):
                out += self._page_data(ref, addr, "EDBGRD")[start:end]
            return bytes(out)

    def edbgwr(self, ref: EnclaveRef, linaddr: int, data: bytes) -> None:
        """EDBGWR: write a DEBUG enclave's memory from outside; of a TCS only FLAGS."""
        with self._lock:
            self._debuggable(ref, "EDBGWR")
            spans = list(self._span(ref, linaddr, len(data), "EDBGWR", write=True))
            for addr, start, end in spans:
                info = self._epc.page_info(ref.eid, addr)
                if info is None:
                    raise PageFault(addr + start, PF_NOT_PRESENT_WRITE, "EDBGWR: no page")
                if info.page_type is PageType.TCS and not (
                    start in _TCS_FLAGS_FIELD and end - 1 in _TCS_FLAGS_FIELD
                ):
                    raise GeneralProtectionFault("EDBGWR", "only TCS.FLAGS of a TCS is writable")
            pos = 0
            for addr, start, end in spans:
                page = self._page_data(ref, addr, "EDBGWR")
                page[start:end] = data[pos : pos + end - start]
                pos += end - start

    # -- ENCLU (through EnclaveContext) -------------------------------------------------------

    def _identity(self, ref: EnclaveRef) -> EnclaveIdentity:
        identity = self._enclave(ref).identity
        if identity is None:  # pragma: no cover - contexts exist only after EINIT
            raise GeneralProtectionFault("ENCLU", "the enclave is not initialized")
        return identity

    def _ereport(self, ref: EnclaveRef, target: TargetInfo, report_data: bytes) -> Report:
        with self._lock:
            identity = self._identity(ref)
            if len(report_data) != 64:
                raise GeneralProtectionFault("EREPORT", "REPORTDATA is 64 bytes")
            cpusvn = self._fuses.cpusvn
            body = identity.report_body(cpusvn, bytes(report_data))
            key = self._keys.derive(
                ereport_key_dependencies(
                    target,
                    self._report_key_id,
                    owner_epoch=self._fuses.owner_epoch,
                    cpusvn=cpusvn,
                )
            )
            return Report(body, self._report_key_id, aes_cmac(key, body.to_bytes()))

    def _egetkey(self, ref: EnclaveRef, request: KeyRequest) -> bytes:
        with self._lock:
            identity = self._identity(ref)
            deps = egetkey_dependencies(
                request, identity, owner_epoch=self._fuses.owner_epoch, cpusvn=self._fuses.cpusvn
            )
            return self._keys.derive(deps)

    def _access(self, ref: EnclaveRef, linaddr: int, length: int, write: bytes | None) -> bytes:
        with self._lock:
            self._identity(ref)
            need = SecInfoFlags.W if write is not None else SecInfoFlags.R
            spans = list(self._span(ref, linaddr, length, "access", write=write is not None))
            for addr, start, _ in spans:  # all permission checks before any byte moves
                info = self._epc.page_info(ref.eid, addr)
                if info is None:
                    code = PF_NOT_PRESENT_WRITE if write is not None else PF_NOT_PRESENT_READ
                    raise PageFault(addr + start, code, "no EPC page at this address")
                if not info.permissions & need:
                    code = PF_EPCM_WRITE if write is not None else PF_EPCM_READ
                    raise PageFault(
                        addr + start,
                        code,
                        f"EPCM denies {'write' if write is not None else 'read'} "
                        f"({info.page_type.name} page, permissions {_perms(info.permissions)})",
                    )
            out = bytearray()
            pos = 0
            for addr, start, end in spans:
                page = self._page_data(ref, addr, "access")
                if write is None:
                    out += page[start:end]
                else:
                    page[start:end] = write[pos : pos + end - start]
                    pos += end - start
            return bytes(out)

    # -- helpers -------------------------------------------------------------------------------

    def _uninitialized(self, ref: EnclaveRef, leaf: str) -> _Enclave:
        enclave = self._enclave(ref)
        if enclave.identity is not None:
            raise GeneralProtectionFault(leaf, "the enclave is already initialized")
        if enclave.measurement_final:
            # Deviation (docs/platform-cpu.md): an EINIT attempt finalizes MRENCLAVE for good.
            raise GeneralProtectionFault(leaf, "an EINIT attempt already finalized MRENCLAVE")
        return enclave

    def _debuggable(self, ref: EnclaveRef, leaf: str) -> None:
        if not self._enclave(ref).debug:
            raise GeneralProtectionFault(leaf, "the enclave is not a DEBUG enclave")

    @staticmethod
    def _check_page_address(ref: EnclaveRef, linaddr: int, leaf: str) -> None:
        if linaddr % PAGE_SIZE:
            raise GeneralProtectionFault(leaf, f"{linaddr:#x} is not page aligned")
        if not ref.contains(linaddr, PAGE_SIZE):
            raise GeneralProtectionFault(
                leaf,
                f"{linaddr:#x} is outside ELRANGE [{ref.base_address:#x}, "
                f"{ref.base_address + ref.size:#x})",
            )

    def _span(
        self, ref: EnclaveRef, linaddr: int, length: int, what: str, *, write: bool = False
    ) -> Iterator[tuple[int, int, int]]:
        """(page address, start, end) pieces of ``[linaddr, linaddr+length)`` inside ELRANGE."""
        if length < 0:
            raise ValueError("negative length")
        if not ref.contains(linaddr, length):
            code = PF_NOT_PRESENT_WRITE if write else PF_NOT_PRESENT_READ
            raise PageFault(
                linaddr, code, f"{what}: [{linaddr:#x}, +{length:#x}) is outside ELRANGE"
            )
        pos, end = linaddr, linaddr + length
        while pos < end:
            page = pos - pos % PAGE_SIZE
            stop = min(end, page + PAGE_SIZE)
            yield page, pos - page, stop - page
            pos = stop

    def _page_data(self, ref: EnclaveRef, page_addr: int, what: str) -> bytearray:
        got = self._epc.page(ref.eid, page_addr)
        if got is None:
            raise PageFault(page_addr, PF_NOT_PRESENT_READ, f"{what}: no EPC page")
        return got[1]

    def __repr__(self) -> str:
        return f"SgxCpu(boot={self._boot_epoch}, {self._epc!r})"


class EnclaveContext:
    """Code inside an initialized enclave: EREPORT, EGETKEY, its own memory."""

    __slots__ = ("_cpu", "_ref")

    def __init__(self, cpu: SgxCpu, ref: EnclaveRef) -> None:
        self._cpu = cpu
        self._ref = ref

    @property
    def ref(self) -> EnclaveRef:
        return self._ref

    @property
    def identity(self) -> EnclaveIdentity:
        """This enclave's SECS identity (MRENCLAVE, MRSIGNER, ATTRIBUTES, ISV fields...)."""
        with self._cpu._lock:
            return self._cpu._identity(self._ref)

    def target_info(self) -> TargetInfo:
        """The TARGETINFO other enclaves use to target a REPORT at this enclave."""
        return self.identity.target_info()

    def ereport(self, target: TargetInfo, report_data: bytes = bytes(64)) -> Report:
        """EREPORT: this enclave's REPORT, MAC'd with ``target``'s report key."""
        return self._cpu._ereport(self._ref, target, report_data)

    def egetkey(self, request: KeyRequest | bytes) -> bytes:
        """EGETKEY: a 16-byte key per the §6.1 dependencies of ``request``.

        A 512-byte KEYREQUEST with reserved bits or bytes set is #GP, as in the SDM.
        """
        if isinstance(request, bytes):
            try:
                request = KeyRequest.from_bytes(request)
            except MalformedStructureError as e:
                raise GeneralProtectionFault("EGETKEY", str(e)) from e
        return self._cpu._egetkey(self._ref, request)

    def verify_report(self, report: Report) -> None:
        """Check a REPORT targeted at this enclave (SDK ``sgx_verify_report``); raises."""
        key = self.egetkey(KeyRequest(keyname=int(KeyName.REPORT), key_id=report.key_id))
        if not hmac.compare_digest(aes_cmac(key, report.mac_body()), report.mac):
            raise ReportVerificationError(
                "REPORT MAC does not verify: not targeted at this enclave on this platform boot"
            )

    def read(self, linaddr: int, length: int) -> bytes:
        """Read own memory; #PF (0x8005) where the EPCM lacks R."""
        return self._cpu._access(self._ref, linaddr, length, None)

    def write(self, linaddr: int, data: bytes) -> None:
        """Write own memory; #PF (0x8007) where the EPCM lacks W. All-or-nothing."""
        self._cpu._access(self._ref, linaddr, len(data), bytes(data))

    def __repr__(self) -> str:
        return f"EnclaveContext(eid={self._ref.eid}, boot={self._ref.boot_epoch})"


def _check_secs(secs: Secs) -> None:
    """ECREATE's #GP checks on the SECS (SDM ECREATE)."""

    def gp(reason: str) -> GeneralProtectionFault:
        return GeneralProtectionFault("ECREATE", reason)

    if secs.ssa_frame_size == 0:
        raise gp("SSAFRAMESIZE is 0")
    size, base = secs.size, secs.base_address
    if size < MIN_ENCLAVE_SIZE or size & (size - 1):
        raise gp(f"SIZE {size:#x} is not a power of two >= 8192")
    if base % size:
        raise gp(f"BASEADDR {base:#x} is not aligned to SIZE {size:#x}")
    flags, xfrm = secs.attributes.flags, secs.attributes.xfrm
    if flags & AttributeFlags.INIT:
        raise gp("ATTRIBUTES.INIT must be 0 (EINIT sets it)")
    if flags & ~SUPPORTED_ATTRIBUTE_FLAGS & U64_MAX:
        raise gp(f"ATTRIBUTES {flags:#x} has reserved or unsupported bits")
    if xfrm & XFRM_LEGACY != XFRM_LEGACY:
        raise gp(f"XFRM {xfrm:#x}: x87 and SSE (bits 0, 1) are mandatory")
    if xfrm & ~SUPPORTED_XFRM & U64_MAX:
        raise gp(f"XFRM {xfrm:#x} has unsupported bits")
    if xfrm & _AVX512 and (xfrm & _AVX512 != _AVX512 or not xfrm & Xfrm.AVX):
        raise gp(f"XFRM {xfrm:#x} is not a legal XCR0 value (AVX-512 needs all parts and AVX)")
    if secs.miscselect & ~SUPPORTED_MISCSELECT:
        raise gp(f"MISCSELECT {secs.miscselect:#x} has unsupported bits")
    if flags & AttributeFlags.MODE64BIT:
        if size > 1 << MAX_ENCLAVE_SIZE_LOG2_64:
            raise gp(f"SIZE {size:#x} exceeds the maximum enclave size")
    elif size > 1 << MAX_ENCLAVE_SIZE_LOG2_32 or base + size > 1 << 32:
        raise gp("a 32-bit enclave must lie below 4 GiB and within the maximum size")
    if not flags & AttributeFlags.KSS and (any(secs.configid) or secs.configsvn):
        raise gp("CONFIGID/CONFIGSVN need ATTRIBUTES.KSS")


def _tcs_as_added(page: bytes, secs: Secs) -> bytes:
    """A TCS as EADD stores it: reserved bytes checked, DBGOPTIN/CSSA/AEP/STATE cleared."""
    try:
        tcs = Tcs.from_bytes(page)
    except MalformedStructureError as e:
        raise GeneralProtectionFault("EADD", f"bad TCS: {e}") from e
    if not secs.attributes.has(AttributeFlags.MODE64BIT) and (
        tcs.fslimit & 0xFFF != 0xFFF or tcs.gslimit & 0xFFF != 0xFFF
    ):
        raise GeneralProtectionFault("EADD", "32-bit TCS needs FSLIMIT/GSLIMIT low 12 bits set")
    cleared = replace(tcs, flags=tcs.flags & ~int(TcsFlags.DBGOPTIN), cssa=0, aep=0, state=0)
    return cleared.to_bytes()


def _attrs(a: Attributes) -> str:
    return f"flags={a.flags:#x}/xfrm={a.xfrm:#x}"


def _perms(p: SecInfoFlags) -> str:
    pairs = (("R", SecInfoFlags.R), ("W", SecInfoFlags.W), ("X", SecInfoFlags.X))
    return "".join(c if p & f else "-" for c, f in pairs)
