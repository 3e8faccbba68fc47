"""Each user's flow against one world of real service processes (``sgxemu up --detach``).

- the application: load, challenge, REPORT, quote, verification, token (``sgxemu attest``);
- the relying party: verification (local and remote), the token against the JWKS (GetJwks);
- the two programs in ``examples/``, run as subprocesses;
- the admin: an unknown signer denied, add-signer, the load policy's directory rule, lock, and
  every later change refused.

The admin test locks the launch policy; the other tests only use the signer the module fixture
allowed before, so the order of the tests does not matter.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sgx.verifier.v1 import verifier_pb2
from sgx_platform.arch.signing import mrsigner_of_public_key

if TYPE_CHECKING:
    from conftest import World

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def app(world: World) -> tuple[Path, Path]:
    """The application's enclave in the allowed directory, its signer on the allowlist."""
    image, sig = world.build_signed("app", world.keys.app)
    run = world.sgxemu("launchctl", "add-signer", "--key", world.keys.app, "--comment", "app")
    assert run.code == 0, run.err
    return image, sig


def _attest(world: World, image: Path, sig: Path, name: str) -> dict[str, Any]:
    """``sgxemu attest --challenge``: quote, collateral and challenge files under ``work``."""
    run = world.sgxemu(
        "attest", image, sig,
        "--quote-out", world.work / f"{name}.q",
        "--collateral-out", world.work / f"{name}.c.json",
        "--challenge", "--verifier", world.verifier_address,
        "--challenge-out", world.work / f"{name}.ch",
        "--json",
    )  # fmt: skip
    assert run.code == 0, run.err
    doc: dict[str, Any] = run.json()
    return doc


def _verify_remote(world: World, name: str) -> tuple[int, dict[str, Any]]:
    run = world.sgxemu(
        "verify", world.work / f"{name}.q",
        "--remote", world.verifier_address,
        "--collateral", world.work / f"{name}.c.json",
        "--challenge", world.work / f"{name}.ch",
        "--json",
    )  # fmt: skip
    return run.code, run.json()


def _mrsigner(key: Path) -> str:
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    return mrsigner_of_public_key(private).hex()


def _decode(world: World, token: str, *, audience: str = "sgxemu") -> dict[str, Any]:
    """Check ``token`` as a relying party does: against the keys GetJwks publishes."""
    with world.verifier_channel() as channel:
        jwks = world.verifier(channel).GetJwks(verifier_pb2.GetJwksRequest(), timeout=10)
    keys = {k.key_id: k for k in jwt.PyJWKSet.from_json(jwks.jwks_json).keys}
    kid = jwt.get_unverified_header(token)["kid"]
    claims: dict[str, Any] = jwt.decode(
        token,
        keys[kid].key,
        algorithms=["ES256"],
        audience=audience,
        issuer="sgxemu-verifier",
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub"]},
    )
    return claims


# -- the application -----------------------------------------------------------------------------


def test_application_attests_and_the_challenge_is_single_use(
    world: World, app: tuple[Path, Path]
) -> None:
    image, sig = app
    attested = _attest(world, image, sig, "a1")
    challenge = (world.work / "a1.ch").read_bytes()
    assert attested["challenge"] == challenge.hex()
    assert attested["report_data"] == hashlib.sha256(challenge).hexdigest() + "00" * 32
    measured = world.sgxemu("measure", image)
    assert measured.code == 0 and attested["mrenclave"] in measured.out

    code, doc = _verify_remote(world, "a1")
    assert code == 0, doc
    assert doc["verified"] is True and doc["accepted"] is True
    assert doc["tcb_status"] == "UpToDate"
    assert doc["trust_anchor"] == "sgxemu-emulated" and "test anchor" in doc["warning"]
    assert doc["mrenclave"] == attested["mrenclave"]
    assert doc["mrsigner"] == attested["mrsigner"]
    assert doc["debug"] is False
    assert doc["token"]

    # The same quote and challenge again: still a valid quote, but the challenge was redeemed.
    code, doc = _verify_remote(world, "a1")
    assert code == 1
    assert doc["verified"] is True and doc["accepted"] is False and "token" not in doc
    assert [v["detail"] for v in doc["policy"]["violations"]] == ["CHALLENGE_REPLAYED"]


