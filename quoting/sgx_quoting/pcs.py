"""The emulated provisioning certification service (PCS): the vendor's side of DCAP.

The PCS keeps the records Intel's PCS keeps for a platform (its FMSPC, PPID and PCE-ID, one PCK
certificate per registered TCB, the TCB levels with statuses and advisories, the QE's identity,
revocations) and issues, from them, what verifiers consume: PCK certificate chains, signed TCB
Info (v3) and QE Identity (v2) and CRLs, bundled as dcap-qvl's QuoteCollateralV3.

Invariants:

* :class:`PcsState` is immutable; every operation that changes it (registration, TCB recovery,
  revocation, clock) returns through :class:`ProvisioningCertificationService`, which swaps in a
  new state; :mod:`sgx_quoting.state` persists it atomically.
* A PCK certificate is issued per (PPID, PCE-ID, CPUSVN, PCESVN). Registering the same key for
  the same TCB again returns the same certificate; a revoked certificate stays revoked (a new key
  for the same TCB gets a new certificate; the CRL keeps the old one).
* TCB levels are kept highest first; a platform's status is that of the first level its TCB
  reaches in every SGX component and in PCESVN (Intel's rule).
* Every date the PCS writes comes from its clock: the system clock shifted by a persisted offset,
  or a frozen instant. Collateral is issued "now" with a fixed lifetime (TCB Info, QE Identity
  and PCK CRLs 30 days, the root CA CRL a year, as Intel's), so moving the clock back issues
  collateral that has already expired.
* Signatures are deterministic, so equal state and equal clock give byte-identical output.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_platform.arch.dcap.collateral import QuoteCollateralV3
from sgx_platform.arch.dcap.pck import (
    PckTcb,
    PlatformConfiguration,
    SgxExtension,
    SgxType,
    sgx_extension_from_certificate,
)
from sgx_platform.arch.dcap.qe_identity import (
    ENCLAVE_IDENTITY_VERSION,
    EnclaveIdentity,
    EnclaveIdentityId,
    SignedEnclaveIdentity,
)
from sgx_platform.arch.dcap.quote import (
    CertificationDataType,
    PckCertChainCertificationData,
    PpidCertificationData,
    parse_quote,
)
from sgx_platform.arch.dcap.signed_json import HexBytes
from sgx_platform.arch.dcap.tcb_info import (
    EnclaveTcbLevel,
    SignedTcbInfo,
    TcbComponent,
    TcbInfo,
    TcbInfoId,
    TcbLevel,
    TcbStatus,
)
from sgx_platform.arch.dcap.tcb_info import Tcb as LevelTcb
from sgx_platform.arch.errors import MalformedStructureError
from sgx_quoting.errors import PcsInputError, UnknownPlatformError
from sgx_quoting.pki import (
    PCK_CERTIFICATE_YEARS,
    PckCa,
    PcsPki,
    Revocation,
    add_years,
    serial_from_bytes,
    utc_seconds,
)

CPUSVN_SIZE = 16
FMSPC_SIZE = 6
PCE_ID_SIZE = 2
PPID_SIZE = 16
MRSIGNER_SIZE = 32

#: Lifetimes of issued collateral, as Intel's PCS: TCB Info, QE Identity and PCK CRLs 30 days.
COLLATERAL_LIFETIME = dt.timedelta(days=30)
ROOT_CRL_LIFETIME = dt.timedelta(days=365)
#: How far the PCS clock may be moved from the system clock: 50 years, either way.
MAX_CLOCK_OFFSET = 50 * 366 * 86400
CLOCK_RANGE = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC), dt.datetime(2200, 1, 1, tzinfo=dt.UTC))

#: The advisory IDs the emulator's TCB recoveries announce: SGXEMU-SA-00001, ...
ADVISORY_PREFIX = "SGXEMU-SA-"


def system_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def superseded(status: TcbStatus) -> TcbStatus:
    """The status a level gets when a newer TCB level replaces it (a TCB recovery)."""
    if status in (TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED):
        return TcbStatus.OUT_OF_DATE
    if status in (
        TcbStatus.CONFIGURATION_NEEDED,
        TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED,
    ):
        return TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED
    return status


def _require(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise PcsInputError(f"{what} must be {size} bytes")
    return value


def _require_svn(value: object, bits: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise PcsInputError(f"{what} must be an integer in 0..{(1 << bits) - 1}")
    return value


@dataclass(frozen=True)
class PlatformTcb:
    """A platform's raw TCB: the 16 CPUSVN bytes (its SGX TCB components) and the PCESVN."""

    cpusvn: bytes
    pcesvn: int

    def __post_init__(self) -> None:
        _require(self.cpusvn, CPUSVN_SIZE, "CPUSVN")
        _require_svn(self.pcesvn, 16, "PCESVN")

    @property
    def components(self) -> tuple[int, ...]:
        return tuple(self.cpusvn)

    def reaches(self, other: PlatformTcb) -> bool:
        """Whether this TCB is at least ``other`` in every component and in PCESVN."""
        return self.pcesvn >= other.pcesvn and all(
            a >= b for a, b in zip(self.cpusvn, other.cpusvn, strict=True)
        )

    def reaches_level(self, level: TcbLevel) -> bool:
        """Whether this TCB reaches a TCB Info level (Intel's matching rule)."""
        return self.pcesvn >= level.tcb.pcesvn and all(
            a >= b for a, b in zip(self.cpusvn, level.tcb.sgx_svns, strict=True)
        )

    def level_tcb(self) -> LevelTcb:
        """This TCB as a TCB Info level's ``tcb``."""
        return LevelTcb(tuple(TcbComponent(svn) for svn in self.cpusvn), self.pcesvn)

    @classmethod
    def of_level(cls, level: TcbLevel) -> PlatformTcb:
        svns = level.tcb.sgx_svns
        if any(svn > 0xFF for svn in svns):
            raise PcsInputError("an SGX TCB component SVN must fit a byte")
        return cls(bytes(svns), level.tcb.pcesvn)


