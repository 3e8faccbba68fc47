"""Persistence of the emulated PCS in its own directory (``$STATE/pcs/``).

Layout::

    root-ca.key platform-ca.key processor-ca.key tcb-signing.key   PKCS#8 PEM, mode 0600
    root-ca.der platform-ca.der processor-ca.der tcb-signing.der   the certificates
    pcs.json                                                       PcsState, mode 0600
    .lock                                                          serializes writers

Invariants:

* every file is written atomically (:func:`sgx_rpc.files.write_atomic`: temporary file, fsync,
  rename, fsync of the directory);
  keys and state are 0600 and the directory 0700;
* :meth:`PcsStore.session` holds an exclusive ``flock`` on ``.lock`` from load to save, so the
  service and the command line never interleave their changes; state is saved only when an
  operation changed it;
* loading is strict: a missing file, an unknown or missing key in ``pcs.json``, a wrong format
  version, or a key that does not match its certificate raises :class:`PcsStateError`;
* nothing here decides anything: the domain is :mod:`sgx_quoting.pcs`. A store reads the keys
  once per instance (they never change after :meth:`PcsStore.create`) and the state at every
  session.
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import json
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_platform.arch.dcap.pck import PlatformConfiguration, SgxType
from sgx_platform.arch.dcap.tcb_info import EnclaveTcbLevel, TcbLevel, TcbStatus
from sgx_platform.arch.errors import SgxError
from sgx_quoting.errors import PcsStateError
from sgx_quoting.pcs import (
    ClockSetting,
    PckRecord,
    PcsState,
    PlatformProfile,
    PlatformTcb,
    ProvisioningCertificationService,
    QeIdentityPolicy,
    system_now,
)
from sgx_quoting.pki import CertifiedKey, PckCa, PcsPki, utc_seconds
from sgx_rpc.files import read_private, write_atomic

STATE_FORMAT = "sgxemu-pcs-state"
STATE_VERSION = 1
STATE_FILE = "pcs.json"
LOCK_FILE = ".lock"
_PLATFORM_KEYS = (
    "fmspc",
    "ppid",
    "pce_id",
    "ca",
    "sgx_type",
    "platform_instance_id",
    "configuration",
)
_PKI_FILES = {
    "root": "root-ca",
    "platform_ca": "platform-ca",
    "processor_ca": "processor-ca",
    "tcb_signing": "tcb-signing",
}


# -- JSON encoding of the state --------------------------------------------------------------


def _time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: object, what: str) -> dt.datetime:
    if not isinstance(text, str):
        raise PcsStateError(f"{what}: expected a time string")
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError as e:
        raise PcsStateError(f"{what}: {e}") from e


def _fields(obj: object, keys: tuple[str, ...], what: str) -> Mapping[str, Any]:
    if not isinstance(obj, dict):
        raise PcsStateError(f"{what}: expected an object")
    if set(obj) != set(keys):
        missing = sorted(set(keys) - set(obj))
        unknown = sorted(set(obj) - set(keys))
        raise PcsStateError(f"{what}: missing keys {missing}, unknown keys {unknown}")
    return obj


def _hex(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise PcsStateError(f"{what}: expected hex")
    try:
        return bytes.fromhex(value)
    except ValueError as e:
        raise PcsStateError(f"{what}: {e}") from e


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise PcsStateError(f"{what}: expected an integer")
    return value


def _strs(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PcsStateError(f"{what}: expected a list of strings")
    return tuple(value)


def _level_to_json(level: TcbLevel) -> dict[str, Any]:
    tcb = PlatformTcb.of_level(level)
    return {
        "cpusvn": tcb.cpusvn.hex(),
        "pcesvn": tcb.pcesvn,
        "tcb_date": _time(level.tcb_date),
        "status": level.tcb_status.value,
        "advisory_ids": list(level.advisory_ids),
    }


def _qe_level_to_json(level: EnclaveTcbLevel) -> dict[str, Any]:
    return {
        "isvsvn": level.isvsvn,
        "tcb_date": _time(level.tcb_date),
        "status": level.tcb_status.value,
        "advisory_ids": list(level.advisory_ids),
    }


def state_to_json(state: PcsState) -> bytes:
    """The state as a JSON document (stable key order, one trailing newline)."""
    p, qe = state.platform, state.qe_identity
    document = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "platform": {
            "fmspc": p.fmspc.hex(),
            "ppid": p.ppid.hex(),
            "pce_id": p.pce_id.hex(),
            "ca": p.ca.value,
            "sgx_type": int(p.sgx_type),
            "platform_instance_id": (
                None if p.platform_instance_id is None else p.platform_instance_id.hex()
            ),
            "configuration": (
                None
                if p.configuration is None
                else {
                    "dynamic_platform": p.configuration.dynamic_platform,
                    "cached_keys": p.configuration.cached_keys,
                    "smt_enabled": p.configuration.smt_enabled,
                }
            ),
        },
        "tcb_evaluation_data_number": state.tcb_evaluation_data_number,
        "tcb_levels": [_level_to_json(level) for level in state.tcb_levels],
        "qe_identity": {
            "mrsigner": qe.mrsigner.hex(),
            "isvprodid": qe.isvprodid,
            "miscselect": qe.miscselect.hex(),
            "miscselect_mask": qe.miscselect_mask.hex(),
            "attributes": qe.attributes.hex(),
            "attributes_mask": qe.attributes_mask.hex(),
        },
        "qe_tcb_levels": [_qe_level_to_json(level) for level in state.qe_tcb_levels],
        "pck_certificates": [
            {
                "certificate": base64.b64encode(r.certificate_der).decode("ascii"),
                "ppid": r.ppid.hex(),
                "pce_id": r.pce_id.hex(),
                "cpusvn": r.tcb.cpusvn.hex(),
                "pcesvn": r.tcb.pcesvn,
                "ca": r.ca.value,
                "revoked_at": None if r.revoked_at is None else _time(r.revoked_at),
            }
            for r in state.pck_certificates
        ],
        "pck_crl_number": state.pck_crl_number,
        "recoveries": state.recoveries,
        "clock": {
            "offset_seconds": state.clock.offset_seconds,
            "frozen_at": None if state.clock.frozen_at is None else _time(state.clock.frozen_at),
        },
    }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def _status(value: object, what: str) -> TcbStatus:
    try:
        return TcbStatus(str(value))
    except ValueError:
        raise PcsStateError(f"{what}: unknown TCB status {value!r}") from None


def _ca(value: object, what: str) -> PckCa:
    try:
        return PckCa(str(value))
    except ValueError:
        raise PcsStateError(f"{what}: unknown PCK CA {value!r}") from None


def _sgx_type(value: object) -> SgxType:
    try:
        return SgxType(_int(value, "sgx_type"))
    except ValueError:
        raise PcsStateError(f"unknown SGX type {value!r}") from None


def _optional_bool(value: object, what: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise PcsStateError(f"{what}: expected true, false or null")
    return value


def _configuration(value: object) -> PlatformConfiguration | None:
    if value is None:
        return None
    f = _fields(value, ("dynamic_platform", "cached_keys", "smt_enabled"), "configuration")
    return PlatformConfiguration(
        dynamic_platform=_optional_bool(f["dynamic_platform"], "dynamic_platform"),
        cached_keys=_optional_bool(f["cached_keys"], "cached_keys"),
        smt_enabled=_optional_bool(f["smt_enabled"], "smt_enabled"),
    )


def state_from_json(data: bytes) -> PcsState:
    """Parse :func:`state_to_json` output strictly."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise PcsStateError(f"{STATE_FILE}: not JSON: {e}") from e
    top = _fields(
        document,
        (
            "format",
            "version",
            "platform",
            "tcb_evaluation_data_number",
            "tcb_levels",
            "qe_identity",
            "qe_tcb_levels",
            "pck_certificates",
            "pck_crl_number",
            "recoveries",
            "clock",
        ),
        STATE_FILE,
    )
    if top["format"] != STATE_FORMAT or top["version"] != STATE_VERSION:
        raise PcsStateError(
            f"{STATE_FILE}: expected format {STATE_FORMAT} version {STATE_VERSION}, got "
            f"{top['format']!r} version {top['version']!r}"
        )
    try:
        return _decode_state(top)
    except PcsStateError:
        raise
    except (SgxError, TypeError, ValueError) as e:
        raise PcsStateError(f"{STATE_FILE}: {e}") from e


