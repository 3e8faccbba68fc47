"""The emulated SGX kernel driver: the ioctl state machine and error numbers of SGX-REFERENCE §1,
launch control in two modes, the provision gate and the load-policy hooks.

Invariants:

* State machine per enclave (§1.1): CREATE gives a CREATED enclave; ADD_PAGES and INIT only in
  CREATED (else ``EINVAL``); INIT success gives INITIALIZED; PROVISION in any state. A second
  ioctl on an enclave while one is in flight gets ``EBUSY``. Each ``create_enclave`` is a fresh
  open() of the device, so CREATE of an already created enclave cannot be expressed.
* Checks run in the kernel's order with the kernel's errno (§1.3): malformed arguments and
  SECINFO ``EINVAL``; an offset added twice ``EBUSY``; out of EPC ``ENOMEM``; an ECREATE, EADD or
  EEXTEND fault ``EIO``; INIT attributes outside the enclave's allowed mask ``EACCES``; the CPU
  rejecting EINIT ``EPERM`` with the SGX code attached.
* SECINFO permissions are each page's maximum permissions (TCS pages: R+W, as the kernel).
* Launch modes (ADR 0010). ``open``: as mainline, the driver writes the enclave's own MRSIGNER
  into the LE hash registers before EINIT (unless the owner locked them), so anything validly
  signed launches; EINITTOKEN_KEY is never allowed. ``token``: the registers hold the launch
  enclave's signer and are locked at boot; an enclave of that signer initializes without a
  token and may have EINITTOKEN_KEY; every other EINIT needs a token from the
  :class:`~sgx_platform.launch_authority.LaunchAuthority`, and fails closed without one.
  The authority is asked without holding any platform lock (it may call back into the
  platform, as the launch enclave does to derive its key).
* Load policy (ADR 0011): every page is judged by :mod:`sgx_platform.load_policy` before it is
  added; pages from :meth:`Driver.load_from_file` come from an image the platform opened itself;
  pages from :meth:`Driver.add_pages` are bytes from the wire.
* Enclaves live behind unguessable handles with leases (:mod:`sgx_platform.lease`); a destroyed,
  expired or reset enclave has returned every EPC page it held.
* Handles, keys and page contents are never logged. Denials are logged with their reason code
  and the MRSIGNER/MRENCLAVE in hex.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import NoReturn, TypeVar

from sgx_platform.arch.attributes import U64_MAX, AttributeFlags, Attributes
from sgx_platform.arch.codes import SgxErrorCode
from sgx_platform.arch.einittoken import EinitToken
from sgx_platform.arch.errors import MalformedStructureError
from sgx_platform.arch.keyrequest import KeyRequest
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.report import TargetInfo
from sgx_platform.arch.secinfo import PageType, SecInfo, SecInfoFlags
from sgx_platform.arch.secs import Secs
from sgx_platform.arch.sgxs import read_sgxs
from sgx_platform.arch.sigstruct import Sigstruct
from sgx_platform.config import LaunchMode
from sgx_platform.cpu import (
    SUPPORTED_ATTRIBUTE_FLAGS,
    SUPPORTED_MISCSELECT,
    SUPPORTED_XFRM,
    EnclaveContext,
    EnclaveRef,
    SgxCpu,
)
from sgx_platform.driver_errors import (
    DriverError,
    LaunchAuthorityUnavailableError,
    LaunchDeniedError,
    StaleHandleError,
    UnknownHandleError,
)
from sgx_platform.epc import PAGE_SIZE
from sgx_platform.errors import (
    EnclaveInstructionError,
    EpcExhaustedError,
    GeneralProtectionFault,
    LatchAlreadySetError,
    PageFault,
    PageFaultCode,
    RegisterLockedError,
    SealingParameterError,
    StaleEnclaveError,
    TcbUpdateError,
    UnsealError,
)
from sgx_platform.launch_authority import LaunchAuthority, TokenRequest
from sgx_platform.lease import LeaseRegistry
from sgx_platform.load_policy import (
    DEFAULT_MAX_IMAGE_BYTES,
    WIRE,
    LoadPolicyProvider,
    PageLoad,
    PageOrigin,
    check_pages,
    current_policy,
    open_image,
    permission_text,
)
from sgx_platform.seal import seal_data, unseal_data

log = logging.getLogger(__name__)

_T = TypeVar("_T")

SECS_SIZE = Secs.SIZE
SECINFO_SIZE = SecInfo.SIZE
SIGSTRUCT_SIZE = Sigstruct.SIZE

# K-ASM attribute classes (§1.6).
SGX_ATTR_UNPRIV_MASK = int(
    AttributeFlags.DEBUG | AttributeFlags.MODE64BIT | AttributeFlags.KSS | AttributeFlags.AEXNOTIFY
)
SGX_ATTR_RESERVED_MASK = (1 << 3) | (1 << 6) | (1 << 8) | (1 << 9) | (U64_MAX & ~((1 << 11) - 1))
#: K-DRV init: reserved = ~CPUID-supported | SGX_ATTR_RESERVED_MASK (INIT is reported supported).
ATTRIBUTES_RESERVED_MASK = (
    ~(SUPPORTED_ATTRIBUTE_FLAGS | int(AttributeFlags.INIT)) | SGX_ATTR_RESERVED_MASK
) & U64_MAX
MISC_RESERVED_MASK = (~SUPPORTED_MISCSELECT | ~1) & 0xFFFF_FFFF
XFRM_RESERVED_MASK = ~SUPPORTED_XFRM & U64_MAX

# Raw SIGSTRUCT fields the kernel reads before EINIT (§3.4 offsets).
_SIG_VENDOR = struct.Struct("<I")  # @16
_SIG_MISC = struct.Struct("<II")  # @900: MISCSELECT, MISCMASK
_SIG_ATTRS = struct.Struct("<QQQQ")  # @928: flags, xfrm, flags mask, xfrm mask
# K-IOCTL sgx_validate_secinfo: only bits 0-2 (R/W/X) and 8-15 (page type) may be set.
_SECINFO_ALLOWED_FLAGS = 0x7 | 0xFF00

#: How long DestroyEnclave waits for an ioctl in flight on the same enclave.
DESTROY_WAIT_SECONDS = 30.0


class EnclaveState(Enum):
    CREATED = "created"
    INITIALIZED = "initialized"


def _event(level: int, event: str, **fields: object) -> None:
    """A structured log record: ``event k=v ...`` with the fields also in ``record.fields``."""
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    log.log(level, "%s %s", event, text, extra={"event": event, "fields": dict(fields)})


@dataclass(eq=False)
class DriverEnclave:
    """The driver's state of one enclave (``struct sgx_encl``)."""

    ref: EnclaveRef
    secs: Secs
    state: EnclaveState = EnclaveState.CREATED
    #: ``encl->attributes_mask``: UNPRIV, plus PROVISIONKEY after a grant.
    attributes_mask: int = SGX_ATTR_UNPRIV_MASK
    #: ``vm_max_prot_bits`` per page offset.
    max_permissions: dict[int, SecInfoFlags] = field(default_factory=dict)
    context: EnclaveContext | None = None
    mrenclave: Measurement | None = None
    mrsigner: Measurement | None = None
    image_sha256: bytes | None = None
    enclave_id: str = ""
    destroyed: bool = False
    busy: threading.Lock = field(default_factory=threading.Lock)

    @property
    def debug(self) -> bool:
        return self.secs.attributes.debug


