"""SIGSTRUCT: real vectors, RSA known answers, signing, and every verification failure."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sgx_platform.arch.attributes import AttributeFlags, Attributes
from sgx_platform.arch.errors import MalformedStructureError, SignatureError
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.signing import (
    DEFAULT_ATTRIBUTE_MASK,
    check_signing_key,
    generate_signing_key,
    mrsigner_of_public_key,
    sign_sigstruct,
    signing_attributes,
)
from sgx_platform.arch.sigstruct import (
    Sigstruct,
    SigstructSignatureError,
    bcd_date,
    compute_q1_q2,
    pkcs1v15_sha256_encoding,
)

SIGDIR = ("fortanix-rust-sgx", "sigstruct")
DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def _le(raw: bytes) -> int:
    return int.from_bytes(raw, "little")


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_signing_key()


@pytest.fixture(scope="module")
def signed(key: rsa.RSAPrivateKey) -> Sigstruct:
    return sign_sigstruct(
        key,
        Measurement(hashlib.sha256(b"enclave").digest()),
        isvprodid=0x1234,
        isvsvn=7,
        date=datetime.date(2024, 2, 29),
    )


# -- real vectors -----------------------------------------------------------------------------


def test_test_enclave_sig(real_vectors: Path) -> None:
    raw = real_vectors.joinpath(*SIGDIR, "test_enclave.sig").read_bytes()
    sig = Sigstruct.from_bytes(raw)
    assert sig.to_bytes() == raw
    sig.verify()
    assert sig.mrsigner.hex() == "fb4bab3d6036ac1d730fa83d7366df1dd2dfeac194ef335d6854d8a6c6475542"
    assert sig.mrenclave.hex() == "784acfd7d5096a8f0fbd3265760bff21b120f62407a9a9e5ba31aa3c8ed198fc"
    assert (sig.vendor, sig.date, sig.swdefined) == (0, 0x20161214, 0)
    assert (sig.miscselect, sig.miscmask) == (0, 0xFFFFFFFF)
    assert sig.attributes == Attributes(0x4, 0x3)
    assert sig.attribute_mask == Attributes(0xFFFFFFFFFFFFFFFD, 0xFFFFFFFFFFFFFF1B)
    assert (sig.isvprodid, sig.isvsvn) == (0xFFFF, 0)
    # Our default mask is the one Intel's tool wrote here.
    assert DEFAULT_ATTRIBUTE_MASK == sig.attribute_mask


def test_sig1_sigstruct_verifies_with_its_own_q1_q2(real_vectors: Path) -> None:
    raw = real_vectors.joinpath(*SIGDIR, "sig1.sigstruct.bin").read_bytes()
    sig = Sigstruct.from_bytes(raw)
    assert sig.to_bytes() == raw
    sig.verify()
    assert sig.mrsigner.hex() == "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"
    assert sig.mrenclave.hex() == "c50673624a6cb17c1c6c2a4e6906f47a170c4629b8723781d1017ef376f1a75d"
    assert (sig.date, sig.isvprodid, sig.isvsvn) == (0x20160109, 0, 0)
    n, s = _le(sig.modulus), _le(sig.signature)
    assert (_le(sig.q1), _le(sig.q2)) == compute_q1_q2(s, n)


def test_rsa_known_answers(real_vectors: Path) -> None:
    """sig1.{key_n,data,sig,q1,q2}.bin: little-endian integers; data is the SHA-256 digest."""
    read = lambda name: real_vectors.joinpath(*SIGDIR, f"sig1.{name}.bin").read_bytes()  # noqa: E731
    n, s, q1, q2 = (_le(read(x)) for x in ("key_n", "sig", "q1", "q2"))
    digest = read("data")
    assert len(digest) == 32 and n.bit_length() == 3072
    # Independent: EMSA-PKCS1-v1_5 written out here.
    em = b"\x00\x01" + b"\xff" * (384 - 3 - 19 - 32) + b"\x00" + DIGEST_INFO + digest
    assert pow(s, 3, n).to_bytes(384, "big") == em
    assert pkcs1v15_sha256_encoding(digest) == em
    assert q1 == s * s // n and q2 == (s**3 - q1 * s * n) // n
    assert compute_q1_q2(s, n) == (q1, q2)
    # Same key as sig1.sigstruct.bin.
    assert (
        read("key_n") == real_vectors.joinpath(*SIGDIR, "sig1.sigstruct.bin").read_bytes()[128:512]
    )


# -- signing ----------------------------------------------------------------------------------


def test_signed_sigstruct_verifies_independently(key: rsa.RSAPrivateKey, signed: Sigstruct) -> None:
    raw = signed.to_bytes()
    assert len(raw) == 1808 and Sigstruct.from_bytes(raw) == signed
    signed.verify()
    n = key.public_key().public_numbers().n
    assert raw[128:512] == n.to_bytes(384, "little")
    assert int.from_bytes(raw[512:516], "little") == 3
    s_le = raw[516:900]
    key.public_key().verify(
        s_le[::-1], raw[0:128] + raw[900:1028], padding.PKCS1v15(), hashes.SHA256()
    )
    s = int.from_bytes(s_le, "little")
    q1 = s * s // n
    assert raw[1040:1424] == q1.to_bytes(384, "little")
    assert raw[1424:1808] == ((s**3 - q1 * s * n) // n).to_bytes(384, "little")
    assert signed.mrsigner.value == hashlib.sha256(n.to_bytes(384, "little")).digest()
    assert (
        signed.mrsigner == mrsigner_of_public_key(key.public_key()) == mrsigner_of_public_key(key)
    )
    assert (signed.isvprodid, signed.isvsvn, signed.date, signed.vendor) == (
        0x1234,
        7,
        0x20240229,
        0,
    )
    assert signed.attributes == Attributes(int(AttributeFlags.MODE64BIT), 3)
    assert signed.miscmask == 0xFFFFFFFF


def test_signature_covers_exactly_the_signed_fields(
    key: rsa.RSAPrivateKey, signed: Sigstruct
) -> None:
    raw = bytearray(signed.to_bytes())
    raw[1424] ^= 1  # Q2 is not signed: the RSA signature itself still verifies
    Sigstruct.from_bytes(bytes(raw)).verify_signature()
    for pos in (16, 20, 40, 900, 904, 928, 944, 960, 1008, 1024, 1026):
        bad = bytearray(signed.to_bytes())
        bad[pos] ^= 1
        with pytest.raises(SigstructSignatureError) as err:
            Sigstruct.from_bytes(bytes(bad)).verify_signature()
        assert err.value.check == "signature"


def test_debug_masks() -> None:
    attrs, mask = signing_attributes()
    assert not mask.flags & AttributeFlags.DEBUG and not attrs.flags & AttributeFlags.DEBUG
    attrs, mask = signing_attributes(no_debug=True)
    assert mask.flags & AttributeFlags.DEBUG and not attrs.flags & AttributeFlags.DEBUG
    assert mask.xfrm == 0xFFFFFFFFFFFFFF1B
    launch_debug = Attributes(attrs.flags | AttributeFlags.DEBUG, attrs.xfrm)
    assert launch_debug & mask != attrs & mask  # EINIT's check would fail for a debug launch
    default_attrs, default_mask = signing_attributes()
    assert launch_debug & default_mask == default_attrs & default_mask


def test_bcd_date() -> None:
    assert bcd_date(2016, 12, 14) == 0x20161214
    with pytest.raises(MalformedStructureError):
        bcd_date(2016, 13, 1)


# -- verification failures, each distinct ------------------------------------------------------


def _tampered(sig: Sigstruct, **changes: object) -> Sigstruct:
    return dataclasses.replace(sig, **changes)  # type: ignore[arg-type]


def test_tampered_signature_q1_q2_fail_their_own_check(signed: Sigstruct) -> None:
    flip = lambda b: bytes([b[0] ^ 1]) + b[1:]  # noqa: E731
    cases = {
        "signature": _tampered(signed, signature=flip(signed.signature)),
        "q1": _tampered(signed, q1=flip(signed.q1)),
        "q2": _tampered(signed, q2=flip(signed.q2)),
    }
    messages = set()
    for check, sig in cases.items():
        with pytest.raises(SigstructSignatureError) as err:
            sig.verify()
        assert err.value.check == check
        assert isinstance(err.value, SignatureError)
        messages.add(str(err.value))
    assert len(messages) == 3
    # Q1 and Q2 are judged separately: a bad Q1 does not make Q2 fail, nor the other way.
    cases["q2"].verify_q1()
    cases["q1"].verify_q2()
    cases["q1"].verify_signature()


def test_signature_not_below_modulus(signed: Sigstruct) -> None:
    with pytest.raises(SigstructSignatureError, match="not below"):
        _tampered(signed, signature=signed.modulus).verify()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"exponent": 65537}, "EXPONENT"),
        ({"exponent": 0}, "EXPONENT"),
        ({"vendor": 0x8087}, "VENDOR"),
        ({"modulus": bytes(384)}, "MODULUS"),
        ({"modulus": b"\x02" + bytes(382) + b"\x80"}, "MODULUS"),  # even
        ({"modulus": b"\x01" + bytes(383)}, "MODULUS"),  # not 3072 bits
    ],
)
def test_structure_failures(signed: Sigstruct, changes: dict[str, object], message: str) -> None:
    sig = _tampered(signed, **changes)
    with pytest.raises(MalformedStructureError, match=message):
        sig.verify()


def test_intel_vendor_is_accepted_structurally(signed: Sigstruct) -> None:
    _tampered(signed, vendor=0x8086).verify_structure()


def test_header_tampering_is_rejected_at_parse(signed: Sigstruct) -> None:
    for pos, message in ((0, "HEADER "), (12, "HEADER "), (24, "HEADER2"), (36, "HEADER2")):
        raw = bytearray(signed.to_bytes())
        raw[pos] ^= 0x01
        with pytest.raises(MalformedStructureError, match=message):
            Sigstruct.from_bytes(bytes(raw))


def test_zero_modulus_never_crashes(signed: Sigstruct) -> None:
    sig = _tampered(signed, modulus=bytes(384))
    for check in (sig.verify_signature, sig.verify_q1, sig.verify_q2):
        with pytest.raises(MalformedStructureError):
            check()


# -- keys -------------------------------------------------------------------------------------


def test_generated_key_is_rsa3072_e3(key: rsa.RSAPrivateKey) -> None:
    numbers = key.public_key().public_numbers()
    assert numbers.e == 3 and numbers.n.bit_length() == 3072
    check_signing_key(key)
    check_signing_key(key.public_key())


def test_other_keys_are_refused() -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(MalformedStructureError, match="RSA-3072 with e=3"):
        check_signing_key(other)
    with pytest.raises(MalformedStructureError):
        sign_sigstruct(other, Measurement(bytes(32)))
    with pytest.raises(MalformedStructureError):
        mrsigner_of_public_key(other.public_key())


def test_foreign_signature_check_matches_cryptography(
    key: rsa.RSAPrivateKey, signed: Sigstruct
) -> None:
    raw = bytearray(signed.to_bytes())
    raw[1024] ^= 1
    with pytest.raises(InvalidSignature):
        key.public_key().verify(
            bytes(raw[516:900][::-1]),
            bytes(raw[0:128] + raw[900:1028]),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    with pytest.raises(SigstructSignatureError):
        Sigstruct.from_bytes(bytes(raw)).verify()