def _decode_state(top: Mapping[str, Any]) -> PcsState:
    p = _fields(top["platform"], _PLATFORM_KEYS, "platform")
    instance_id = p["platform_instance_id"]
    platform = PlatformProfile(
        fmspc=_hex(p["fmspc"], "fmspc"),
        ppid=_hex(p["ppid"], "ppid"),
        pce_id=_hex(p["pce_id"], "pce_id"),
        ca=_ca(p["ca"], "platform.ca"),
        sgx_type=_sgx_type(p["sgx_type"]),
        platform_instance_id=None if instance_id is None else _hex(instance_id, "instance id"),
        configuration=_configuration(p["configuration"]),
    )
    if not isinstance(top["tcb_levels"], list) or not isinstance(top["qe_tcb_levels"], list):
        raise PcsStateError("tcb_levels and qe_tcb_levels must be lists")
    levels = []
    for raw in top["tcb_levels"]:
        f = _fields(raw, ("cpusvn", "pcesvn", "tcb_date", "status", "advisory_ids"), "tcb level")
        levels.append(
            TcbLevel(
                PlatformTcb(_hex(f["cpusvn"], "cpusvn"), _int(f["pcesvn"], "pcesvn")).level_tcb(),
                _parse_time(f["tcb_date"], "tcb_date"),
                _status(f["status"], "tcb level"),
                _strs(f["advisory_ids"], "advisory_ids"),
            )
        )
    qe_levels = []
    for raw in top["qe_tcb_levels"]:
        f = _fields(raw, ("isvsvn", "tcb_date", "status", "advisory_ids"), "QE tcb level")
        qe_levels.append(
            EnclaveTcbLevel(
                _int(f["isvsvn"], "isvsvn"),
                _parse_time(f["tcb_date"], "tcb_date"),
                _status(f["status"], "QE tcb level"),
                _strs(f["advisory_ids"], "advisory_ids"),
            )
        )
    q = _fields(
        top["qe_identity"],
        (
            "mrsigner",
            "isvprodid",
            "miscselect",
            "miscselect_mask",
            "attributes",
            "attributes_mask",
        ),
        "qe_identity",
    )
    qe = QeIdentityPolicy(
        mrsigner=_hex(q["mrsigner"], "mrsigner"),
        isvprodid=_int(q["isvprodid"], "isvprodid"),
        miscselect=_hex(q["miscselect"], "miscselect"),
        miscselect_mask=_hex(q["miscselect_mask"], "miscselect_mask"),
        attributes=_hex(q["attributes"], "attributes"),
        attributes_mask=_hex(q["attributes_mask"], "attributes_mask"),
    )
    if not isinstance(top["pck_certificates"], list):
        raise PcsStateError("pck_certificates must be a list")
    records = []
    for raw in top["pck_certificates"]:
        f = _fields(
            raw,
            ("certificate", "ppid", "pce_id", "cpusvn", "pcesvn", "ca", "revoked_at"),
            "PCK certificate",
        )
        try:
            der = base64.b64decode(f["certificate"], validate=True)
            x509.load_der_x509_certificate(der)
        except ValueError as e:
            raise PcsStateError(f"PCK certificate: {e}") from e
        revoked = f["revoked_at"]
        records.append(
            PckRecord(
                certificate_der=der,
                ppid=_hex(f["ppid"], "ppid"),
                pce_id=_hex(f["pce_id"], "pce_id"),
                tcb=PlatformTcb(_hex(f["cpusvn"], "cpusvn"), _int(f["pcesvn"], "pcesvn")),
                ca=_ca(f["ca"], "PCK certificate ca"),
                revoked_at=None if revoked is None else _parse_time(revoked, "revoked_at"),
            )
        )
    c = _fields(top["clock"], ("offset_seconds", "frozen_at"), "clock")
    frozen = c["frozen_at"]
    return PcsState(
        platform=platform,
        tcb_levels=tuple(levels),
        qe_identity=qe,
        qe_tcb_levels=tuple(qe_levels),
        tcb_evaluation_data_number=_int(
            top["tcb_evaluation_data_number"], "tcb_evaluation_data_number"
        ),
        pck_certificates=tuple(records),
        pck_crl_number=_int(top["pck_crl_number"], "pck_crl_number"),
        recoveries=_int(top["recoveries"], "recoveries"),
        clock=ClockSetting(
            offset_seconds=_int(c["offset_seconds"], "offset_seconds"),
            frozen_at=None if frozen is None else _parse_time(frozen, "frozen_at"),
        ),
    )