@dataclass(frozen=True)
class QeIdentityPolicy:
    """What the QE Identity says the quoting enclave is (Intel's QE3 values by default)."""

    mrsigner: bytes
    isvprodid: int = 1
    miscselect: bytes = bytes(4)
    miscselect_mask: bytes = b"\xff" * 4
    attributes: bytes = bytes.fromhex("11000000000000000000000000000000")
    attributes_mask: bytes = bytes.fromhex("FBFFFFFFFFFFFFFF0000000000000000")

    def __post_init__(self) -> None:
        _require(self.mrsigner, MRSIGNER_SIZE, "QE MRSIGNER")
        _require_svn(self.isvprodid, 16, "QE ISVPRODID")
        _require(self.miscselect, 4, "QE MISCSELECT")
        _require(self.miscselect_mask, 4, "QE MISCSELECT mask")
        _require(self.attributes, 16, "QE ATTRIBUTES")
        _require(self.attributes_mask, 16, "QE ATTRIBUTES mask")


@dataclass(frozen=True)
class PlatformProfile:
    """The platform the PCS knows: what Intel learns at manufacturing and registration.

    Certificates of the Processor CA carry SGX Type Standard and no platform fields; those of
    the Platform CA (multi-package platforms) carry a PlatformInstanceID and a Configuration,
    as Intel's do.
    """

    fmspc: bytes
    ppid: bytes
    pce_id: bytes = bytes(PCE_ID_SIZE)
    ca: PckCa = PckCa.PROCESSOR
    sgx_type: SgxType = SgxType.STANDARD
    platform_instance_id: bytes | None = None
    configuration: PlatformConfiguration | None = None

    def __post_init__(self) -> None:
        _require(self.fmspc, FMSPC_SIZE, "FMSPC")
        _require(self.ppid, PPID_SIZE, "PPID")
        _require(self.pce_id, PCE_ID_SIZE, "PCE-ID")
        if not isinstance(self.ca, PckCa):
            raise PcsInputError("the PCK CA must be a PckCa")
        if not isinstance(self.sgx_type, SgxType):
            raise PcsInputError("the SGX Type must be an SgxType")
        if self.platform_instance_id is not None:
            _require(self.platform_instance_id, 16, "PlatformInstanceID")
        if self.configuration is not None and not isinstance(
            self.configuration, PlatformConfiguration
        ):
            raise PcsInputError("the platform configuration must be a PlatformConfiguration")

    @classmethod
    def for_ca(
        cls, ca: PckCa, *, fmspc: bytes, ppid: bytes, pce_id: bytes, platform_instance_id: bytes
    ) -> PlatformProfile:
        """A profile as Intel's certificates have it for ``ca``: Processor CA platforms are
        Standard with no platform fields; Platform CA platforms are Scalable with a
        PlatformInstanceID and a Configuration (dynamic platform, no cached keys, no SMT)."""
        if ca is PckCa.PROCESSOR:
            return cls(fmspc=fmspc, ppid=ppid, pce_id=pce_id, ca=ca)
        return cls(
            fmspc=fmspc,
            ppid=ppid,
            pce_id=pce_id,
            ca=ca,
            sgx_type=SgxType.SCALABLE,
            platform_instance_id=platform_instance_id,
            configuration=PlatformConfiguration(
                dynamic_platform=True, cached_keys=False, smt_enabled=False
            ),
        )


