"""Deterministic PCS test material: a fixture PKI, platform, PCS state, quote and collateral.

Everything comes from :data:`FIXTURE_SEED` with fixed dates: keys by
:func:`~sgx_quoting.pki.derive_private_key`, serials by hashing, signatures by deterministic
ECDSA (RFC 6979). :func:`write_fixtures` writes the whole set into a directory and
``tests/quoting/test_fixtures.py`` checks that regenerating reproduces the committed files
(``tests/fixtures/pcs/``) byte for byte.

The verifier's tests build their per-check vectors from :func:`fixture`: it returns a
:class:`Fixture` holding the PKI keys and offering the operations a vector needs (issue a PCK
certificate with chosen values, sign arbitrary TCB Info or QE Identity text, make a CRL with
chosen dates and serials, assemble and sign a quote).

Invariant: this module reads no file, no clock and no randomness; equal arguments give equal
bytes. Only :func:`write_fixtures` (and ``python -m sgx_quoting.fixtures DIR``) writes files.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_platform.arch.attributes import AttributeFlags, Attributes
from sgx_platform.arch.dcap.ecdsa import public_key_to_raw
from sgx_platform.arch.dcap.pck import SgxType
from sgx_platform.arch.dcap.quote import (
    PckCertChainCertificationData,
    PckCertificationData,
    QuoteHeader,
    build_quote_v3,
    qe_report_data,
    signed_region,
)
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.report import ReportBody
from sgx_quoting.pcs import (
    PcsState,
    PlatformProfile,
    PlatformTcb,
    ProvisioningCertificationService,
    QeIdentityPolicy,
    sgx_extension,
)
from sgx_quoting.pki import (
    PckCa,
    PcsPki,
    Revocation,
    add_years,
    derive_private_key,
    derive_serial,
    sign_raw,
)

FIXTURE_SEED = b"sgxemu fixture PCS, version 1"
#: The PKI's notBefore.
PKI_NOT_BEFORE = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
#: The PCS clock of the fixture (frozen): registration and collateral issue time.
FIXTURE_NOW = dt.datetime(2025, 6, 1, 12, 0, 0, tzinfo=dt.UTC)
#: The date of the fixture's first TCB level.
TCB_DATE = dt.datetime(2025, 3, 12, tzinfo=dt.UTC)

FIXTURE_FMSPC = bytes.fromhex("00A0EE000000")
FIXTURE_PCE_ID = bytes(2)
#: The platform's TCB: CPUSVN (= the 16 SGX TCB components) and PCESVN.
FIXTURE_TCB = PlatformTcb(
    cpusvn=bytes([12, 12, 3, 3, 255, 255, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]), pcesvn=13
)
FIXTURE_QE_SVN = 8
#: A non-debug, 64-bit ISV enclave (INIT | MODE64BIT, XFRM x87 | SSE).
ISV_ATTRIBUTES = Attributes(int(AttributeFlags.INIT | AttributeFlags.MODE64BIT), 0x3)
#: The QE's attributes: INIT | MODE64BIT | PROVISIONKEY (Intel's QE Identity masks MODE64BIT).
QE_ATTRIBUTES = Attributes(
    int(AttributeFlags.INIT | AttributeFlags.MODE64BIT | AttributeFlags.PROVISIONKEY), 0xE7
)


#: The QE authentication data Intel's QE3 writes: bytes 0, 1, ..., 31.
QE_AUTH_DATA = bytes(range(32))


def _derived(seed: bytes, label: str, size: int) -> bytes:
    return hashlib.sha256(b"sgxemu-fixture\x00" + seed + b"\x00" + label.encode()).digest()[:size]


CrlIssuer = Literal["root"] | PckCa


@dataclass(frozen=True)
class Fixture:
    """The fixture world: PKI, platform, QE identity, the platform's keys, fixed times."""

    seed: bytes
    now: dt.datetime
    pki: PcsPki
    platform: PlatformProfile
    tcb: PlatformTcb
    qe_identity: QeIdentityPolicy
    qe_svn: int
    #: The PCK key of the platform at :attr:`tcb` (registered by :meth:`pcs`).
    pck_key: ec.EllipticCurvePrivateKey
    #: The quoting enclave's attestation key.
    attestation_key: ec.EllipticCurvePrivateKey

    # -- the PCS -----------------------------------------------------------------------------

    def state(self) -> PcsState:
        """The PCS state before registration: :attr:`tcb` and QE SVN :attr:`qe_svn` UpToDate."""
        return PcsState.initial(
            self.platform,
            self.qe_identity,
            baseline=self.tcb,
            qe_isvsvn=self.qe_svn,
            tcb_date=TCB_DATE,
        )

    def pcs(self, *, register: bool = True) -> ProvisioningCertificationService:
        """A PCS on the fixture PKI with its clock frozen at :attr:`now`; by default the
        platform's PCK key is already registered for :attr:`tcb`."""
        service = ProvisioningCertificationService(self.pki, self.state(), system_clock=self.clock)
        service.set_clock(frozen_at=self.now)
        if register:
            service.register_pck(
                public_key_to_raw(self.pck_key.public_key()), self.tcb, pce_id=self.platform.pce_id
            )
        return service

    def clock(self) -> dt.datetime:
        return self.now

    # -- building blocks for vectors ---------------------------------------------------------

    def sign_text(self, text: str) -> bytes:
        """Sign arbitrary TCB Info or QE Identity text with the TCB Signing key (r||s)."""
        return self.pki.sign_collateral(text)

    def issue_pck(
        self,
        public_key: ec.EllipticCurvePublicKey | None = None,
        *,
        tcb: PlatformTcb | None = None,
        fmspc: bytes | None = None,
        pce_id: bytes | None = None,
        ppid: bytes | None = None,
        ca: PckCa | None = None,
        sgx_type: SgxType | None = None,
        serial: int | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        sgx_extension_der: bytes | None = None,
    ) -> x509.Certificate:
        """A PCK certificate with chosen values (default: the platform's own at :attr:`tcb`).

        ``sgx_extension_der`` replaces the whole extension value (for malformed vectors).
        """
        platform = self.platform
        chosen_ca = ca if ca is not None else platform.ca
        platform = replace(
            platform,
            fmspc=fmspc if fmspc is not None else platform.fmspc,
            pce_id=pce_id if pce_id is not None else platform.pce_id,
            ppid=ppid if ppid is not None else platform.ppid,
        )
        if chosen_ca is not platform.ca:
            platform = PlatformProfile.for_ca(
                chosen_ca,
                fmspc=platform.fmspc,
                ppid=platform.ppid,
                pce_id=platform.pce_id,
                platform_instance_id=_derived(self.seed, "platform-instance-id", 16),
            )
        if sgx_type is not None:
            platform = replace(platform, sgx_type=sgx_type)
        extension = (
            sgx_extension_der
            if sgx_extension_der is not None
            else sgx_extension(platform, tcb if tcb is not None else self.tcb).to_der()
        )
        start = not_before if not_before is not None else self.now
        return self.pki.issue_pck(
            chosen_ca,
            (public_key if public_key is not None else self.pck_key.public_key()),
            extension,
            serial=serial if serial is not None else derive_serial(self.seed, "pck-extra"),
            not_before=start,
            not_after=not_after if not_after is not None else add_years(start, 7),
        )

    def crl(
        self,
        issuer: CrlIssuer,
        *,
        this_update: dt.datetime | None = None,
        next_update: dt.datetime | None = None,
        revoked: tuple[int, ...] = (),
        crl_number: int = 1,
    ) -> bytes:
        """A CRL (DER) by the root or a PCK CA with chosen dates and revoked serials."""
        start = this_update if this_update is not None else self.now
        end = next_update if next_update is not None else start + dt.timedelta(days=30)
        entries = [Revocation(serial, start) for serial in revoked]
        if issuer == "root":
            return self.pki.root_crl(
                this_update=start, next_update=end, crl_number=crl_number, revoked=entries
            )
        return self.pki.pck_crl(
            PckCa(issuer),
            this_update=start,
            next_update=end,
            crl_number=crl_number,
            revoked=entries,
        )

    def isv_report(self, *, report_data: bytes = bytes(64), debug: bool = False) -> ReportBody:
        """A production (or, with ``debug``, debug) ISV enclave report body at :attr:`tcb`."""
        flags = ISV_ATTRIBUTES.flags | (int(AttributeFlags.DEBUG) if debug else 0)
        return ReportBody(
            cpusvn=self.tcb.cpusvn,
            attributes=Attributes(flags, ISV_ATTRIBUTES.xfrm),
            mrenclave=Measurement(_derived(self.seed, "isv-mrenclave", 32)),
            mrsigner=Measurement(_derived(self.seed, "isv-mrsigner", 32)),
            isvprodid=1,
            isvsvn=1,
            report_data=report_data,
        )

    def qe_report(self, qe_auth_data: bytes = QE_AUTH_DATA) -> ReportBody:
        """The QE report body matching :attr:`qe_identity`, bound to the attestation key."""
        return ReportBody(
            cpusvn=self.tcb.cpusvn,
            attributes=QE_ATTRIBUTES,
            mrenclave=Measurement(_derived(self.seed, "qe-mrenclave", 32)),
            mrsigner=Measurement(self.qe_identity.mrsigner),
            isvprodid=self.qe_identity.isvprodid,
            isvsvn=self.qe_svn,
            report_data=qe_report_data(
                public_key_to_raw(self.attestation_key.public_key()), qe_auth_data
            ),
        )

    def quote(
        self,
        *,
        isv_report: ReportBody | None = None,
        qe_report: ReportBody | None = None,
        qe_auth_data: bytes = QE_AUTH_DATA,
        certification_data: PckCertificationData | None = None,
        pck_key: ec.EllipticCurvePrivateKey | None = None,
        attestation_key: ec.EllipticCurvePrivateKey | None = None,
        user_data: bytes | None = None,
    ) -> bytes:
        """An SGX quote v3 as Intel's QE3 writes it, signed by the fixture keys.

        The default certification data is type 5 with the PCK chain (leaf, CA, root, then a
        NUL) of :meth:`pcs`; the QE report is signed by ``pck_key`` and the quote by
        ``attestation_key`` whatever the reports say, so a vector can break one thing only.
        The header's user data defaults to 16 bytes of "QE ID" and 4 zero bytes, as QE3's.
        """
        att = attestation_key if attestation_key is not None else self.attestation_key
        pck = pck_key if pck_key is not None else self.pck_key
        isv = isv_report if isv_report is not None else self.isv_report()
        qe = qe_report if qe_report is not None else self.qe_report(qe_auth_data)
        if certification_data is None:
            chain = self.pcs().select_pck(self.tcb, pce_id=self.platform.pce_id)
            certification_data = PckCertChainCertificationData(chain.pem() + b"\x00")
        header = QuoteHeader.for_v3(
            qe_svn=self.qe_svn,
            pce_svn=self.tcb.pcesvn,
            user_data=(
                user_data
                if user_data is not None
                else _derived(self.seed, "qe-user-data", 16) + bytes(4)
            ),
        )
        quote = build_quote_v3(
            header=header,
            isv_report=isv,
            signature=sign_raw(att, signed_region(header, isv)),
            attestation_public_key=public_key_to_raw(att.public_key()),
            qe_report=qe,
            qe_report_signature=sign_raw(pck, qe.to_bytes()),
            qe_auth_data=qe_auth_data,
            certification_data=certification_data,
        )
        return quote.to_bytes()