# -- the store -------------------------------------------------------------------------------


class PcsStore:
    """The PCS's directory: keys, certificates and state."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._pki: PcsPki | None = None

    def _path(self, name: str) -> Path:
        return self.directory / name

    def exists(self) -> bool:
        return self._path(STATE_FILE).is_file()

    def create(self, pki: PcsPki, state: PcsState) -> None:
        """Write a new PCS; refuses to overwrite an existing one."""
        if self.exists():
            raise PcsStateError(f"{self.directory} already holds a PCS")
        if self.directory.is_symlink():
            raise PcsStateError(f"{self.directory} is a symbolic link; refusing to use it")
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        with self._locked():
            for attribute, stem in _PKI_FILES.items():
                certified: CertifiedKey = getattr(pki, attribute)
                key_pem = certified.private_key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                write_atomic(self._path(f"{stem}.key"), key_pem, mode=0o600)
                write_atomic(self._path(f"{stem}.der"), certified.der, mode=0o644)
            write_atomic(self._path(STATE_FILE), state_to_json(state), mode=0o600)

    def load_pki(self) -> PcsPki:
        parts: dict[str, CertifiedKey] = {}
        for attribute, stem in _PKI_FILES.items():
            try:
                key_pem = read_private(self._path(f"{stem}.key"))
                cert_der = self._path(f"{stem}.der").read_bytes()
            except OSError as e:
                raise PcsStateError(f"PCS state incomplete: {e.strerror}: {e.filename}") from e
            try:
                key = serialization.load_pem_private_key(key_pem, password=None)
                certificate = x509.load_der_x509_certificate(cert_der)
            except ValueError as e:
                raise PcsStateError(f"{stem}: unreadable key or certificate: {e}") from e
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise PcsStateError(f"{stem}.key: not an EC private key")
            try:
                parts[attribute] = CertifiedKey(certificate, key)
            except SgxError as e:
                raise PcsStateError(f"{stem}: {e}") from e
        return PcsPki(**parts)

    def load_state(self) -> PcsState:
        try:
            data = read_private(self._path(STATE_FILE))
        except FileNotFoundError:
            raise PcsStateError(
                f"no PCS in {self.directory}; run `sgxemu init` to create one"
            ) from None
        except OSError as e:
            raise PcsStateError(f"cannot read {STATE_FILE}: {e.strerror}") from e
        return state_from_json(data)

    def save_state(self, state: PcsState) -> None:
        write_atomic(self._path(STATE_FILE), state_to_json(state), mode=0o600)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._path(LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextmanager
    def session(
        self, *, system_clock: Callable[[], dt.datetime] = system_now
    ) -> Iterator[ProvisioningCertificationService]:
        """The PCS loaded under the lock; its state is saved on a normal exit if it changed."""
        if not self.exists():
            raise PcsStateError(f"no PCS in {self.directory}; run `sgxemu init` to create one")
        with self._locked():
            if self._pki is None:  # the keys never change after create(): read them once
                self._pki = self.load_pki()
            pki = self._pki
            state = self.load_state()
            service = ProvisioningCertificationService(pki, state, system_clock=system_clock)
            yield service
            if service.state != state:
                self.save_state(service.state)


def create_pcs(
    directory: str | os.PathLike[str],
    *,
    qe_mrsigner: bytes,
    qe_isvsvn: int = 0,
    qe_isvprodid: int = 1,
    qe_attributes: bytes | None = None,
    baseline: PlatformTcb | None = None,
    ca: PckCa = PckCa.PROCESSOR,
    fmspc: bytes | None = None,
    now: dt.datetime | None = None,
    seed: bytes | None = None,
) -> PcsStore:
    """Create a new PCS in ``directory`` (what ``sgxemu init`` does) and return its store.

    The PKI comes from ``seed`` (default: 32 fresh random bytes, not kept); the platform gets a
    random PPID and, unless given, an FMSPC of the form ``00xxxxxx0000``. The QE Identity names
    ``qe_mrsigner`` (the emulated vendor's signer of the QE) and ``qe_isvprodid``, with
    ``qe_isvsvn`` and above UpToDate; its ATTRIBUTES are Intel's (``qe_attributes`` replaces
    the expected value, always under Intel's mask, which ignores MODE64BIT and XFRM): a QE
    matches them when launched non-debug with INIT and PROVISIONKEY, as Intel's QE3.
    ``baseline`` (default: all zero, so that every platform starts UpToDate) is the first TCB
    level; :meth:`~sgx_quoting.pcs.ProvisioningCertificationService.tcb_recovery`
    later raises the bar above every registered platform.
    """
    seed = secrets.token_bytes(32) if seed is None else seed
    start = utc_seconds(now if now is not None else system_now())
    platform = PlatformProfile.for_ca(
        ca,
        fmspc=fmspc if fmspc is not None else b"\x00" + secrets.token_bytes(3) + bytes(2),
        ppid=secrets.token_bytes(16),
        pce_id=bytes(2),
        platform_instance_id=secrets.token_bytes(16),
    )
    state = PcsState.initial(
        platform,
        QeIdentityPolicy(mrsigner=qe_mrsigner, isvprodid=qe_isvprodid)
        if qe_attributes is None
        else QeIdentityPolicy(
            mrsigner=qe_mrsigner, isvprodid=qe_isvprodid, attributes=qe_attributes
        ),
        baseline=baseline if baseline is not None else PlatformTcb(bytes(16), 0),
        qe_isvsvn=qe_isvsvn,
        tcb_date=start,
    )
    store = PcsStore(directory)
    store.create(PcsPki.generate(seed, not_before=start), state)
    return store