# -- the relying party ---------------------------------------------------------------------------


def test_relying_party_verifies_locally_and_remotely_and_checks_the_token(
    world: World, app: tuple[Path, Path]
) -> None:
    image, sig = app
    attested = _attest(world, image, sig, "r1")
    quote = (world.work / "r1.q").read_bytes()
    root = world.root / "verifier" / "emulated-root.der"

    local = world.sgxemu(
        "verify", world.work / "r1.q", "--collateral", world.work / "r1.c.json",
        "--root-ca", root, "--json",
    )  # fmt: skip
    assert local.code == 0, local.err
    assert local.json()["verified"] is True and local.json()["mrenclave"] == attested["mrenclave"]
    # Strict by default: without --root-ca only the real Intel root is trusted.
    intel_only = world.sgxemu(
        "verify", world.work / "r1.q", "--collateral", world.work / "r1.c.json", "--json"
    )
    assert intel_only.code == 2
    assert intel_only.json()["error"]["code"] == "CHAIN_UNTRUSTED"

    with world.verifier_channel() as channel:
        response = world.verifier(channel).VerifyQuote(
            verifier_pb2.VerifyQuoteRequest(
                quote=quote,
                collateral_json=(world.work / "r1.c.json").read_text(),
                challenge=(world.work / "r1.ch").read_bytes(),
                audience="relying-party-1",
            ),
            timeout=30,
        )
    assert response.verified and response.accepted and response.token
    claims = _decode(world, response.token, audience="relying-party-1")
    assert claims["sub"] == "sha256:" + hashlib.sha256(quote).hexdigest()
    assert claims["sgx"]["verified"] is True
    assert claims["sgx"]["mrenclave"] == attested["mrenclave"]
    assert claims["sgx"]["tcb_status"] == "UpToDate"
    assert claims["challenge_redeemed"] is True
    assert claims["trust_anchor"]["name"] == "sgxemu-emulated"

    # A token meant for someone else, or altered, is refused.
    with pytest.raises(jwt.InvalidAudienceError):
        _decode(world, response.token)
    header, payload, signature = response.token.split(".")
    forged = json.loads(jwt.utils.base64url_decode(payload))
    forged["sgx"]["mrenclave"] = "00" * 32
    forged_payload = jwt.utils.base64url_encode(json.dumps(forged).encode()).decode()
    with pytest.raises(jwt.InvalidSignatureError):
        _decode(world, f"{header}.{forged_payload}.{signature}", audience="relying-party-1")


# -- the examples --------------------------------------------------------------------------------


def _example(world: World, name: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SGXEMU_STATE=str(world.root))  # their default --state
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=world.work,
    )


