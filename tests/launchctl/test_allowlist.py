"""The allowlist: MRSIGNER from hex, keys and SIGSTRUCTs; entries; the launch decision."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from sgx_launchctl.allowlist import (
    Admit,
    Allowlist,
    Denial,
    LaunchRequest,
    SignerEntry,
    admitting_entry,
    decide,
    mrsigner_from_hex,
    mrsigner_from_key_pem,
    mrsigner_from_sigstruct,
)
from sgx_launchctl.errors import InvalidRequestError
from sgx_platform.arch.attributes import AttributeFlags, Attributes
from sgx_platform.arch.measurement import Measurement
from sgx_platform.arch.secs import Secs
from sgx_platform.arch.signing import mrsigner_of_public_key, sign_sigstruct

SIGNER = Measurement(bytes(range(32)))
OTHER = Measurement(bytes(range(1, 33)))
MRENCLAVE = Measurement(b"\xee" * 32)
MODE64 = int(AttributeFlags.MODE64BIT)


def request(
    *, mrsigner: Measurement = SIGNER, flags: int = MODE64, isvprodid: int = 0, isvsvn: int = 0
) -> LaunchRequest:
    return LaunchRequest(mrsigner, MRENCLAVE, Attributes(flags, 3), 0, isvprodid, isvsvn)


# -- MRSIGNER from what an admin has ----------------------------------------------------------


def test_mrsigner_from_hex() -> None:
    assert mrsigner_from_hex(SIGNER.hex()) == SIGNER
    assert mrsigner_from_hex(f"  {SIGNER.hex().upper()}\n") == SIGNER


@pytest.mark.parametrize("text", ["", "zz" * 32, "ab" * 31, "ab" * 33, "abc"])
def test_mrsigner_from_bad_hex_is_refused(text: str) -> None:
    with pytest.raises(InvalidRequestError):
        mrsigner_from_hex(text)


def test_mrsigner_from_key_public_or_private(keys: Any) -> None:
    key = keys.app
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert mrsigner_from_key_pem(private) == mrsigner_of_public_key(key)
    assert mrsigner_from_key_pem(public) == mrsigner_of_public_key(key)


def test_mrsigner_from_key_refuses_other_keys() -> None:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    rsa_2048 = rsa.generate_private_key(public_exponent=3, key_size=2048).public_key()
    rsa_e65537 = rsa.generate_private_key(public_exponent=65537, key_size=3072).public_key()
    for pem in (
        ec_pem,
        rsa_2048.public_bytes(serialization.Encoding.PEM,
                              serialization.PublicFormat.SubjectPublicKeyInfo),
        rsa_e65537.public_bytes(serialization.Encoding.PEM,
                                serialization.PublicFormat.SubjectPublicKeyInfo),
        b"not a key",
        b"",
    ):
        with pytest.raises(InvalidRequestError):
            mrsigner_from_key_pem(pem)


def test_mrsigner_from_sigstruct_and_its_truncations(keys: Any) -> None:
    key = keys.app
    sig = sign_sigstruct(key, MRENCLAVE, date=0x20250101).to_bytes()
    assert mrsigner_from_sigstruct(sig) == mrsigner_of_public_key(key)
    for bad in (sig[:-1], sig + b"\x00", sig[:128], b"", b"\x00" * 1808):
        with pytest.raises(InvalidRequestError):
            mrsigner_from_sigstruct(bad)


# -- entries ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"isvprodids": frozenset()},
        {"isvprodids": frozenset({70000})},
        {"isvprodids": frozenset({-1})},
        {"min_isvsvn": 65536},
        {"min_isvsvn": -1},
        {"comment": "x" * 201},
        {"comment": "line\nbreak"},
        {"allow_debug": 1},
    ],
)
def test_entry_constraints_are_validated(kw: dict[str, object]) -> None:
    with pytest.raises(InvalidRequestError):
        SignerEntry(SIGNER, **kw)  # type: ignore[arg-type]


def test_entry_canonical_round_trip_and_command() -> None:
    entry = SignerEntry(SIGNER, True, True, frozenset({3, 1}), 5, "it's mine")
    assert SignerEntry.from_canonical(entry.canonical()) == entry
    assert entry.add_command() == (
        f"sgxemu launchctl add-signer {SIGNER.hex()} --allow-debug --allow-provision-key "
        "--isvprodid 1 --isvprodid 3 --min-isvsvn 5 --comment 'it'\"'\"'s mine'"
    )


def test_allowlist_keeps_one_entry_per_signer_sorted() -> None:
    allowlist = Allowlist.of([SignerEntry(OTHER), SignerEntry(SIGNER)])
    assert [e.mrsigner for e in allowlist] == [SIGNER, OTHER]
    replaced = allowlist.with_entry(SignerEntry(SIGNER, allow_debug=True))
    assert len(replaced) == 2 and replaced.get(SIGNER) == SignerEntry(SIGNER, allow_debug=True)
    assert SIGNER not in replaced.without(SIGNER) and OTHER in replaced.without(SIGNER)
    with pytest.raises(InvalidRequestError):
        Allowlist.of([SignerEntry(SIGNER), SignerEntry(SIGNER, allow_debug=True)])


# -- the request --------------------------------------------------------------------------------


def test_request_from_sigstruct_and_secs(keys: Any) -> None:
    key = keys.app
    sig = sign_sigstruct(key, MRENCLAVE, isvprodid=7, isvsvn=9, date=0x20250101).to_bytes()
    secs = Secs(size=1 << 16, attributes=Attributes(MODE64 | int(AttributeFlags.DEBUG), 3))
    r = LaunchRequest.from_bytes(sig, secs.to_bytes())
    assert (r.mrsigner, r.mrenclave) == (mrsigner_of_public_key(key), MRENCLAVE)
    assert (r.isvprodid, r.isvsvn, r.debug, r.provision_key) == (7, 9, True, False)
    for bad_sig, bad_secs in ((sig[:-1], secs.to_bytes()), (sig, secs.to_bytes()[:-1]),
                              (sig, secs.to_bytes() + b"\x00"),
                              (sig, secs.to_bytes()[:4095] + b"\x01")):
        with pytest.raises(InvalidRequestError):
            LaunchRequest.from_bytes(bad_sig, bad_secs)


# -- the decision -------------------------------------------------------------------------------


def _denied(decision: Admit | Denial, rule: str, reason: str) -> Denial:
    assert isinstance(decision, Denial), decision
    assert (decision.rule, decision.reason) == (rule, reason)
    assert SIGNER.hex() in decision.message and f"rule {rule}" in decision.message
    return decision


def test_unlisted_signer_is_denied_with_the_command_that_admits_it() -> None:
    d = _denied(decide(Allowlist(), request()), "signer", "LAUNCH_SIGNER_NOT_LISTED")
    assert d.admin_command == f"sgxemu launchctl add-signer {SIGNER.hex()}"
    assert d.mrsigner == SIGNER and d.mrenclave == MRENCLAVE
    assert "an admin can allow it: sgxemu launchctl add-signer" in d.hint(locked=False)
    assert "locked until the platform is reset" in d.hint(locked=True)


def test_listed_signer_is_admitted_and_others_are_not() -> None:
    allowlist = Allowlist.of([SignerEntry(SIGNER)])
    assert decide(allowlist, request()) == Admit(SignerEntry(SIGNER))
    assert isinstance(decide(allowlist, request(mrsigner=OTHER)), Denial)


def test_each_constraint_denies_what_it_should() -> None:
    debug = MODE64 | int(AttributeFlags.DEBUG)
    provision = MODE64 | int(AttributeFlags.PROVISIONKEY)
    plain = Allowlist.of([SignerEntry(SIGNER)])
    d = _denied(decide(plain, request(flags=debug)), "allow_debug", "LAUNCH_DEBUG_NOT_ALLOWED")
    assert d.admin_command.endswith("--allow-debug")
    d = _denied(decide(plain, request(flags=provision)), "allow_provision_key",
                "LAUNCH_PROVISION_KEY_NOT_ALLOWED")
    assert d.admin_command.endswith("--allow-provision-key")
    by_product = Allowlist.of([SignerEntry(SIGNER, isvprodids=frozenset({1, 2}))])
    assert isinstance(decide(by_product, request(isvprodid=2)), Admit)
    d = _denied(decide(by_product, request(isvprodid=3)), "isvprodid",
                "LAUNCH_ISVPRODID_NOT_ALLOWED")
    assert "--isvprodid 1 --isvprodid 2 --isvprodid 3" in d.admin_command
    by_svn = Allowlist.of([SignerEntry(SIGNER, min_isvsvn=4)])
    assert isinstance(decide(by_svn, request(isvsvn=4)), Admit)
    d = _denied(decide(by_svn, request(isvsvn=3)), "min_isvsvn", "LAUNCH_ISVSVN_TOO_LOW")
    assert "--min-isvsvn 3" in d.admin_command
    allowed = Allowlist.of([SignerEntry(SIGNER, allow_debug=True, allow_provision_key=True)])
    assert isinstance(decide(allowed, request(flags=debug | provision)), Admit)


def test_einittoken_key_is_never_admitted() -> None:
    everything = Allowlist.of([SignerEntry(SIGNER, allow_debug=True, allow_provision_key=True)])
    d = _denied(
        decide(everything, request(flags=MODE64 | int(AttributeFlags.EINITTOKEN_KEY))),
        "einittoken_key", "LAUNCH_EINITTOKEN_KEY_NOT_ALLOWED",
    )
    assert d.admin_command == "" and d.hint(locked=False) == "no allowlist entry can allow this"


def test_rules_are_checked_in_a_fixed_order() -> None:
    strict = Allowlist.of([SignerEntry(SIGNER, isvprodids=frozenset({1}), min_isvsvn=9)])
    flags = MODE64 | int(AttributeFlags.DEBUG | AttributeFlags.PROVISIONKEY)
    d = decide(strict, request(flags=flags, isvprodid=5, isvsvn=0))
    assert isinstance(d, Denial) and d.rule == "allow_debug"


_entries = st.builds(
    SignerEntry,
    mrsigner=st.just(SIGNER),
    allow_debug=st.booleans(),
    allow_provision_key=st.booleans(),
    isvprodids=st.none() | st.frozensets(st.integers(0, 0xFFFF), min_size=1, max_size=4),
    min_isvsvn=st.integers(0, 0xFFFF),
)
_requests = st.builds(
    request,
    flags=st.sampled_from([0, 2, 16, 18]).map(lambda f: MODE64 | f),
    isvprodid=st.integers(0, 0xFFFF),
    isvsvn=st.integers(0, 0xFFFF),
)


@settings(max_examples=80, deadline=None)
@given(entry=st.none() | _entries, req=_requests)
def test_the_denial_command_always_admits_the_launch(
    entry: SignerEntry | None, req: LaunchRequest
) -> None:
    allowlist = Allowlist.of([] if entry is None else [entry])
    decision = decide(allowlist, req)
    if isinstance(decision, Admit):
        return
    fixed = admitting_entry(req, entry)
    assert fixed.add_command() == decision.admin_command
    assert isinstance(decide(allowlist.with_entry(fixed), req), Admit)
    if entry is not None:  # nothing but the needed constraint was loosened
        assert replace(fixed, allow_debug=entry.allow_debug or req.debug) == fixed
        assert fixed.comment == entry.comment
