"""dcap-qvl (an independent verifier) accepts the emulated PCS's collateral.

The quote is assembled here with the ``arch.dcap`` writer from the fixture's deterministic keys:
a PCK key registered with the PCS, an attestation key, and a QE report whose REPORTDATA binds
the attestation key and which the PCK key signs. Then each scenario of the PCS (TCB recovery,
revocation, expiry) must show in dcap-qvl's verdict.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import dcap_qvl
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgx_platform.arch.attributes import AttributeFlags, Attributes
from sgx_platform.arch.dcap.collateral import QuoteCollateralV3
from sgx_platform.arch.dcap.ecdsa import public_key_to_raw
from sgx_platform.arch.dcap.quote import (
    INTEL_QE_VENDOR_ID,
    CertificationDataType,
    PckCertChainCertificationData,
    PckLeafCertificationData,
    PpidCertificationData,
    QuoteHeader,
    build_quote_v3,
    signed_region,
)
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.report import ReportBody
from sgx_quoting.errors import PcsInputError, UnknownPlatformError
from sgx_quoting.fixtures import Fixture, fixture
from sgx_quoting.pcs import ProvisioningCertificationService
from sgx_quoting.pki import sign_raw

QE_AUTH_DATA = bytes(range(32))


def _assemble_quote(f: Fixture, pcs: ProvisioningCertificationService) -> bytes:
    attestation_key = f.attestation_key.public_key()
    raw_attestation_key = public_key_to_raw(attestation_key)
    assert isinstance(attestation_key, ec.EllipticCurvePublicKey)
    qe_report = ReportBody(
        cpusvn=f.tcb.cpusvn,
        attributes=Attributes(
            int(AttributeFlags.INIT | AttributeFlags.MODE64BIT | AttributeFlags.PROVISIONKEY),
            0xE7,
        ),
        mrenclave=Measurement(hashlib.sha256(b"the QE").digest()),
        mrsigner=Measurement(f.qe_identity.mrsigner),
        isvprodid=f.qe_identity.isvprodid,
        isvsvn=f.qe_svn,
        report_data=hashlib.sha256(raw_attestation_key + QE_AUTH_DATA).digest() + bytes(32),
    )
    isv_report = ReportBody(
        cpusvn=f.tcb.cpusvn,
        attributes=Attributes(int(AttributeFlags.INIT | AttributeFlags.MODE64BIT), 0x3),
        mrenclave=Measurement(hashlib.sha256(b"an application enclave").digest()),
        mrsigner=Measurement(hashlib.sha256(b"its signer").digest()),
        isvprodid=3,
        isvsvn=2,
        report_data=b"challenge".ljust(64, b"\x00"),
    )
    header = QuoteHeader.for_v3(qe_svn=f.qe_svn, pce_svn=f.tcb.pcesvn)
    assert header.qe_vendor_id == bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
    assert header.qe_vendor_id == INTEL_QE_VENDOR_ID
    chain = pcs.select_pck(f.tcb, pce_id=f.platform.pce_id)
    quote = build_quote_v3(
        header=header,
        isv_report=isv_report,
        signature=sign_raw(f.attestation_key, signed_region(header, isv_report)),
        attestation_public_key=raw_attestation_key,
        qe_report=qe_report,
        qe_report_signature=sign_raw(f.pck_key, qe_report.to_bytes()),
        qe_auth_data=QE_AUTH_DATA,
        certification_data=PckCertChainCertificationData(chain.pem() + b"\x00"),
    )
    return quote.to_bytes()


def _verify(
    f: Fixture, quote: bytes, collateral: QuoteCollateralV3, at: dt.datetime
) -> dcap_qvl.VerifiedReport:
    qvl_collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral.to_json())
    return dcap_qvl.verify_with_root_ca(
        quote, qvl_collateral, f.pki.root_ca_der, int(at.timestamp())
    )


@pytest.fixture
def world() -> tuple[Fixture, ProvisioningCertificationService, bytes]:
    f = fixture()
    pcs = f.pcs()
    return f, pcs, _assemble_quote(f, pcs)


def test_up_to_date(world: tuple[Fixture, ProvisioningCertificationService, bytes]) -> None:
    f, pcs, quote = world
    report = _verify(f, quote, pcs.collateral_for_quote(quote), f.now + dt.timedelta(hours=1))
    assert report.status == "UpToDate"
    assert report.advisory_ids == []
    assert report.ppid == f.platform.ppid


def test_tcb_recovery_makes_the_platform_out_of_date(
    world: tuple[Fixture, ProvisioningCertificationService, bytes],
) -> None:
    f, pcs, quote = world
    recovery = pcs.tcb_recovery()
    report = _verify(f, quote, pcs.collateral_for_quote(quote), f.now + dt.timedelta(hours=1))
    assert report.status == "OutOfDate"
    assert report.advisory_ids == [recovery.advisory_id]


def test_revoked_pck_is_rejected(
    world: tuple[Fixture, ProvisioningCertificationService, bytes],
) -> None:
    f, pcs, quote = world
    pcs.revoke_pck()
    with pytest.raises(ValueError, match="CertRevoked"):
        _verify(f, quote, pcs.collateral_for_quote(quote), f.now + dt.timedelta(hours=1))


def test_collateral_expires(
    world: tuple[Fixture, ProvisioningCertificationService, bytes],
) -> None:
    f, pcs, quote = world
    collateral = pcs.collateral_for_quote(quote)
    next_update = collateral.signed_tcb_info.tcb_info.next_update
    last_second = next_update - dt.timedelta(seconds=1)
    assert _verify(f, quote, collateral, last_second).status == "UpToDate"
    with pytest.raises(ValueError, match="TCBInfo expired"):
        _verify(f, quote, collateral, next_update + dt.timedelta(seconds=1))


def test_clock_moved_back_issues_expired_collateral(
    world: tuple[Fixture, ProvisioningCertificationService, bytes],
) -> None:
    f, pcs, quote = world
    pcs.set_clock(offset_seconds=-31 * 24 * 3600)
    with pytest.raises(ValueError, match="expired"):
        _verify(f, quote, pcs.collateral_for_quote(quote), f.now)


def test_the_fixture_quote_is_the_one_assembled_here() -> None:
    f = fixture()
    pcs = f.pcs()
    assembled = _assemble_quote(f, pcs)
    qe_report_offset = 48 + 384 + 4 + 64 + 64
    helper = f.quote(
        isv_report=ReportBody.from_bytes(assembled[48 : 48 + 384]),
        qe_report=ReportBody.from_bytes(assembled[qe_report_offset : qe_report_offset + 384]),
        qe_auth_data=QE_AUTH_DATA,
        user_data=bytes(20),
    )
    assert helper == assembled
    default = f.quote()
    assert _verify(f, default, pcs.collateral_for_quote(default), f.now).status == "UpToDate"


def test_other_root_is_rejected(
    world: tuple[Fixture, ProvisioningCertificationService, bytes],
) -> None:
    f, pcs, quote = world
    other = fixture(b"another fixture seed", f.now)
    qvl_collateral = dcap_qvl.QuoteCollateralV3.from_json(pcs.collateral_for_quote(quote).to_json())
    with pytest.raises(ValueError):
        dcap_qvl.verify_with_root_ca(
            quote, qvl_collateral, other.pki.root_ca_der, int(f.now.timestamp())
        )


def test_quote_without_its_pck_chain_gets_it_in_the_collateral() -> None:
    """Certification data type 3 (encrypted PPID, CPUSVN, PCESVN, PCE-ID): the PCS selects the
    PCK certificate for that TCB, as a PCCS does, and dcap-qvl takes it from the collateral."""
    f = fixture()
    pcs = f.pcs()
    data = PpidCertificationData(
        CertificationDataType.PPID_RSA3072_ENCRYPTED,
        bytes(384),
        f.tcb.cpusvn,
        f.tcb.pcesvn + 1,
        f.platform.pce_id,
    )
    quote = f.quote(certification_data=data)
    collateral = pcs.collateral_for_quote(quote)
    assert collateral.pck_certificate_chain is not None
    expected = pcs.select_pck(f.tcb, pce_id=f.platform.pce_id)
    assert collateral.pck_certificate_chain.encode() == expected.pem()
    assert _verify(f, quote, collateral, f.now).status == "UpToDate"


def test_quotes_the_pcs_cannot_serve() -> None:
    f = fixture()
    pcs = f.pcs()
    unknown_ppid = PpidCertificationData(
        CertificationDataType.PPID_CLEARTEXT, bytes(16), f.tcb.cpusvn, f.tcb.pcesvn, bytes(2)
    )
    with pytest.raises(UnknownPlatformError):
        pcs.collateral_for_quote(f.quote(certification_data=unknown_ppid))
    leaf_only = PckLeafCertificationData(
        pcs.select_pck(f.tcb, pce_id=bytes(2)).leaf.public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(PcsInputError):
        pcs.collateral_for_quote(f.quote(certification_data=leaf_only))
    quote = f.quote()
    for bad in (quote[:-1], quote + b"\x01", b""):
        with pytest.raises(PcsInputError):
            pcs.collateral_for_quote(bad)
    # Trailing zero padding (fixed-size buffers) is accepted.
    assert pcs.collateral_for_quote(quote + bytes(64)) == pcs.collateral_for_quote(quote)


def test_real_intel_quotes_are_not_this_pcs_platform(real_vectors: Path) -> None:
    pcs = fixture().pcs()
    for name in ("phala-dcap-qvl/sgx_quote", "automata-dcap-attestation/sgx-v3-2025-08/quote.bin"):
        with pytest.raises(UnknownPlatformError, match="FMSPC"):
            pcs.collateral_for_quote((real_vectors / name).read_bytes())
