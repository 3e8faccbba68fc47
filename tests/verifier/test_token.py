"""Tokens: ES256 JWTs with kid, checked by an independent library (joserfc) against the JWKS;
key rotation keeps old keys published until their tokens expire."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from sgx_verifier.token import (
    LEEWAY,
    KeyringError,
    TokenError,
    TokenIssuer,
    TokenKeyring,
    key_id,
)

NOW = 1_750_000_000
AUD = "relying-party.example"
CLAIMS = {"sgx": {"verified": True, "tcb_status": "UpToDate"}, "quote_sha256": "ab" * 32}


def _issuer(tmp_path: Path, max_lifetime: int = 3600, lifetime: int = 600) -> TokenIssuer:
    keyring = TokenKeyring.create(tmp_path / "keys", max_lifetime=max_lifetime, now=NOW)
    return TokenIssuer(keyring, issuer="sgxemu-verifier", lifetime=lifetime)


def _jose_verify(token: str, jwks: dict[str, object], now: int) -> dict[str, object]:
    """Verify with joserfc only: signature against the JWKS, then iss/aud/exp/nbf."""
    decoded = jose_jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256"])  # type: ignore[arg-type]
    registry = jose_jwt.JWTClaimsRegistry(
        now=now,
        iss={"essential": True, "value": "sgxemu-verifier"},
        aud={"essential": True, "value": AUD},
        exp={"essential": True},
        iat={"essential": True},
    )
    registry.validate(decoded.claims)
    assert decoded.header["alg"] == "ES256"
    return dict(decoded.claims)


def _b64u_json(part: str) -> dict[str, object]:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # type: ignore[no-any-return]


def _b64u(doc: dict[str, object]) -> str:
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_token_verifies_with_joserfc_against_the_jwks(tmp_path: Path) -> None:
    issuer = _issuer(tmp_path)
    token = issuer.sign(CLAIMS, audience=AUD, subject="quote:abc", now=NOW)
    header = _b64u_json(token.split(".")[0])
    assert header == {"alg": "ES256", "typ": "JWT", "kid": issuer.keyring.active_kid}
    claims = _jose_verify(token, issuer.keyring.jwks(now=NOW), NOW + 10)
    assert claims["sgx"] == CLAIMS["sgx"]
    assert claims["iat"] == NOW and claims["exp"] == NOW + 600 and claims["sub"] == "quote:abc"
    assert len(str(claims["jti"])) == 32
    assert issuer.verify(token, audience=AUD, now=NOW + 10)["quote_sha256"] == "ab" * 32


def test_kid_is_the_rfc7638_thumbprint(tmp_path: Path) -> None:
    issuer = _issuer(tmp_path)
    jwk = issuer.keyring.jwks(now=NOW)["keys"][0]
    assert jwk["kid"] == key_id(issuer.keyring.public_key(jwk["kid"], now=NOW))
    # RFC 7638: the thumbprint is computed by joserfc the same way.
    assert KeySet.import_key_set({"keys": [jwk]}).keys[0].thumbprint() == jwk["kid"]


@pytest.mark.parametrize("part", [0, 1, 2])
def test_tampered_tokens_are_refused_by_both_libraries(tmp_path: Path, part: int) -> None:
    issuer = _issuer(tmp_path)
    token = issuer.sign(CLAIMS, audience=AUD, now=NOW)
    pieces = token.split(".")
    if part == 1:
        payload = _b64u_json(pieces[1])
        payload["sgx"] = {"verified": True, "tcb_status": "UpToDate", "debug": True}
        pieces[1] = _b64u(payload)
    elif part == 2:
        sig = bytearray(base64.urlsafe_b64decode(pieces[2] + "=="))
        sig[5] ^= 1
        pieces[2] = base64.urlsafe_b64encode(bytes(sig)).rstrip(b"=").decode()
    else:
        header = _b64u_json(pieces[0])
        header["typ"] = "at+jwt"
        pieces[0] = _b64u(header)
    tampered = ".".join(pieces)
    with pytest.raises(JoseError):
        _jose_verify(tampered, issuer.keyring.jwks(now=NOW), NOW + 1)
    with pytest.raises(TokenError):
        issuer.verify(tampered, audience=AUD, now=NOW + 1)


def test_alg_none_and_hs256_confusion_are_refused(tmp_path: Path) -> None:
    issuer = _issuer(tmp_path)
    token = issuer.sign(CLAIMS, audience=AUD, now=NOW)
    header, payload, _ = token.split(".")
    for alg in ("none", "HS256"):
        forged_header = _b64u({"alg": alg, "typ": "JWT", "kid": issuer.keyring.active_kid})
        with pytest.raises(TokenError, match="algorithm"):
            issuer.verify(f"{forged_header}.{payload}.", audience=AUD, now=NOW)
    with pytest.raises(TokenError, match="malformed"):
        issuer.verify("not-a-token", audience=AUD, now=NOW)
    del header


def test_audience_issuer_and_time_are_checked(tmp_path: Path) -> None:
    issuer = _issuer(tmp_path)
    token = issuer.sign(CLAIMS, audience=AUD, now=NOW)
    with pytest.raises(TokenError, match=r"(?i)audience"):
        issuer.verify(token, audience="someone-else", now=NOW)
    other = TokenIssuer(issuer.keyring, issuer="another-verifier")
    with pytest.raises(TokenError, match=r"(?i)issuer"):
        other.verify(token, audience=AUD, now=NOW)
    with pytest.raises(TokenError, match="expired"):
        issuer.verify(token, audience=AUD, now=NOW + 600 + LEEWAY)
    with pytest.raises(TokenError, match="not valid before"):
        issuer.verify(token, audience=AUD, now=NOW - LEEWAY - 1)
    with pytest.raises(JoseError):
        _jose_verify(token, issuer.keyring.jwks(now=NOW), NOW + 601)


def test_reserved_claims_cannot_be_overridden(tmp_path: Path) -> None:
    issuer = _issuer(tmp_path)
    for name in ("exp", "aud", "iss", "iat", "nbf", "jti", "sub"):
        with pytest.raises(TokenError, match="reserved"):
            issuer.sign({name: 1}, audience=AUD, now=NOW)
    with pytest.raises(TokenError, match="audience"):
        issuer.sign(CLAIMS, audience="", now=NOW)


def test_lifetimes_beyond_the_keyring_maximum_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyringError):
        _issuer(tmp_path, max_lifetime=600, lifetime=601)
    issuer = TokenIssuer(TokenKeyring(tmp_path / "keys"), issuer="x", lifetime=600)
    with pytest.raises(KeyringError):
        issuer.sign(CLAIMS, audience=AUD, now=NOW, lifetime=601)


def test_rotation_keeps_old_keys_published_until_their_tokens_expire(tmp_path: Path) -> None:
    issuer = _issuer(tmp_path, max_lifetime=1000, lifetime=1000)
    old_kid = issuer.keyring.active_kid
    old_token = issuer.sign(CLAIMS, audience=AUD, now=NOW)
    rotated_at = NOW + 100
    new_kid = issuer.keyring.rotate(now=rotated_at)
    assert new_kid != old_kid and issuer.keyring.active_kid == new_kid
    new_token = issuer.sign(CLAIMS, audience=AUD, now=rotated_at)
    assert _b64u_json(new_token.split(".")[0])["kid"] == new_kid

    # Until the old key's last possible token expires, both keys are published.
    last_old_expiry = rotated_at + 1000
    jwks = issuer.keyring.jwks(now=last_old_expiry - 1)
    assert [k["kid"] for k in jwks["keys"]] == [new_kid, old_kid]
    _jose_verify(old_token, jwks, NOW + 999)
    _jose_verify(new_token, jwks, rotated_at + 10)
    assert issuer.keyring.prune(now=last_old_expiry) == ()

    # Afterwards the old key is withdrawn, then deleted by prune.
    later = last_old_expiry + LEEWAY
    assert [k["kid"] for k in issuer.keyring.jwks(now=later)["keys"]] == [new_kid]
    with pytest.raises(TokenError, match="withdrawn"):
        issuer.verify(old_token, audience=AUD, now=later)
    assert issuer.keyring.prune(now=later) == (old_kid,)
    assert not (tmp_path / "keys" / f"{old_kid}.pem").exists()
    assert [e.kid for e in issuer.keyring.entries()] == [new_kid]


def test_replicas_sharing_the_keyring_verify_each_other_and_follow_rotation(
    tmp_path: Path,
) -> None:
    a = _issuer(tmp_path)
    b = TokenIssuer(TokenKeyring(tmp_path / "keys"), issuer="sgxemu-verifier")
    token = a.sign(CLAIMS, audience=AUD, now=NOW)
    assert b.verify(token, audience=AUD, now=NOW)["sgx"] == CLAIMS["sgx"]
    new_kid = a.keyring.rotate(now=NOW + 5)
    # b notices the rotation on disk: it signs with the new key and still verifies old tokens.
    token_b = b.sign(CLAIMS, audience=AUD, now=NOW + 6)
    assert _b64u_json(token_b.split(".")[0])["kid"] == new_kid
    b.verify(token, audience=AUD, now=NOW + 6)
    a.verify(token_b, audience=AUD, now=NOW + 6)


def test_key_files_are_private_and_checked(tmp_path: Path) -> None:
    issuer = _issuer(tmp_path)
    kid = issuer.keyring.active_kid
    directory = tmp_path / "keys"
    for name in (f"{kid}.pem", "keyring.json"):
        assert stat.S_IMODE(os.stat(directory / name).st_mode) == 0o600
    with pytest.raises(KeyringError, match="already"):
        TokenKeyring.create(directory)
    os.chmod(directory / f"{kid}.pem", 0o640)
    with pytest.raises(KeyringError, match="0600"):
        TokenKeyring(directory)
    os.chmod(directory / f"{kid}.pem", 0o600)
    # A key file swapped for another key is caught by its thumbprint.
    other = TokenKeyring.create(tmp_path / "other")
    (directory / f"{kid}.pem").write_bytes(
        (tmp_path / "other" / f"{other.active_kid}.pem").read_bytes()
    )
    with pytest.raises(KeyringError, match="thumbprint"):
        TokenKeyring(directory)


@pytest.mark.parametrize(
    "index",
    [
        b"not json",
        b"{}",
        b'{"version": 2, "max_lifetime": 60, "active": "a", "keys": []}',
        b'{"version": 1, "max_lifetime": 60, "active": "a", "keys": [], "extra": 1}',
        b'{"version": 1, "max_lifetime": 60, "active": "a", "keys": []}',
    ],
)
def test_malformed_index_is_refused(tmp_path: Path, index: bytes) -> None:
    directory = tmp_path / "keys"
    TokenKeyring.create(directory)
    (directory / "keyring.json").write_bytes(index)
    with pytest.raises(KeyringError):
        TokenKeyring(directory)