@dataclass(frozen=True)
class CreatedEnclave:
    handle: bytes
    enclave_id: str
    lease_seconds: float


@dataclass(frozen=True)
class LoadedEnclave:
    handle: bytes
    enclave_id: str
    lease_seconds: float
    state: EnclaveState
    image_sha256: bytes
    page_count: int
    mrenclave: Measurement | None
    mrsigner: Measurement | None


@dataclass(frozen=True)
class PlatformInfo:
    cpusvn: bytes
    launch_mode: LaunchMode
    le_pubkey_hash: Measurement
    le_pubkey_hash_locked: bool
    launch_policy_latch: bytes | None
    boot_epoch: bytes
    epc_pages_total: int
    epc_pages_free: int
    epc_pages_evicted: int
    eviction_enabled: bool
    enclave_count: int
    lease_seconds: float


@dataclass(frozen=True)
class _Page:
    offset: int
    data: bytes
    secinfo: SecInfo
    measured: bool


def _boot_epoch_bytes(boot: int) -> bytes:
    return boot.to_bytes(8, "little")


class Driver:
    """The driver on top of one :class:`SgxCpu`; every public method is one driver call."""

    def __init__(
        self,
        cpu: SgxCpu,
        *,
        policy_provider: LoadPolicyProvider,
        launch_mode: LaunchMode = LaunchMode.OPEN,
        le_pubkey_hash: Measurement | None = None,
        launch_authority: LaunchAuthority | None = None,
        lease_seconds: float = 60.0,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if launch_mode is LaunchMode.TOKEN and le_pubkey_hash is None:
            raise ValueError("token mode needs the launch enclave signer's hash")
        self._cpu = cpu
        self._policy_provider = policy_provider
        self._launch_mode = launch_mode
        self._le_pubkey_hash = le_pubkey_hash
        self._authority = launch_authority
        self._max_image_bytes = max_image_bytes
        #: Guards reset against everything else (reset takes it exclusively in effect).
        self._lock = threading.RLock()
        #: Serializes "write LE registers, then EINIT" (the kernel disables preemption).
        self._einit_lock = threading.Lock()
        self._registry: LeaseRegistry[DriverEnclave] = LeaseRegistry(
            _boot_epoch_bytes(cpu.boot_epoch), lease_seconds, clock=clock
        )
        self._apply_boot_configuration()

    # -- configuration and platform state -------------------------------------------------------

    @property
    def cpu(self) -> SgxCpu:
        return self._cpu

    @property
    def launch_mode(self) -> LaunchMode:
        return self._launch_mode

    @property
    def lease_seconds(self) -> float:
        return self._registry.lease_seconds

    def set_launch_authority(self, authority: LaunchAuthority | None) -> None:
        self._authority = authority

    def _apply_boot_configuration(self) -> None:
        """At boot and after every reset: token mode writes and locks the LE registers."""
        if self._launch_mode is LaunchMode.TOKEN:
            assert self._le_pubkey_hash is not None
            self._cpu.le_pubkeyhash.write(self._le_pubkey_hash)
            self._cpu.le_pubkeyhash.lock()
            _event(
                logging.INFO,
                "le_registers_locked",
                le_pubkey_hash=self._le_pubkey_hash.hex(),
                boot=self._cpu.boot_epoch,
            )

    def info(self) -> PlatformInfo:
        with self._lock:
            cpu = self._cpu
            epc = cpu.epc
            evicted = 0
            for ref in cpu.enclaves():
                evicted += cpu.epc_usage(ref).evicted
            return PlatformInfo(
                cpusvn=cpu.cpusvn,
                launch_mode=self._launch_mode,
                le_pubkey_hash=cpu.le_pubkeyhash.value,
                le_pubkey_hash_locked=cpu.le_pubkeyhash.locked,
                launch_policy_latch=cpu.launch_policy_latch.value,
                boot_epoch=_boot_epoch_bytes(cpu.boot_epoch),
                epc_pages_total=epc.capacity,
                epc_pages_free=epc.free_pages,
                epc_pages_evicted=evicted,
                eviction_enabled=epc.eviction,
                enclave_count=len(self._registry),
                lease_seconds=self._registry.lease_seconds,
            )

    # -- handles -------------------------------------------------------------------------------

    def _lookup(self, handle: bytes) -> DriverEnclave:
        enclave = self._registry.get(handle)
        if enclave.destroyed:
            raise UnknownHandleError()
        return enclave

    @contextmanager
    def _ioctl(self, handle: bytes) -> Iterator[DriverEnclave]:
        """One ioctl on the enclave: EBUSY if another is in flight (``SGX_ENCL_IOCTL``)."""
        enclave = self._lookup(handle)
        if not enclave.busy.acquire(blocking=False):
            raise DriverError(
                errno.EBUSY,
                "another call on this enclave is in progress",
                reason="ENCLAVE_BUSY",
                hint="wait for it to finish, then retry",
            )
        try:
            if enclave.destroyed:
                raise UnknownHandleError()
            yield enclave
        finally:
            enclave.busy.release()

    def _context(self, handle: bytes) -> tuple[DriverEnclave, EnclaveContext]:
        enclave = self._lookup(handle)
        if enclave.context is None:
            raise _wrong_state("the enclave is not initialized yet (call InitEnclave first)")
        return enclave, enclave.context

    # -- SGX_IOC_ENCLAVE_CREATE ----------------------------------------------------------------

    def create_enclave(self, secs: bytes) -> CreatedEnclave:
        """CREATE (§1.3): SECS length, SIZE a power of two, EPC room, ECREATE (#GP → EIO)."""
        if len(secs) != SECS_SIZE:
            raise DriverError(
                errno.EINVAL,
                f"the SECS is {len(secs)} bytes; it must be exactly {SECS_SIZE}",
                reason="MALFORMED_SECS",
            )
        size = int.from_bytes(secs[0:8], "little")
        if size == 0 or size & (size - 1):
            raise DriverError(
                errno.EINVAL,
                f"SECS.SIZE {size:#x} is not a power of two",
                reason="SECS_SIZE",
                hint="SIZE must be a power of two of at least 8192 bytes",
            )
        self.reap_expired()
        with self._lock:
            try:
                ref = self._cpu.ecreate(bytes(secs))
            except EpcExhaustedError as e:
                raise _enomem(e) from e
            except GeneralProtectionFault as e:
                raise DriverError(
                    errno.EIO, f"ECREATE faulted: {e.reason}", reason="ECREATE_FAULT",
                    hint="fix the SECS (size, base address, attributes, XFRM, reserved bytes)",
                ) from e
            parsed = Secs.from_bytes(secs)  # ECREATE accepted it, so it parses
            enclave = DriverEnclave(ref=ref, secs=parsed)
            handle, enclave_id = self._registry.add(enclave)
            enclave.enclave_id = enclave_id
        _event(logging.INFO, "enclave_created", enclave_id=enclave_id, size=hex(parsed.size),
               attributes=hex(parsed.attributes.flags))
        return CreatedEnclave(handle, enclave_id, self._registry.lease_seconds)

    # -- SGX_IOC_ENCLAVE_ADD_PAGES -------------------------------------------------------------

    def add_pages(
        self, handle: bytes, offset: int, data: bytes, secinfo: bytes, measure: bool
    ) -> int:
        """ADD_PAGES of bytes from the wire; returns the bytes added (the ioctl's count)."""
        with self._ioctl(handle) as enclave:
            _require_created(enclave)
            length = len(data)
            _validate_offset_length(enclave, offset, length)
            info = _validate_secinfo(secinfo)
            pages = [
                _Page(offset + i, bytes(data[i : i + PAGE_SIZE]), info, measure)
                for i in range(0, length, PAGE_SIZE)
            ]
            self._judge(enclave.enclave_id, pages, WIRE)
            return self._add(enclave, pages)

    def _judge(self, enclave_id: str, pages: Sequence[_Page], origin: PageOrigin) -> None:
        policy = current_policy(self._policy_provider)
        try:
            check_pages(policy, (PageLoad(p.offset, p.secinfo, p.measured) for p in pages), origin)
        except DriverError as e:
            _event(
                logging.WARNING,
                "load_denied",
                enclave_id=enclave_id,
                reason=e.reason,
                rule=e.rule,
                origin=origin.describe(),
            )
            raise

    def _add(self, enclave: DriverEnclave, pages: Sequence[_Page]) -> int:
        """The per-page loop of ADD_PAGES; a failure leaves the pages before it added."""
        count = 0
        base = enclave.ref.base_address
        for page in pages:
            if page.offset in enclave.max_permissions:
                raise DriverError(
                    errno.EBUSY,
                    f"a page is already added at offset {page.offset:#x}",
                    reason="PAGE_ALREADY_ADDED",
                    details={"count": str(count)},
                )
            try:
                self._cpu.eadd(enclave.ref, base + page.offset, page.data, page.secinfo)
            except EpcExhaustedError as e:
                raise _enomem(e, count) from e
            except (GeneralProtectionFault, PageFault, EnclaveInstructionError) as e:
                raise DriverError(
                    errno.EIO, f"EADD at offset {page.offset:#x} failed: {e}",
                    reason="EADD_FAULT", details={"count": str(count)},
                ) from e
            except StaleEnclaveError as e:
                raise self._stale(enclave) from e
            # vm_max_prot_bits: SECINFO R/W/X; a TCS is mappable R+W (K-ENCL).
            enclave.max_permissions[page.offset] = (
                SecInfoFlags.R | SecInfoFlags.W
                if page.secinfo.page_type is PageType.TCS
                else page.secinfo.permissions
            )
            if page.measured:
                try:
                    self._cpu.eextend_page(enclave.ref, base + page.offset)
                except (GeneralProtectionFault, PageFault, EnclaveInstructionError) as e:
                    raise DriverError(
                        errno.EIO, f"EEXTEND at offset {page.offset:#x} failed: {e}",
                        reason="EEXTEND_FAULT", details={"count": str(count)},
                    ) from e
            count += PAGE_SIZE
        return count

    # -- SGX_IOC_ENCLAVE_PROVISION -------------------------------------------------------------

    def grant_provision_key(self, handle: bytes) -> None:
        """PROVISION: allow the PROVISIONKEY attribute (any state; the socket is the gate)."""
        with self._ioctl(handle) as enclave:
            enclave.attributes_mask |= int(AttributeFlags.PROVISIONKEY)
        _event(logging.INFO, "provision_key_granted", enclave_id=enclave.enclave_id)

    # -- SGX_IOC_ENCLAVE_INIT ------------------------------------------------------------------

    def init_enclave(self, handle: bytes, sigstruct: bytes) -> tuple[Measurement, Measurement]:
        """INIT (§1.3) with launch control (ADR 0010); returns (MRENCLAVE, MRSIGNER)."""
        with self._ioctl(handle) as enclave:
            return self._init(enclave, sigstruct)

    def _init(self, enclave: DriverEnclave, sigstruct: bytes) -> tuple[Measurement, Measurement]:
        _require_created(enclave)
        if len(sigstruct) != SIGSTRUCT_SIZE:
            raise DriverError(
                errno.EINVAL,
                f"the SIGSTRUCT is {len(sigstruct)} bytes; it must be exactly {SIGSTRUCT_SIZE}",
                reason="MALFORMED_SIGSTRUCT",
            )
        sigstruct = bytes(sigstruct)
        (vendor,) = _SIG_VENDOR.unpack_from(sigstruct, 16)
        if vendor not in (0, 0x8086):
            raise DriverError(
                errno.EINVAL, f"SIGSTRUCT.VENDOR {vendor:#x} is neither 0 nor 0x8086",
                reason="SIGSTRUCT_VENDOR",
            )
        mrsigner = _mrsigner_of(sigstruct)
        mrenclave = Measurement(sigstruct[960:992])
        registers = self._cpu.le_pubkeyhash
        token_mode = self._launch_mode is LaunchMode.TOKEN
        is_le = token_mode and registers.locked and registers.value == mrsigner
        mask = enclave.attributes_mask | (int(AttributeFlags.EINITTOKEN_KEY) if is_le else 0)
        flags = enclave.secs.attributes.flags
        if flags & ~mask:
            self._deny_attributes(enclave, flags & ~mask, mrsigner, mrenclave)
        (sig_flags, sig_xfrm, flags_mask, xfrm_mask) = _SIG_ATTRS.unpack_from(sigstruct, 928)
        (miscselect, miscmask) = _SIG_MISC.unpack_from(sigstruct, 900)
        for what, bits in (
            ("ATTRIBUTES", sig_flags & flags_mask & ATTRIBUTES_RESERVED_MASK),
            ("XFRM", sig_xfrm & xfrm_mask & XFRM_RESERVED_MASK),
            ("MISCSELECT", miscselect & miscmask & MISC_RESERVED_MASK),
        ):
            if bits:
                raise DriverError(
                    errno.EINVAL,
                    f"SIGSTRUCT {what} requires reserved or unsupported bits {bits:#x}",
                    reason="SIGSTRUCT_RESERVED_BITS",
                )
        token: EinitToken | None = None
        if token_mode and registers.value != mrsigner:
            token = self._token_for(enclave, sigstruct, mrsigner, mrenclave)
        with self._einit_lock:
            if not token_mode and not registers.locked:
                registers.write(mrsigner)  # sgx_update_lepubkeyhash before EINIT
            try:
                context = self._cpu.einit(enclave.ref, sigstruct, token)
            except EnclaveInstructionError as e:
                _event(
                    logging.WARNING, "einit_rejected", enclave_id=enclave.enclave_id,
                    reason=f"SGX_{e.code.name}", mrsigner=mrsigner.hex(),
                    mrenclave=mrenclave.hex(),
                )
                raise DriverError(
                    errno.EPERM,
                    f"the CPU refused EINIT: SGX_{e.code.name} ({int(e.code)}): {e.detail}",
                    sgx_code=e.code,
                    hint=_EINIT_HINTS.get(e.code, ""),
                ) from e
            except (GeneralProtectionFault, PageFault) as e:
                raise DriverError(errno.EIO, f"EINIT faulted: {e}", reason="EINIT_FAULT") from e
            except StaleEnclaveError as e:
                raise self._stale(enclave) from e
        identity = context.identity
        enclave.context = context
        enclave.mrenclave = identity.mrenclave
        enclave.mrsigner = identity.mrsigner
        enclave.state = EnclaveState.INITIALIZED
        _event(
            logging.INFO, "enclave_initialized", enclave_id=enclave.enclave_id,
            mrenclave=identity.mrenclave.hex(), mrsigner=identity.mrsigner.hex(),
            debug=enclave.debug, token=token is not None,
        )
        return identity.mrenclave, identity.mrsigner

    def _deny_attributes(
        self, enclave: DriverEnclave, missing: int, mrsigner: Measurement, mrenclave: Measurement
    ) -> NoReturn:
        if missing & AttributeFlags.PROVISIONKEY:
            reason = "PROVISIONKEY_NOT_GRANTED"
            message = "the enclave asks for PROVISIONKEY, which was not granted"
            hint = "grant it through the provision socket (GrantProvisionKey) before InitEnclave"
        elif missing & AttributeFlags.EINITTOKEN_KEY:
            reason = "EINITTOKEN_KEY_NOT_ALLOWED"
            if self._launch_mode is LaunchMode.OPEN:
                message = "EINITTOKEN_KEY is never allowed in open launch mode"
                hint = "only a launch enclave in token mode may have EINITTOKEN_KEY"
            else:
                message = (
                    f"EINITTOKEN_KEY is allowed only to the signer in the locked LE registers "
                    f"({self._cpu.le_pubkeyhash.value.hex()}), not {mrsigner.hex()}"
                )
                hint = "sign the launch enclave with the key whose hash the registers hold"
        else:
            reason = "ATTRIBUTES_NOT_ALLOWED"
            message = f"the enclave asks for attributes {missing:#x} the driver does not allow"
            hint = ""
        _event(logging.WARNING, "init_denied", enclave_id=enclave.enclave_id, reason=reason,
               mrsigner=mrsigner.hex(), mrenclave=mrenclave.hex())
        raise DriverError(errno.EACCES, message, reason=reason, rule="attributes", hint=hint)

    def _token_for(
        self, enclave: DriverEnclave, sigstruct: bytes, mrsigner: Measurement,
        mrenclave: Measurement,
    ) -> EinitToken:
        """Ask the launch authority (no platform lock held); fail closed."""
        authority = self._authority
        fields = {"enclave_id": enclave.enclave_id, "mrsigner": mrsigner.hex(),
                  "mrenclave": mrenclave.hex()}
        if authority is None:
            _event(logging.WARNING, "launch_failed_closed", reason="NO_LAUNCH_AUTHORITY",
                   **fields)
            raise LaunchAuthorityUnavailableError(
                "token launch mode needs a launch authority and none is connected; the launch "
                "fails closed"
            )
        request = TokenRequest(
            sigstruct, enclave.secs.to_bytes(), mrsigner, mrenclave,
            _boot_epoch_bytes(self._cpu.boot_epoch),
        )
        try:
            token = authority.issue_token(request)
        except LaunchDeniedError as e:
            _event(logging.WARNING, "launch_denied", reason=e.reason, rule=e.rule, **fields)
            raise
        except LaunchAuthorityUnavailableError as e:
            _event(logging.WARNING, "launch_failed_closed", reason=e.reason, **fields)
            raise
        except Exception as e:  # any other failure: no answer, fail closed
            _event(logging.WARNING, "launch_failed_closed",
                   reason="LAUNCH_AUTHORITY_UNAVAILABLE", error=type(e).__name__, **fields)
            raise LaunchAuthorityUnavailableError(
                f"the launch authority did not answer ({type(e).__name__}); the launch fails "
                "closed"
            ) from e
        if not isinstance(token, EinitToken):
            raise LaunchAuthorityUnavailableError(
                "the launch authority answered without a token; the launch fails closed"
            )
        return token

    # -- load from file (the LSM question) ----------------------------------------------------

    def load_from_file(
        self,
        path: str,
        sigstruct: bytes,
        *,
        debug: bool = False,
        provision_key: bool = False,
        defer_init: bool = False,
    ) -> LoadedEnclave:
        """CREATE + ADD_PAGES + INIT from an SGXS image the platform opens itself.

        The SECS comes from the image (SIZE, SSAFRAMESIZE) and the SIGSTRUCT (ATTRIBUTES with
        DEBUG as asked, XFRM, MISCSELECT). With PROVISIONKEY in the SECS, INIT is deferred: the
        caller grants the key through the provision socket, then calls :meth:`init_enclave`.
        A failure after CREATE destroys the enclave again.
        """
        policy = current_policy(self._policy_provider)
        image_file = open_image(policy, path, self._max_image_bytes)
        try:
            image = read_sgxs(image_file.data)
        except MalformedStructureError as e:
            raise DriverError(
                errno.EINVAL, f"{image_file.path} is not a valid SGXS image: {e}",
                reason="IMAGE_MALFORMED",
            ) from e
        if len(sigstruct) != SIGSTRUCT_SIZE:
            raise DriverError(
                errno.EINVAL,
                f"the SIGSTRUCT is {len(sigstruct)} bytes; it must be exactly {SIGSTRUCT_SIZE}",
                reason="MALFORMED_SIGSTRUCT",
            )
        origin = PageOrigin(image_file)
        pages = [_Page(p.offset, p.data, p.secinfo, p.measured) for p in image.pages]
        self._judge("-", pages, origin)
        (sig_flags, sig_xfrm, _, _) = _SIG_ATTRS.unpack_from(sigstruct, 928)
        (miscselect, _) = _SIG_MISC.unpack_from(sigstruct, 900)
        flags = sig_flags & ~int(AttributeFlags.INIT | AttributeFlags.DEBUG)
        flags |= int(AttributeFlags.DEBUG) if debug else 0
        flags |= int(AttributeFlags.PROVISIONKEY) if provision_key else 0
        try:
            secs = Secs(
                size=image.size,
                base_address=image.size,
                ssa_frame_size=image.ssa_frame_size,
                miscselect=miscselect,
                attributes=Attributes(flags, sig_xfrm),
            )
        except MalformedStructureError as e:  # pragma: no cover - fields are range-checked
            raise DriverError(errno.EINVAL, str(e), reason="MALFORMED_SECS") from e
        created = self.create_enclave(secs.to_bytes())
        try:
            with self._ioctl(created.handle) as enclave:
                enclave.image_sha256 = image_file.sha256
                self._add(enclave, pages)
                deferred = defer_init or bool(flags & AttributeFlags.PROVISIONKEY)
                if not deferred:
                    self._init(enclave, sigstruct)
        except BaseException:
            self._destroy_quietly(created.handle)
            raise
        _event(logging.INFO, "enclave_loaded", enclave_id=created.enclave_id,
               image=str(image_file.path), sha256=image_file.sha256_hex, pages=len(pages),
               state=enclave.state.value)
        return LoadedEnclave(
            handle=created.handle,
            enclave_id=created.enclave_id,
            lease_seconds=created.lease_seconds,
            state=enclave.state,
            image_sha256=image_file.sha256,
            page_count=len(pages),
            mrenclave=enclave.mrenclave,
            mrsigner=enclave.mrsigner,
        )

    # -- lifetime ------------------------------------------------------------------------------

    def renew_lease(self, handle: bytes) -> float:
        return self._registry.renew(handle)

    def destroy(self, handle: bytes) -> int:
        """Destroy the enclave (EREMOVE every page and the SECS); returns EPC pages freed."""
        enclave = self._lookup(handle)
        if not enclave.busy.acquire(timeout=DESTROY_WAIT_SECONDS):
            raise DriverError(errno.EBUSY, "a call on this enclave does not finish",
                              reason="ENCLAVE_BUSY")
        try:
            self._registry.remove(handle)
            return self._teardown(enclave, "destroyed")
        finally:
            enclave.busy.release()

    def _destroy_quietly(self, handle: bytes) -> None:
        try:
            enclave = self._registry.remove(handle)
        except DriverError:
            return
        self._teardown(enclave, "destroyed")

    def _teardown(self, enclave: DriverEnclave, why: str) -> int:
        with self._lock:
            if enclave.destroyed:
                return 0
            enclave.destroyed = True
            enclave.context = None
            try:
                usage = self._cpu.epc_usage(enclave.ref)
                self._cpu.destroy(enclave.ref)
            except StaleEnclaveError:
                return 0
        _event(logging.INFO, "enclave_" + why, enclave_id=enclave.enclave_id,
               pages_freed=usage.total_resident)
        return usage.total_resident

    def reap_expired(self) -> int:
        """Destroy every enclave whose lease ended; returns how many."""
        gone = self._registry.expired()
        for enclave in gone:
            with enclave.busy:
                self._teardown(enclave, "expired")
        return len(gone)

    # -- inside the enclave (the handle holder acts as enclave code) -------------------------

    def _enclu(self, handle: bytes, leaf: str, op: Callable[[EnclaveContext], _T]) -> _T:
        enclave, context = self._context(handle)
        try:
            return op(context)
        except StaleEnclaveError as e:
            raise self._stale(enclave) from e
        except PageFault as e:
            raise _page_fault(enclave, e) from e
        except EnclaveInstructionError as e:
            raise _enclu_error(leaf, e) from e
        except GeneralProtectionFault as e:
            raise DriverError(errno.EINVAL, f"{leaf} faulted: {e.reason}",
                              reason=f"{leaf}_FAULT") from e
        except EpcExhaustedError as e:
            raise _enomem(e) from e

    def read_memory(self, handle: bytes, offset: int, length: int) -> bytes:
        enclave = self._lookup(handle)
        _check_range(enclave, offset, length)
        base = enclave.ref.base_address
        return self._enclu(handle, "READ", lambda c: c.read(base + offset, length))

    def write_memory(self, handle: bytes, offset: int, data: bytes) -> None:
        enclave = self._lookup(handle)
        _check_range(enclave, offset, len(data))
        base = enclave.ref.base_address
        self._enclu(handle, "WRITE", lambda c: c.write(base + offset, bytes(data)))

    def create_report(self, handle: bytes, target_info: bytes, report_data: bytes) -> bytes:
        """EREPORT; an empty ``target_info`` targets the enclave itself."""
        if len(report_data) not in (0, 64):
            raise DriverError(errno.EINVAL, "REPORTDATA is 64 bytes", reason="MALFORMED_REPORTDATA")
        data = bytes(report_data) or bytes(64)
        if target_info:
            target = _parse(TargetInfo.from_bytes, target_info, "TARGETINFO")
            return self._enclu(handle, "EREPORT", lambda c: c.ereport(target, data).to_bytes())
        return self._enclu(
            handle, "EREPORT", lambda c: c.ereport(c.target_info(), data).to_bytes()
        )

    def get_key(self, handle: bytes, key_request: bytes) -> bytes:
        request = _parse(KeyRequest.from_bytes, key_request, "KEYREQUEST")
        return self._enclu(handle, "EGETKEY", lambda c: c.egetkey(request))

    def seal(self, handle: bytes, plaintext: bytes, additional: bytes, policy: int | None) -> bytes:
        def op(c: EnclaveContext) -> bytes:
            try:
                return seal_data(c, bytes(plaintext), bytes(additional), policy=policy)
            except SealingParameterError as e:
                raise DriverError(errno.EINVAL, str(e), reason="SEAL_PARAMETER") from e

        return self._enclu(handle, "SEAL", op)

    def unseal(self, handle: bytes, sealed: bytes) -> tuple[bytes, bytes]:
        def op(c: EnclaveContext) -> tuple[bytes, bytes]:
            try:
                opened = unseal_data(c, bytes(sealed))
            except MalformedStructureError as e:
                raise DriverError(errno.EINVAL, f"not sealed data: {e}",
                                  reason="MALFORMED_SEALED_DATA") from e
            except UnsealError as e:
                raise DriverError(
                    errno.EBADMSG, str(e), reason="UNSEAL_FAILED",
                    hint="unseal in the enclave (or signer) that sealed it, on the same "
                    "platform and owner epoch",
                ) from e
            return opened.plaintext, opened.additional_data

        return self._enclu(handle, "UNSEAL", op)

    # -- EDBGRD / EDBGWR (from outside) -------------------------------------------------------

    def _debug_enclave(self, handle: bytes, offset: int, length: int) -> DriverEnclave:
        enclave = self._lookup(handle)
        if not enclave.debug:
            raise DriverError(
                errno.EFAULT,
                "the enclave is not a debug enclave; its memory cannot be read or written from "
                "outside",
                reason="NOT_DEBUGGABLE",
                hint="launch it with --debug (and a SIGSTRUCT that allows DEBUG)",
            )
        _check_range(enclave, offset, length)
        return enclave

    def debug_read(self, handle: bytes, offset: int, length: int) -> bytes:
        enclave = self._debug_enclave(handle, offset, length)
        return self._encls(enclave, "EDBGRD",
                           lambda: self._cpu.edbgrd(enclave.ref,
                                                    enclave.ref.base_address + offset, length))

    def debug_write(self, handle: bytes, offset: int, data: bytes) -> None:
        enclave = self._debug_enclave(handle, offset, len(data))
        self._encls(enclave, "EDBGWR",
                    lambda: self._cpu.edbgwr(enclave.ref, enclave.ref.base_address + offset,
                                             bytes(data)))

    def _encls(self, enclave: DriverEnclave, leaf: str, op: Callable[[], _T]) -> _T:
        try:
            return op()
        except StaleEnclaveError as e:
            raise self._stale(enclave) from e
        except PageFault as e:
            raise _page_fault(enclave, e) from e
        except GeneralProtectionFault as e:
            raise DriverError(errno.EFAULT, f"{leaf} faulted: {e.reason}",
                              reason=f"{leaf}_FAULT") from e
        except EnclaveInstructionError as e:
            raise DriverError(errno.EIO, str(e), sgx_code=e.code) from e

    # -- owner operations ----------------------------------------------------------------------

    def reset(self) -> tuple[bytes, int]:
        """Emulated reboot: enclaves gone, lock and latch cleared, boot configuration again."""
        with self._lock, self._einit_lock:
            gone = self._registry.values()
            for enclave in gone:
                enclave.destroyed = True
                enclave.context = None
            self._cpu.reset()
            epoch = _boot_epoch_bytes(self._cpu.boot_epoch)
            self._registry.new_boot(epoch)
            self._apply_boot_configuration()
        _event(logging.WARNING, "platform_reset", boot=self._cpu.boot_epoch,
               enclaves_destroyed=len(gone))
        return epoch, len(gone)

    def update_tcb(self, cpusvn: bytes | None) -> bytes:
        if cpusvn is not None and len(cpusvn) != 16:
            raise DriverError(errno.EINVAL, "CPUSVN is 16 bytes", reason="MALFORMED_CPUSVN")
        try:
            new = self._cpu.update_tcb(cpusvn)
        except TcbUpdateError as e:
            raise DriverError(errno.EINVAL, str(e), reason="TCB_NOT_RAISED",
                              hint="a TCB update only raises CPUSVN") from e
        _event(logging.WARNING, "tcb_updated", cpusvn=new.hex())
        return new

    def set_owner_epoch(self, value: bytes) -> None:
        if len(value) != 16:
            raise DriverError(errno.EINVAL, "OWNEREPOCH is 16 bytes",
                              reason="MALFORMED_OWNER_EPOCH")
        self._cpu.set_owner_epoch(bytes(value))
        _event(logging.WARNING, "owner_epoch_set")

    def set_le_pubkey_hash(self, value: bytes) -> None:
        if len(value) != 32:
            raise DriverError(errno.EINVAL, "IA32_SGXLEPUBKEYHASH is 32 bytes",
                              reason="MALFORMED_LE_PUBKEY_HASH")
        with self._einit_lock:
            try:
                self._cpu.le_pubkeyhash.write(Measurement(bytes(value)))
            except RegisterLockedError as e:
                raise DriverError(errno.EPERM, str(e), reason="REGISTERS_LOCKED",
                                  hint="the lock holds until the platform is reset") from e
        _event(logging.WARNING, "le_registers_written", le_pubkey_hash=bytes(value).hex())

    def lock_le_registers(self) -> Measurement:
        with self._einit_lock:
            self._cpu.le_pubkeyhash.lock()
            value = self._cpu.le_pubkeyhash.value
        _event(logging.WARNING, "le_registers_locked", le_pubkey_hash=value.hex())
        return value

    def latch_launch_policy(self, digest: bytes) -> None:
        if len(digest) != 32:
            raise DriverError(errno.EINVAL, "the launch-policy digest is 32 bytes",
                              reason="MALFORMED_DIGEST")
        try:
            self._cpu.launch_policy_latch.latch(bytes(digest))
        except LatchAlreadySetError as e:
            raise DriverError(errno.EPERM, str(e), reason="LATCH_SET",
                              hint="the latch holds until the platform is reset") from e
        _event(logging.WARNING, "launch_policy_latched", digest=bytes(digest).hex())

    # -- helpers -------------------------------------------------------------------------------

    def _stale(self, enclave: DriverEnclave) -> DriverError:
        if enclave.ref.boot_epoch != self._cpu.boot_epoch:
            return StaleHandleError()
        return UnknownHandleError("the enclave was destroyed while the call ran")


def _mrsigner_of(sigstruct: bytes) -> Measurement:
    """MRSIGNER = SHA-256 of the 384 MODULUS bytes as stored (§3.4; K-IOCTL before EINIT)."""
    return Measurement(hashlib.sha256(sigstruct[128:512]).digest())


_EINIT_HINTS = {
    SgxErrorCode.INVALID_MEASUREMENT: "the pages added do not match SIGSTRUCT.ENCLAVEHASH; "
    "sign the image you load",
    SgxErrorCode.INVALID_SIGNATURE: "the SIGSTRUCT signature does not verify; sign it again",
    SgxErrorCode.INVALID_SIG_STRUCT: "the SIGSTRUCT is malformed (header, vendor, exponent, "
    "reserved fields)",
    SgxErrorCode.INVALID_ATTRIBUTE: "the SECS attributes do not match the SIGSTRUCT's under its "
    "mask (e.g. --debug for an enclave signed --no-debug)",
    SgxErrorCode.INVALID_EINITTOKEN: "no valid launch token for this enclave",
    SgxErrorCode.INVALID_CPUSVN: "the launch token is from a newer CPUSVN",
}


def _wrong_state(message: str) -> DriverError:
    return DriverError(errno.EINVAL, message, reason="WRONG_STATE")


def _require_created(enclave: DriverEnclave) -> None:
    if enclave.state is not EnclaveState.CREATED:
        raise _wrong_state("the enclave is already initialized; no pages can be added and it "
                           "cannot be initialized again")


def _validate_offset_length(enclave: DriverEnclave, offset: int, length: int) -> None:
    """K-IOCTL ``sgx_validate_offset_length``."""
    size = enclave.secs.size
    if (
        offset % PAGE_SIZE
        or length == 0
        or length % PAGE_SIZE
        or offset + length < offset
        or offset + length - PAGE_SIZE >= size
        or offset > U64_MAX
    ):
        raise DriverError(
            errno.EINVAL,
            f"offset {offset:#x} / length {length:#x} is not a page-aligned, non-empty range "
            f"inside the enclave (size {size:#x})",
            reason="OFFSET_LENGTH",
        )


def _validate_secinfo(secinfo: bytes) -> SecInfo:
    """K-IOCTL ``sgx_validate_secinfo``: all of its refusals are EINVAL."""

    def bad(why: str) -> DriverError:
        return DriverError(errno.EINVAL, f"SECINFO refused: {why}", reason="SECINFO")

    if len(secinfo) != SECINFO_SIZE:
        raise bad(f"it is {len(secinfo)} bytes, not {SECINFO_SIZE}")
    raw = int.from_bytes(secinfo[0:8], "little")
    if any(secinfo[8:]):
        raise bad("reserved bytes are not zero")
    if raw & ~_SECINFO_ALLOWED_FLAGS:
        raise bad(f"FLAGS {raw:#x} sets bits outside R/W/X and the page type")
    page_type = (raw >> 8) & 0xFF
    if page_type not in (PageType.REG, PageType.TCS):
        raise bad(f"page type {page_type} is neither REG (2) nor TCS (1)")
    info = SecInfo.from_raw_flags(raw)
    if info.flags & SecInfoFlags.W and not info.flags & SecInfoFlags.R:
        raise bad("W without R")
    if info.page_type is PageType.TCS and info.permissions:
        raise DriverError(
            errno.EINVAL,
            f"SECINFO refused: a TCS page must have permissions 0, not {permission_text(info)}",
            reason="TCS_PERMISSIONS",
            hint="the CPU zeroes TCS permissions, which would break the measurement",
        )
    return info


def _check_range(enclave: DriverEnclave, offset: int, length: int) -> None:
    if offset < 0 or length < 0 or offset + length > enclave.secs.size:
        raise DriverError(
            errno.EINVAL,
            f"[{offset:#x}, +{length:#x}) is outside the enclave (size {enclave.secs.size:#x})",
            reason="OUT_OF_RANGE",
        )


def _parse(parse: Callable[[bytes], _T], data: bytes, what: str) -> _T:
    try:
        return parse(bytes(data))
    except MalformedStructureError as e:
        raise DriverError(errno.EINVAL, f"malformed {what}: {e}",
                          reason=f"MALFORMED_{what}") from e


def _enomem(e: EpcExhaustedError, count: int | None = None) -> DriverError:
    details = {"requested": str(e.requested), "free": str(e.free), "capacity": str(e.capacity)}
    if count is not None:
        details["count"] = str(count)
    return DriverError(
        errno.ENOMEM, str(e), reason="EPC_EXHAUSTED", details=details,
        hint="destroy enclaves, or enable eviction ([epc] eviction = true)",
    )


def _page_fault(enclave: DriverEnclave, e: PageFault) -> DriverError:
    code = int(e.error_code)
    offset = e.address - enclave.ref.base_address
    details = {"error_code": hex(code), "offset": hex(offset)}
    if code & PageFaultCode.SGX:
        return DriverError(
            errno.EFAULT,
            f"#PF {code:#x} at offset {offset:#x}: the EPCM denies it ({e.reason})",
            reason="EPCM_FAULT", details=details,
        )
    return DriverError(
        errno.EFAULT, f"#PF {code:#x} at offset {offset:#x}: no enclave page there",
        reason="PAGE_NOT_PRESENT", details=details,
    )


def _enclu_error(leaf: str, e: EnclaveInstructionError) -> DriverError:
    if e.code is SgxErrorCode.MAC_COMPARE_FAIL:
        return DriverError(errno.EIO, str(e), sgx_code=e.code,
                           hint="an evicted page was altered or replayed")
    if e.code is SgxErrorCode.INVALID_ATTRIBUTE:
        return DriverError(errno.EPERM, f"{leaf} refused: {e.detail}", sgx_code=e.code,
                           hint="PROVISION keys need PROVISIONKEY, EINITTOKEN keys need "
                           "EINITTOKEN_KEY")
    return DriverError(errno.EINVAL, f"{leaf} refused: {e.detail}", sgx_code=e.code)