def test_the_examples_run_against_the_services(world: World, app: tuple[Path, Path]) -> None:
    image, sig = app
    attest = _example(
        world, "attest_client.py", image, sig, "--user-data", "e2e",
        "--quote-out", "x.q", "--collateral-out", "x.c.json", "--challenge-out", "x.ch",
        "--token-out", "x.jwt", "--json",
    )  # fmt: skip
    assert attest.returncode == 0, attest.stderr
    doc = json.loads(attest.stdout)
    assert doc["verified"] is True and doc["accepted"] is True and doc["token"]
    assert "7. the verifier appraised the quote" in attest.stderr
    challenge = (world.work / "x.ch").read_bytes()
    assert doc["report_data"][:64] == hashlib.sha256(challenge + b"e2e").hexdigest()

    relying = _example(
        world, "relying_party.py", "x.q", "--collateral", "x.c.json", "--challenge", "x.ch",
        "--user-data", "e2e", "--token", "x.jwt", "--json",
    )  # fmt: skip
    assert relying.returncode == 0, relying.stdout + relying.stderr
    checks = json.loads(relying.stdout)["checks"]
    assert len(checks) == 9 and all(c["ok"] for c in checks), checks

    # The verifier already redeemed that challenge: the quote verifies, the replay is refused.
    replay = _example(
        world, "relying_party.py", "x.q", "--remote", "--collateral", "x.c.json",
        "--challenge", "x.ch", "--user-data", "e2e", "--json",
    )  # fmt: skip
    assert replay.returncode == 1, replay.stderr
    replay_doc = json.loads(replay.stdout)
    assert replay_doc["verified"] is True and replay_doc["accepted"] is False

    # A token whose signature was altered fails the JWKS check.
    token = (world.work / "x.jwt").read_text()
    flipped = "A" if token[-2] != "A" else "B"
    (world.work / "bad.jwt").write_text(token[:-2] + flipped + token[-1])
    forged = _example(
        world, "relying_party.py", "x.q", "--collateral", "x.c.json", "--token", "bad.jwt",
        "--json",
    )  # fmt: skip
    assert forged.returncode == 1
    failed = [c["check"] for c in json.loads(forged.stdout)["checks"] if not c["ok"]]
    assert failed == ["token signature, issuer, audience and lifetime"]

    # An image outside the allowed directory: the platform refuses to open it.
    outside = world.work / "outside.sgxs"
    shutil.copy(image, outside)
    refused = _example(world, "attest_client.py", outside, sig)
    assert refused.returncode == 2 and "IMAGE_PATH_NOT_ALLOWED" in refused.stderr


# -- the admin -----------------------------------------------------------------------------------


def test_admin_allows_a_signer_locks_and_later_changes_are_refused(
    world: World, app: tuple[Path, Path]
) -> None:
    image, sig = world.build_signed("admin", world.keys.admin, seed=5)
    denied = world.sgxemu("enclave", "load", image, sig)
    assert denied.code == 1 and "LAUNCH_SIGNER_NOT_LISTED" in denied.err

    added = world.sgxemu("launchctl", "add-signer", "--key", world.keys.admin, "--json")
    assert added.code == 0, added.err
    assert world.sgxemu("enclave", "load", image, sig).code == 0

    # The load policy: only images the platform opens itself under an allowed directory.
    outside = world.work / "elsewhere" / "admin.sgxs"
    outside.parent.mkdir()
    shutil.copy(image, outside)
    refused = world.sgxemu("enclave", "load", outside, sig)
    assert refused.code == 1
    assert "IMAGE_PATH_NOT_ALLOWED" in refused.err and "rule image_path" in refused.err

    locked = world.sgxemu("launchctl", "lock", "--json")
    assert locked.code == 0, locked.err
    status = world.sgxemu("launchctl", "status", "--json").json()
    assert status["locked"] is True and status["latched_digest"] == status["policy_digest"]

    later = [
        ("launchctl", "add-signer", "--key", world.keys.extra),
        ("launchctl", "remove-signer", _mrsigner(world.keys.admin)),
        ("launchctl", "policy", "allow-dir", outside.parent),
        ("launchctl", "policy", "set", "no_write_exec", "off"),
    ]
    for argv in later:
        run = world.sgxemu(*argv)
        assert run.code == 1, (argv, run.out, run.err)
        assert "POLICY_LOCKED" in run.err, (argv, run.err)
    # What was allowed before the lock still launches; what was not, still does not.
    assert world.sgxemu("enclave", "load", image, sig).code == 0
    assert world.sgxemu("enclave", "load", *app).code == 0
    assert world.sgxemu("enclave", "load", outside, sig).code == 1
    listed = {e["mrsigner"] for e in world.sgxemu("launchctl", "list", "--json").json()}
    assert _mrsigner(world.keys.admin) in listed
    assert _mrsigner(world.keys.extra) not in listed
    audit = world.sgxemu("launchctl", "audit", "--verify")
    assert audit.code == 0, audit.err
