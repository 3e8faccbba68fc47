"""Fixtures for the verifier's tests: a tiny deterministic PKI for certificate and CRL checks,
and loaders for the real DCAP vector sets.

The PKI uses fixed private scalars, fixed dates and serials and deterministic ECDSA, so every
run builds the same bytes.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import core as asn1_core
from asn1crypto import crl as asn1_crl
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

DETERMINISTIC = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def utc(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


def key(seed: int) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(0x5EED0000 + seed, ec.SECP256R1())


def name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sgxemu tests"),
        ]
    )


@dataclass
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(Encoding.PEM)


@dataclass
class MiniPki:
    """Builds certificates and CRLs; every argument that matters for a check is explicit."""

    serial: int = field(default=100)

    def issue(
        self,
        subject: str,
        *,
        seed: int,
        issuer: Issued | None = None,
        ca: bool | None = True,
        path_length: int | None = None,
        key_cert_sign: bool = True,
        digital_signature: bool = False,
        key_usage: bool = True,
        not_before: dt.datetime = T0,
        not_after: dt.datetime = T0 + dt.timedelta(days=3650),
        serial: int | None = None,
        issuer_name: x509.Name | None = None,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> Issued:
        own = key(seed)
        self.serial += 1
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(
                issuer_name
                if issuer_name is not None
                else (issuer.cert.subject if issuer else name(subject))
            )
            .public_key(own.public_key())
            .serial_number(serial if serial is not None else self.serial)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        if ca is not None:
            builder = builder.add_extension(
                x509.BasicConstraints(ca=ca, path_length=path_length), critical=True
            )
        if key_usage:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=digital_signature,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=key_cert_sign,
                    crl_sign=key_cert_sign,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        signer = signing_key or (issuer.key if issuer else own)
        return Issued(builder.sign(signer, hashes.SHA256(), ecdsa_deterministic=True), own)

    def leaf(self, subject: str, *, seed: int, issuer: Issued, **kw: Any) -> Issued:
        kw.setdefault("ca", False)
        kw.setdefault("key_cert_sign", False)
        kw.setdefault("digital_signature", True)
        return self.issue(subject, seed=seed, issuer=issuer, **kw)

    @staticmethod
    def crl(
        issuer: Issued,
        *,
        revoked: tuple[int, ...] = (),
        this_update: dt.datetime = T0,
        next_update: dt.datetime | None = T0 + dt.timedelta(days=30),
        signing_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.cert.subject)
            .last_update(this_update)
            .next_update(next_update or this_update)
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(this_update)
                .build()
            )
        signer = signing_key or issuer.key
        der = builder.sign(signer, hashes.SHA256(), ecdsa_deterministic=True).public_bytes(
            Encoding.DER
        )
        if next_update is not None:
            return der
        # cryptography cannot build a CRL without nextUpdate; drop it and re-sign.
        parsed = asn1_crl.CertificateList.load(der)
        tbs = parsed["tbs_cert_list"]
        tbs["next_update"] = None
        tbs_der = tbs.dump(force=True)
        parsed["signature"] = asn1_core.OctetBitString(signer.sign(tbs_der, DETERMINISTIC))
        return bytes(parsed.dump(force=True))


@pytest.fixture
def mini_pki() -> MiniPki:
    return MiniPki()


@pytest.fixture(scope="session")
def vector_sets(real_vectors: Path) -> dict[str, Any]:
    sets: dict[str, Any] = json.loads((real_vectors / "sets.json").read_text())
    return sets


# ---------------------------------------------------------------------------------------------
# Real vector sets (sets.json) as the verifier's Collateral and as dcap-qvl's oracle input


class RealSets:
    """Quotes and collateral of ``sets.json``, in the verifier's and in dcap-qvl's form."""

    def __init__(self, root: Path, sets: dict[str, Any]) -> None:
        self.root = root
        self.by_id = {s["id"]: s for s in sets["quote_sets"]}
        self.intel_root_der = (root / "intel-root" / "Intel_SGX_Root_CA_2049.der").read_bytes()

    def read(self, rel: str) -> bytes:
        return (self.root / rel.split(" ")[0]).read_bytes()

    def quote(self, set_id: str) -> bytes:
        return self.read(self.by_id[set_id]["quote"])

    def collateral(self, set_id: str, tcb_index: int = 0) -> Any:
        from sgx_verifier.collateral import (
            Collateral,
            read_certificates,
            read_crl,
            read_signed_item,
        )

        spec = self.by_id[set_id]["collateral"]
        if "reuse" in spec["format"]:
            return self.collateral(spec["format"].split()[1], tcb_index)
        if "file" in spec:
            return Collateral.from_json(self.read(spec["file"]))
        signer = b""
        if "tcb_signing_cert" in spec:
            signer = read_certificates(self.read(spec["tcb_signing_cert"]), "TCB signer")
        tcb = spec["tcb_info"]
        qe = spec["qe_identity"]
        tcb = tcb[tcb_index] if isinstance(tcb, list) else tcb
        qe = qe[tcb_index] if isinstance(qe, list) else qe
        pck_crl, pck_crl_chain = read_crl(self.read(spec["pck_crl"]), "PCK CRL")
        root_crl, _ = read_crl(self.read(spec["root_ca_crl"]), "root CRL")
        if pck_crl_chain is None and "pck_ca" in spec:
            pck_crl_chain = read_certificates(self.read(spec["pck_ca"]), "PCK CA")
        return Collateral(
            tcb_info=read_signed_item(self.read(tcb), "tcbInfo", signer),
            qe_identity=read_signed_item(self.read(qe), "enclaveIdentity", signer),
            pck_crl=pck_crl,
            root_ca_crl=root_crl,
            pck_crl_issuer_chain=pck_crl_chain,
        )

    @staticmethod
    def oracle(collateral: Any) -> Any:
        """dcap-qvl's collateral object for the same bytes."""
        import dcap_qvl

        tcb, qe = collateral.tcb_info, collateral.qe_identity
        return dcap_qvl.QuoteCollateralV3(
            (collateral.pck_crl_issuer_chain or tcb.issuer_chain).decode(),
            collateral.root_ca_crl,
            collateral.pck_crl,
            tcb.issuer_chain.decode(),
            tcb.text,
            tcb.signature,
            qe.issuer_chain.decode(),
            qe.text,
            qe.signature,
        )


