"""The PCS certificate hierarchy: issuance rules, determinism, negative cases."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_platform.arch.errors import SignatureError
from sgx_quoting.errors import PcsInputError
from sgx_quoting.pki import (
    ROOT_CA_NOT_AFTER,
    CertifiedKey,
    PckCa,
    PcsPki,
    Revocation,
    add_years,
    derive_private_key,
    derive_serial,
    issue_crl,
    serial_from_bytes,
    sign_raw,
    verify_raw,
)

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
SEED = b"test-pki-seed-0123456789"


@pytest.fixture(scope="module")
def pki() -> PcsPki:
    return PcsPki.generate(SEED, not_before=T0)


def test_same_seed_same_bytes_other_seed_other_keys(pki: PcsPki) -> None:
    again = PcsPki.generate(SEED, not_before=T0)
    for a, b in zip(
        (pki.root, pki.platform_ca, pki.processor_ca, pki.tcb_signing),
        (again.root, again.platform_ca, again.processor_ca, again.tcb_signing),
        strict=True,
    ):
        assert a.der == b.der
    other = PcsPki.generate(SEED + b"!", not_before=T0)
    assert other.root.der != pki.root.der
    assert other.root.private_key.private_numbers() != pki.root.private_key.private_numbers()


def test_chain_signatures_and_names(pki: PcsPki) -> None:
    root = pki.root.certificate
    root.verify_directly_issued_by(root)
    for child in (pki.platform_ca, pki.processor_ca, pki.tcb_signing):
        child.certificate.verify_directly_issued_by(root)
    assert pki.processor_ca.certificate.subject.rfc4514_string() == (
        "C=ZZ,ST=Emulated,L=Localhost,O=sgxemu,CN=sgxemu PCK Processor CA"
    )
    assert root.not_valid_after_utc == ROOT_CA_NOT_AFTER
    assert pki.platform_ca.certificate.not_valid_after_utc == add_years(T0, 15)
    assert pki.tcb_signing.certificate.not_valid_after_utc == add_years(T0, 7)


def test_ca_serial_is_its_key_identifier(pki: PcsPki) -> None:
    for ca in (pki.root, pki.platform_ca, pki.processor_ca, pki.tcb_signing):
        serial = ca.certificate.serial_number
        assert ca.key_identifier == serial.to_bytes(20, "big")
        assert 0 < serial < 1 << 159


def test_pck_issuance_and_crl(pki: PcsPki) -> None:
    key = derive_private_key(SEED, "a pck")
    cert = pki.issue_pck(PckCa.PLATFORM, key.public_key(), b"\x30\x00", serial=77, not_before=T0)
    cert.verify_directly_issued_by(pki.platform_ca.certificate)
    assert cert.not_valid_after_utc == add_years(T0, 7)
    dp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert dp[0].full_name is not None
    assert dp[0].full_name[0].value.endswith("ca=platform&encoding=der")
    der = pki.pck_crl(
        PckCa.PLATFORM,
        this_update=T0,
        next_update=T0 + dt.timedelta(days=30),
        crl_number=3,
        revoked=[Revocation(77, T0)],
    )
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(pki.platform_ca.certificate.public_key())  # type: ignore[arg-type]
    entry = crl.get_revoked_certificate_by_serial_number(77)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.key_compromise
    )
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3


def test_signing_is_deterministic_and_verifies(pki: PcsPki) -> None:
    sig = pki.sign_collateral('{"id":"QE"}')
    assert sig == pki.sign_collateral('{"id":"QE"}')
    assert len(sig) == 64
    public = pki.tcb_signing.certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    verify_raw(public, sig, b'{"id":"QE"}')
    with pytest.raises(SignatureError):
        verify_raw(public, sig, b'{"id":"QE"} ')
    with pytest.raises(SignatureError):
        verify_raw(public, sig[:63], b'{"id":"QE"}')
    assert sign_raw(pki.root.private_key, b"m") != sign_raw(pki.tcb_signing.private_key, b"m")


# -- negative cases -------------------------------------------------------------------------


def test_key_must_match_certificate(pki: PcsPki) -> None:
    with pytest.raises(PcsInputError):
        CertifiedKey(pki.root.certificate, pki.tcb_signing.private_key)


def test_serial_limits(pki: PcsPki) -> None:
    key = derive_private_key(SEED, "x").public_key()
    for bad in (0, -1, 1 << 159):
        with pytest.raises(PcsInputError):
            pki.issue_pck(PckCa.PROCESSOR, key, b"\x30\x00", serial=bad, not_before=T0)
    with pytest.raises(PcsInputError):
        serial_from_bytes(bytes(19))
    assert serial_from_bytes(bytes(20)) == 1
    assert serial_from_bytes(b"\xff" * 20) == (1 << 159) - 1
    assert derive_serial(SEED, "a") != derive_serial(SEED, "b")


def test_bad_times(pki: PcsPki) -> None:
    key = derive_private_key(SEED, "x").public_key()
    with pytest.raises(PcsInputError):
        pki.issue_pck(PckCa.PROCESSOR, key, b"\x30\x00", serial=5, not_before=T0, not_after=T0)
    with pytest.raises(PcsInputError):
        pki.issue_pck(
            PckCa.PROCESSOR, key, b"\x30\x00", serial=5, not_before=T0.replace(tzinfo=None)
        )
    with pytest.raises(PcsInputError):
        issue_crl(pki.root, this_update=T0, next_update=T0 - dt.timedelta(seconds=1))
    with pytest.raises(PcsInputError):
        issue_crl(pki.root, this_update=T0, next_update=T0 + dt.timedelta(1), crl_number=-1)


def test_pck_key_must_be_p256(pki: PcsPki) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(PcsInputError):
        pki.issue_pck(PckCa.PROCESSOR, p384, b"\x30\x00", serial=5, not_before=T0)


def test_pck_issuer_must_be_a_pck_ca(pki: PcsPki) -> None:
    from sgx_quoting.pki import issue_pck_certificate

    key = derive_private_key(SEED, "x").public_key()
    with pytest.raises(PcsInputError):
        issue_pck_certificate(
            pki.tcb_signing, key, b"\x30\x00", serial=5, not_before=T0, not_after=add_years(T0, 1)
        )


def test_short_seed_and_ca_names() -> None:
    with pytest.raises(PcsInputError):
        PcsPki.generate(b"short", not_before=T0)
    with pytest.raises(PcsInputError):
        PckCa.parse("root")
    assert PckCa.parse("Processor") is PckCa.PROCESSOR


def test_leap_day_years() -> None:
    leap = dt.datetime(2024, 2, 29, 12, tzinfo=dt.UTC)
    assert add_years(leap, 7) == dt.datetime(2031, 2, 28, 12, tzinfo=dt.UTC)


def test_root_der_is_the_root_certificate(pki: PcsPki) -> None:
    assert x509.load_der_x509_certificate(pki.root_ca_der) == pki.root.certificate
    chain = pki.tcb_issuer_chain_pem().encode()
    certs = x509.load_pem_x509_certificates(chain)
    assert [c.subject for c in certs] == [
        pki.tcb_signing.certificate.subject,
        pki.root.certificate.subject,
    ]
    assert pki.root.pem.encode() == pki.root.certificate.public_bytes(serialization.Encoding.PEM)