@dataclass(frozen=True)
class PckRecord:
    """One issued PCK certificate and what it certifies."""

    certificate_der: bytes
    ppid: bytes
    pce_id: bytes
    tcb: PlatformTcb
    ca: PckCa
    revoked_at: dt.datetime | None = None

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.certificate_der)

    @property
    def serial(self) -> int:
        return self.certificate.serial_number

    @property
    def public_key_point(self) -> bytes:
        key = self.certificate.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise PcsInputError("a PCK certificate must hold an EC key")
        return _point(key)


@dataclass(frozen=True)
class ClockSetting:
    """The PCS clock: the system clock shifted by ``offset_seconds``, or ``frozen_at``."""

    offset_seconds: int = 0
    frozen_at: dt.datetime | None = None

    def now(self, system: dt.datetime) -> dt.datetime:
        base = self.frozen_at if self.frozen_at is not None else system
        return utc_seconds(base + dt.timedelta(seconds=self.offset_seconds))


@dataclass(frozen=True)
class PcsState:
    """Everything the PCS knows, apart from its keys."""

    platform: PlatformProfile
    tcb_levels: tuple[TcbLevel, ...]
    qe_identity: QeIdentityPolicy
    qe_tcb_levels: tuple[EnclaveTcbLevel, ...]
    tcb_evaluation_data_number: int
    pck_certificates: tuple[PckRecord, ...] = ()
    pck_crl_number: int = 1
    recoveries: int = 0
    clock: ClockSetting = field(default_factory=ClockSetting)

    def __post_init__(self) -> None:
        if not self.tcb_levels:
            raise PcsInputError("the TCB Info needs at least one TCB level")
        if not self.qe_tcb_levels:
            raise PcsInputError("the QE Identity needs at least one TCB level")
        _require_svn(self.tcb_evaluation_data_number, 32, "tcbEvaluationDataNumber")

    @classmethod
    def initial(
        cls,
        platform: PlatformProfile,
        qe_identity: QeIdentityPolicy,
        *,
        baseline: PlatformTcb,
        qe_isvsvn: int,
        tcb_date: dt.datetime,
        tcb_evaluation_data_number: int = 1,
    ) -> PcsState:
        """A PCS where ``baseline`` (and every TCB above it) and QE SVN ``qe_isvsvn`` (and
        above) are UpToDate, and nothing is registered yet."""
        date = _tcb_date(tcb_date)
        return cls(
            platform=platform,
            tcb_levels=(TcbLevel(baseline.level_tcb(), date, TcbStatus.UP_TO_DATE),),
            qe_identity=qe_identity,
            qe_tcb_levels=(EnclaveTcbLevel(qe_isvsvn, date, TcbStatus.UP_TO_DATE),),
            tcb_evaluation_data_number=tcb_evaluation_data_number,
        )

    def status_of(self, tcb: PlatformTcb) -> TcbLevel | None:
        """The first TCB level ``tcb`` reaches, or None (Intel's "no matching level")."""
        return next((level for level in self.tcb_levels if tcb.reaches_level(level)), None)


def _tcb_date(when: dt.datetime) -> dt.datetime:
    """Intel's tcbDate: midnight UTC of the day."""
    return utc_seconds(when).replace(hour=0, minute=0, second=0)