@functools.cache
def fixture(seed: bytes = FIXTURE_SEED, now: dt.datetime = FIXTURE_NOW) -> Fixture:
    """The fixture world for ``seed`` (cached: the PKI is built once per seed)."""
    return Fixture(
        seed=seed,
        now=now,
        pki=PcsPki.generate(seed, not_before=PKI_NOT_BEFORE),
        platform=PlatformProfile(
            fmspc=FIXTURE_FMSPC,
            ppid=_derived(seed, "ppid", 16),
            pce_id=FIXTURE_PCE_ID,
            ca=PckCa.PROCESSOR,
        ),
        tcb=FIXTURE_TCB,
        qe_identity=QeIdentityPolicy(mrsigner=_derived(seed, "qe-mrsigner", 32)),
        qe_svn=FIXTURE_QE_SVN,
        pck_key=derive_private_key(seed, "platform-pck"),
        attestation_key=derive_private_key(seed, "attestation-key"),
    )


def _json(document: object) -> bytes:
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def _time(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def fixture_files(f: Fixture | None = None) -> dict[str, bytes]:
    """The committed fixture set (``tests/fixtures/pcs/``) as file name -> bytes.

    * ``root_ca.der``, ``pck_platform_ca.der``, ``pck_processor_ca.der``, ``tcb_signing.der``;
    * ``pck_cert_chain.pem``: the platform's PCK certificate, its CA and the root;
    * ``root_ca_crl.der``, ``pck_processor_crl.der``, ``pck_platform_crl.der`` (nothing revoked);
    * ``tcb_info.json``, ``qe_identity.json``: Intel PCS response bodies (signed text + r||s);
    * ``quote.bin``: an SGX quote v3 of the platform (:meth:`Fixture.quote`);
    * ``collateral.json`` (UpToDate), ``collateral_tcb_recovery.json`` (OutOfDate with
      SGXEMU-SA-00001) and ``collateral_revoked.json`` (the PCK certificate revoked): dcap-qvl
      QuoteCollateralV3 for ``quote.bin``, indented as in dcap-qvl's samples;
    * ``manifest.json``: the parameters, the expected verdicts and the SHA-256 of each file.
    """
    f = fixture() if f is None else f
    pcs = f.pcs()
    quote = f.quote()
    chain = pcs.select_pck(f.tcb, pce_id=f.platform.pce_id)
    tcb_info = pcs.tcb_info()
    qe_identity = pcs.qe_identity()
    files: dict[str, bytes] = {
        "root_ca.der": f.pki.root.der,
        "pck_platform_ca.der": f.pki.platform_ca.der,
        "pck_processor_ca.der": f.pki.processor_ca.der,
        "tcb_signing.der": f.pki.tcb_signing.der,
        "pck_cert_chain.pem": chain.pem(),
        "root_ca_crl.der": pcs.root_ca_crl(),
        "pck_processor_crl.der": pcs.pck_crl(PckCa.PROCESSOR),
        "pck_platform_crl.der": pcs.pck_crl(PckCa.PLATFORM),
        "tcb_info.json": tcb_info.to_response_body().encode("utf-8"),
        "qe_identity.json": qe_identity.to_response_body().encode("utf-8"),
        "quote.bin": quote,
    }
    collateral = pcs.collateral_for_quote(quote)
    files["collateral.json"] = collateral.to_json(indent=2, trailing_newline=True).encode()
    recovered = f.pcs()
    recovery = recovered.tcb_recovery()
    files["collateral_tcb_recovery.json"] = (
        recovered.collateral_for_quote(quote).to_json(indent=2, trailing_newline=True).encode()
    )
    revoked = f.pcs()
    revoked.revoke_pck()
    files["collateral_revoked.json"] = (
        revoked.collateral_for_quote(quote).to_json(indent=2, trailing_newline=True).encode()
    )
    next_update = tcb_info.tcb_info.next_update
    manifest = {
        "description": "sgxemu emulated PCS fixtures; regenerate with "
        "`python -m sgx_quoting.fixtures tests/fixtures/pcs`",
        "seed": f.seed.decode("ascii", "backslashreplace"),
        "pki_not_before": _time(PKI_NOT_BEFORE),
        "issued_at": _time(f.now),
        "valid_until": _time(next_update - dt.timedelta(seconds=1)),
        "suggested_now": int(f.now.timestamp()),
        "fmspc": f.platform.fmspc.hex().upper(),
        "pce_id": f.platform.pce_id.hex().upper(),
        "ppid": f.platform.ppid.hex(),
        "pck_ca": f.platform.ca.value,
        "cpusvn": f.tcb.cpusvn.hex(),
        "pcesvn": f.tcb.pcesvn,
        "qe_svn": f.qe_svn,
        "qe_mrsigner": f.qe_identity.mrsigner.hex().upper(),
        "pck_serial": format(chain.leaf.serial_number, "X"),
        "expected": {
            "collateral.json": {"tcb_status": "UpToDate", "advisory_ids": []},
            "collateral_tcb_recovery.json": {
                "tcb_status": "OutOfDate",
                "advisory_ids": [recovery.advisory_id],
            },
            "collateral_revoked.json": {"error": "the PCK certificate is revoked"},
        },
        "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
    }
    files["manifest.json"] = _json(manifest)
    return files


def write_fixtures(directory: str | os.PathLike[str]) -> list[Path]:
    """Write :func:`fixture_files` into ``directory`` (created if needed)."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in fixture_files().items():
        (target / name).write_bytes(data)
        written.append(target / name)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m sgx_quoting.fixtures DIRECTORY``: regenerate the committed fixtures."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m sgx_quoting.fixtures DIRECTORY\n")
        return 64
    for path in write_fixtures(args[0]):
        sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