@pytest.fixture(scope="session")
def real_sets(real_vectors: Path, vector_sets: dict[str, Any]) -> RealSets:
    return RealSets(real_vectors, vector_sets)


@dataclass(frozen=True)
class Outcome:
    """What a verifier decided, in the terms both sgxemu and dcap-qvl can express.

    ``accepted`` is dcap-qvl's "returned a report": for sgxemu, a verified verdict whose status
    is not Revoked and whose enclave is not in debug mode (dcap-qvl refuses both outright,
    sgxemu verifies and leaves them to policy). ``revoked`` marks dcap-qvl's "TCB status is
    invalid: Revoked" refusal, which sgxemu must match with a verified Revoked status.
    """

    accepted: bool
    status: str | None = None
    advisory_ids: tuple[str, ...] = ()
    revoked: bool = False
    detail: str = ""


def qvl_outcome(quote: bytes, oracle_collateral: Any, root_der: bytes, at: int) -> Outcome:
    import dcap_qvl

    try:
        report = dcap_qvl.verify_with_root_ca(quote, oracle_collateral, root_der, at)
    except ValueError as e:
        text = str(e)
        revoked = "TCB status is invalid: Revoked" in text or "below minimum" in text
        return Outcome(False, revoked=revoked, detail=text)
    return Outcome(True, report.status, tuple(report.advisory_ids))


def our_outcome(verdict: Any) -> Outcome:
    if not verdict.verified:
        return Outcome(False, detail=",".join(f"{f.check}:{f.code}" for f in verdict.failures))
    if verdict.tcb_status.value == "Revoked":
        return Outcome(False, revoked=True, detail="verified, Revoked")
    if verdict.enclave is not None and verdict.enclave.debug:
        return Outcome(False, detail="verified, debug enclave")
    return Outcome(True, verdict.tcb_status.value, tuple(verdict.advisory_ids))


@pytest.fixture(scope="session")
def outcomes() -> tuple[Any, Any]:
    return qvl_outcome, our_outcome