def _point(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def load_pck_public_key(data: bytes) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from x||y (64 bytes, as SGX structures carry it), an uncompressed
    point (65 bytes) or a DER SubjectPublicKeyInfo."""
    if not isinstance(data, bytes):
        raise PcsInputError("a PCK public key must be bytes")
    try:
        if len(data) == 64:
            return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + data)
        if len(data) == 65:
            return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), data)
        key = serialization.load_der_public_key(data)
    except ValueError as e:
        raise PcsInputError(f"not a P-256 public key: {e}") from e
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise PcsInputError("a PCK public key must be ECDSA P-256")
    return key


@dataclass(frozen=True)
class PckCertChain:
    """A PCK certificate with its issuing CA and the root, as a quote's type-5 data holds them."""

    leaf: x509.Certificate
    ca: x509.Certificate
    root: x509.Certificate
    revoked: bool = False

    @property
    def certificates(self) -> tuple[x509.Certificate, x509.Certificate, x509.Certificate]:
        return (self.leaf, self.ca, self.root)

    def pem(self) -> bytes:
        """Leaf, CA, root in PEM, the order Intel's QE writes into certification data type 5."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.certificates)


@dataclass(frozen=True)
class TcbRecovery:
    """What a TCB recovery did."""

    advisory_id: str
    new_level: TcbLevel
    tcb_evaluation_data_number: int


class ProvisioningCertificationService:
    """The PCS domain: the PKI and the state, with a clock. Holds no file or socket."""

    def __init__(
        self,
        pki: PcsPki,
        state: PcsState,
        *,
        system_clock: Callable[[], dt.datetime] = system_now,
    ) -> None:
        self._pki = pki
        self._state = state
        self._system_clock = system_clock

    @property
    def pki(self) -> PcsPki:
        return self._pki

    @property
    def state(self) -> PcsState:
        return self._state

    def now(self) -> dt.datetime:
        return self._state.clock.now(self._system_clock())

    # -- clock -------------------------------------------------------------------------------

    def set_clock(self, *, offset_seconds: int = 0, frozen_at: dt.datetime | None = None) -> None:
        """Shift the PCS clock (``offset_seconds``) or freeze it (``frozen_at``)."""
        if (
            not isinstance(offset_seconds, int)
            or isinstance(offset_seconds, bool)
            or abs(offset_seconds) > MAX_CLOCK_OFFSET
        ):
            raise PcsInputError(f"a clock offset must be an integer within ±{MAX_CLOCK_OFFSET} s")
        if frozen_at is not None:
            frozen_at = utc_seconds(frozen_at)
            if not CLOCK_RANGE[0] <= frozen_at <= CLOCK_RANGE[1]:
                raise PcsInputError("the PCS clock must stay between 1970 and 2200")
        self._state = replace(self._state, clock=ClockSetting(offset_seconds, frozen_at))

    # -- PCK certificates --------------------------------------------------------------------

    def register_pck(
        self,
        public_key: bytes,
        tcb: PlatformTcb,
        *,
        pce_id: bytes,
        ppid: bytes | None = None,
    ) -> PckCertChain:
        """Certify a PCK public key for a TCB (the PCE's registration) and return its chain.

        ``ppid`` defaults to the platform's. The same key for the same TCB gets its existing
        certificate back.
        """
        platform = self._state.platform
        key = load_pck_public_key(public_key)
        point = _point(key)
        _require(pce_id, PCE_ID_SIZE, "PCE-ID")
        if pce_id != platform.pce_id:
            raise UnknownPlatformError(
                f"PCE-ID {pce_id.hex().upper()} is not this platform's "
                f"({platform.pce_id.hex().upper()})"
            )
        ppid = platform.ppid if ppid is None else _require(ppid, PPID_SIZE, "PPID")
        for record in self._state.pck_certificates:
            if (
                record.ppid == ppid
                and record.pce_id == pce_id
                and record.tcb == tcb
                and record.public_key_point == point
            ):
                return self._chain(record)
        issuer = self._pki.pck_ca(platform.ca)
        serial = serial_from_bytes(
            hashlib.sha256(
                b"sgxemu-pck-serial\x00"
                + issuer.key_identifier
                + point
                + ppid
                + pce_id
                + tcb.cpusvn
                + tcb.pcesvn.to_bytes(2, "big")
                + len(self._state.pck_certificates).to_bytes(4, "big")
            ).digest()[:20]
        )
        now = self.now()
        extension = sgx_extension(replace(platform, ppid=ppid), tcb).to_der()
        certificate = self._pki.issue_pck(
            platform.ca,
            key,
            extension,
            serial=serial,
            not_before=now,
            not_after=add_years(now, PCK_CERTIFICATE_YEARS),
        )
        record = PckRecord(
            certificate_der=certificate.public_bytes(serialization.Encoding.DER),
            ppid=ppid,
            pce_id=pce_id,
            tcb=tcb,
            ca=platform.ca,
        )
        self._state = replace(self._state, pck_certificates=(*self._state.pck_certificates, record))
        return self._chain(record)

    def _chain(self, record: PckRecord) -> PckCertChain:
        return PckCertChain(
            leaf=record.certificate,
            ca=self._pki.pck_ca(record.ca).certificate,
            root=self._pki.root.certificate,
            revoked=record.revoked_at is not None,
        )

    def select_pck(
        self, raw_tcb: PlatformTcb, *, pce_id: bytes, ppid: bytes | None = None
    ) -> PckCertChain:
        """The PCK certificate for a platform at ``raw_tcb``: the one registered for the highest
        TCB that ``raw_tcb`` reaches (PCESVN first, then the components), the latest issued
        among equals."""
        ppid = self._state.platform.ppid if ppid is None else _require(ppid, PPID_SIZE, "PPID")
        best: PckRecord | None = None
        for record in self._state.pck_certificates:
            if record.ppid != ppid or record.pce_id != pce_id or not raw_tcb.reaches(record.tcb):
                continue
            if best is None or (record.tcb.pcesvn, record.tcb.components) >= (
                best.tcb.pcesvn,
                best.tcb.components,
            ):
                best = record
        if best is None:
            raise UnknownPlatformError(
                f"no PCK certificate registered for PPID {ppid.hex()} at or below CPUSVN "
                f"{raw_tcb.cpusvn.hex()} PCESVN {raw_tcb.pcesvn}; the PCE must register first"
            )
        return self._chain(best)

    def revoke_pck(self, serial: int | None = None) -> tuple[int, ...]:
        """Put PCK certificates on their CA's CRL: the one with ``serial``, or by default every
        unrevoked certificate of the platform. Returns the serials revoked now."""
        now = self.now()
        revoked: list[int] = []
        records: list[PckRecord] = []
        for record in self._state.pck_certificates:
            if record.revoked_at is None and (serial is None or record.serial == serial):
                record = replace(record, revoked_at=now)
                revoked.append(record.serial)
            records.append(record)
        if serial is not None and not revoked:
            if any(r.serial == serial for r in self._state.pck_certificates):
                return ()
            raise UnknownPlatformError(f"no PCK certificate with serial {serial:x}")
        if not revoked:
            return ()
        self._state = replace(
            self._state,
            pck_certificates=tuple(records),
            pck_crl_number=self._state.pck_crl_number + 1,
        )
        return tuple(revoked)

    # -- TCB recovery ------------------------------------------------------------------------

    def tcb_recovery(
        self,
        *,
        advisory_id: str | None = None,
        component: int | None = 0,
        raise_pcesvn: bool = False,
    ) -> TcbRecovery:
        """Publish a new TCB level above every known TCB, so every registered platform becomes
        OutOfDate with a new advisory.

        The new level is the component-wise maximum of the current top level and every
        registered TCB, with CPUSVN byte ``component`` (default 0) raised by one and/or, with
        ``raise_pcesvn``, PCESVN raised by one. Older levels are superseded (UpToDate and
        SWHardeningNeeded become OutOfDate, the Configuration statuses
        OutOfDateConfigurationNeeded) and list the advisory; the evaluation data number of
        TCB Info and QE Identity goes up by one.
        """
        if component is None and not raise_pcesvn:
            raise PcsInputError("a TCB recovery must raise a CPUSVN component or PCESVN")
        if component is not None and not 0 <= component < CPUSVN_SIZE:
            raise PcsInputError(f"CPUSVN component must be in 0..{CPUSVN_SIZE - 1}")
        state = self._state
        known = [PlatformTcb.of_level(level) for level in state.tcb_levels] + [
            record.tcb for record in state.pck_certificates
        ]
        svns = [max(t.cpusvn[i] for t in known) for i in range(CPUSVN_SIZE)]
        pcesvn = max(t.pcesvn for t in known)
        if component is not None:
            if svns[component] == 0xFF:
                raise PcsInputError(f"CPUSVN component {component} is already 255")
            svns[component] += 1
        if raise_pcesvn:
            if pcesvn == 0xFFFF:
                raise PcsInputError("PCESVN is already 65535")
            pcesvn += 1
        number = state.recoveries + 1
        advisory = advisory_id or f"{ADVISORY_PREFIX}{number:05d}"
        if not advisory or not advisory.isprintable() or '"' in advisory or "\\" in advisory:
            raise PcsInputError("an advisory ID must be printable, without quotes or backslashes")
        now = self.now()
        new_level = TcbLevel(
            PlatformTcb(bytes(svns), pcesvn).level_tcb(), _tcb_date(now), TcbStatus.UP_TO_DATE
        )
        older = tuple(
            level
            if level.tcb_status is TcbStatus.REVOKED
            else replace(
                level,
                tcb_status=superseded(level.tcb_status),
                advisory_ids=_with_advisory(level.advisory_ids, advisory),
            )
            for level in state.tcb_levels
        )
        self._state = replace(
            state,
            tcb_levels=(new_level, *older),
            tcb_evaluation_data_number=state.tcb_evaluation_data_number + 1,
            recoveries=number,
        )
        return TcbRecovery(advisory, new_level, self._state.tcb_evaluation_data_number)

    def platform_status(self, tcb: PlatformTcb) -> TcbLevel:
        """The TCB level a platform at ``tcb`` matches; raises when it matches none."""
        level = self._state.status_of(tcb)
        if level is None:
            raise UnknownPlatformError(
                f"TCB CPUSVN {tcb.cpusvn.hex()} PCESVN {tcb.pcesvn} is below every TCB level"
            )
        return level

    # -- CRLs --------------------------------------------------------------------------------

    def revocations(self, ca: PckCa) -> tuple[Revocation, ...]:
        return tuple(
            Revocation(record.serial, record.revoked_at)
            for record in self._state.pck_certificates
            if record.ca is ca and record.revoked_at is not None
        )

    def root_ca_crl(self) -> bytes:
        now = self.now()
        return self._pki.root_crl(this_update=now, next_update=now + ROOT_CRL_LIFETIME)

    def pck_crl(self, ca: PckCa) -> bytes:
        now = self.now()
        return self._pki.pck_crl(
            ca,
            this_update=now,
            next_update=now + COLLATERAL_LIFETIME,
            crl_number=self._state.pck_crl_number,
            revoked=self.revocations(ca),
        )

    # -- signed collateral -------------------------------------------------------------------

    def _require_fmspc(self, fmspc: bytes | None) -> bytes:
        platform = self._state.platform
        if fmspc is None:
            return platform.fmspc
        _require(fmspc, FMSPC_SIZE, "FMSPC")
        if fmspc != platform.fmspc:
            raise UnknownPlatformError(
                f"no TCB Info for FMSPC {fmspc.hex().upper()}; this PCS serves "
                f"{platform.fmspc.hex().upper()}"
            )
        return fmspc

    def tcb_info(self, fmspc: bytes | None = None) -> SignedTcbInfo:
        """The signed SGX TCB Info v3 for ``fmspc`` (default: the platform's), issued now."""
        fmspc = self._require_fmspc(fmspc)
        now = self.now()
        state = self._state
        info = TcbInfo(
            id=TcbInfoId.SGX,
            version=3,
            issue_date=now,
            next_update=now + COLLATERAL_LIFETIME,
            fmspc=HexBytes(fmspc),
            pce_id=HexBytes(state.platform.pce_id),
            tcb_type=0,
            tcb_evaluation_data_number=state.tcb_evaluation_data_number,
            tcb_levels=state.tcb_levels,
        )
        text = info.to_json()
        return SignedTcbInfo(text, self._pki.sign_collateral(text))

    def qe_identity(self) -> SignedEnclaveIdentity:
        """The signed QE Identity v2 (id "QE"), issued now."""
        now = self.now()
        state = self._state
        qe = state.qe_identity
        identity = EnclaveIdentity(
            id=EnclaveIdentityId.QE,
            version=ENCLAVE_IDENTITY_VERSION,
            issue_date=now,
            next_update=now + COLLATERAL_LIFETIME,
            tcb_evaluation_data_number=state.tcb_evaluation_data_number,
            miscselect=HexBytes(qe.miscselect),
            miscselect_mask=HexBytes(qe.miscselect_mask),
            attributes=HexBytes(qe.attributes),
            attributes_mask=HexBytes(qe.attributes_mask),
            mrsigner=HexBytes(qe.mrsigner),
            isvprodid=qe.isvprodid,
            tcb_levels=state.qe_tcb_levels,
        )
        text = identity.to_json()
        return SignedEnclaveIdentity(text, self._pki.sign_collateral(text))

    def collateral(
        self,
        fmspc: bytes | None = None,
        ca: PckCa | None = None,
        *,
        pck_certificate_chain: str | None = None,
    ) -> QuoteCollateralV3:
        """Everything a verifier needs for a quote of this platform (dcap-qvl's layout).

        ``ca`` defaults to the platform's PCK CA; ``pck_certificate_chain`` is added for
        quotes that do not carry their PCK certificate.
        """
        fmspc = self._require_fmspc(fmspc)
        ca = self._state.platform.ca if ca is None else ca
        tcb_info = self.tcb_info(fmspc)
        qe_identity = self.qe_identity()
        return QuoteCollateralV3(
            pck_crl_issuer_chain=self._pki.pck_issuer_chain_pem(ca),
            root_ca_crl=self.root_ca_crl(),
            pck_crl=self.pck_crl(ca),
            tcb_info_issuer_chain=self._pki.tcb_issuer_chain_pem(),
            tcb_info=tcb_info.body_text,
            tcb_info_signature=tcb_info.signature,
            qe_identity_issuer_chain=self._pki.tcb_issuer_chain_pem(),
            qe_identity=qe_identity.body_text,
            qe_identity_signature=qe_identity.signature,
            pck_certificate_chain=pck_certificate_chain,
        )

    def collateral_for_quote(self, quote: bytes) -> QuoteCollateralV3:
        """The collateral for a DCAP quote (the PCCS role).

        With certification data type 5 the FMSPC and CA come from the quote's PCK certificate;
        with types 1-3 (PPID, CPUSVN, PCESVN, PCE-ID) the PCS selects the PCK certificate for
        that TCB and adds its chain as ``pck_certificate_chain``.
        """
        try:
            parsed = parse_quote(quote, allow_trailing_zero_padding=True)
            data = parsed.certification_data
            if isinstance(data, PckCertChainCertificationData):
                leaf = data.ordered_chain()[0]
                extension = sgx_extension_from_certificate(leaf)
                return self.collateral(extension.fmspc, PckCa.of_issuer(leaf.issuer))
        except MalformedStructureError as e:
            raise PcsInputError(f"unusable quote: {e}") from e
        if isinstance(data, PpidCertificationData) and data.pce_id is not None:
            # Types 2 and 3 carry an encrypted PPID this PCS cannot read: use its platform's.
            ppid = data.ppid if data.cert_type is CertificationDataType.PPID_CLEARTEXT else None
            chain = self.select_pck(
                PlatformTcb(data.cpusvn, data.pcesvn), pce_id=data.pce_id, ppid=ppid
            )
            extension = sgx_extension_from_certificate(chain.leaf)
            return self.collateral(
                extension.fmspc,
                PckCa.of_issuer(chain.leaf.issuer),
                pck_certificate_chain=chain.pem().decode("ascii"),
            )
        raise PcsInputError(
            f"a quote with certification data type {int(data.cert_type)} names no PCK "
            "certificate this PCS can find"
        )


def _with_advisory(ids: Sequence[str], advisory: str) -> tuple[str, ...]:
    return tuple(ids) if advisory in ids else (*ids, advisory)


def sgx_extension(platform: PlatformProfile, tcb: PlatformTcb) -> SgxExtension:
    """The SGX extension of ``platform``'s PCK certificate for ``tcb`` (its TCB components are
    the CPUSVN bytes, as in Intel's certificates)."""
    return SgxExtension(
        ppid=platform.ppid,
        tcb=PckTcb(components=tcb.components, pcesvn=tcb.pcesvn, cpusvn=tcb.cpusvn),
        pce_id=platform.pce_id,
        fmspc=platform.fmspc,
        sgx_type=platform.sgx_type,
        platform_instance_id=platform.platform_instance_id,
        configuration=platform.configuration,
    )
