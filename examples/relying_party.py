#!/usr/bin/env python3
"""A relying party: decide whether to trust a quote file, and check a verifier's token.

Two ways to appraise the quote:

* locally (the default), with the ``sgx_verifier`` library: the quote, its collateral file
  (``--collateral``, QuoteCollateralV3 JSON as ``attest_client.py --collateral-out`` or
  ``sgxemu attest --collateral-out`` write it) and the trust anchor. A real Intel quote is
  checked against the real Intel SGX Root CA (``--intel``); an emulated one against the
  emulated root CA of the state directory, ``$STATE/verifier/emulated-root.der``, a test anchor
  that proves nothing about hardware;
* remotely (``--remote``), by the verification service over TLS: it appraises the quote
  (with ``--collateral`` or its own store), redeems ``--challenge`` once, and signs a token.

Then the token (``--token FILE``, or the one the remote verification returned) is checked with
PyJWT against the keys the verifier publishes (its JWKS, fetched with ``GetJwks``): algorithm
ES256 only, a ``kid`` the JWKS lists, the signature, issuer, audience, expiry, and that the token
speaks of this very quote (``sub`` = sha256 of the quote file) and of the enclave the quote
names.

Every check is printed with its outcome. Exit 0 when every check passed, 1 when one failed,
2 when the quote could not be appraised at all.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt

from sgx.verifier.v1 import verifier_pb2, verifier_pb2_grpc
from sgx_platform.arch.binding import binding_digest
from sgx_rpc.channel import tls_channel
from sgx_rpc.errors import error_info
from sgx_verifier.anchors import AnchorSet, intel_sgx_root_ca, load_anchor
from sgx_verifier.appraisal import appraise
from sgx_verifier.collateral import Collateral
from sgx_verifier.errors import VerificationError
from sgx_verifier.policy import DEFAULT_POLICY

EMULATED_ANCHOR = "sgxemu-emulated"
TIMEOUT = 30.0


@dataclass
class Checks:
    """The checks made so far, each printed as it is recorded."""

    tell: Callable[[str], None] = print
    results: list[tuple[str, bool, str]] = field(default_factory=list)

    def record(self, name: str, ok: bool, detail: str = "") -> bool:
        self.results.append((name, ok, detail))
        self.tell(f"  [{'ok' if ok else 'FAILED'}] {name}" + (f": {detail}" if detail else ""))
        return ok

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.results)


@dataclass(frozen=True)
class Appraisal:
    """What the quote appraisal established, locally or remotely."""

    verified: bool
    accepted: bool
    mrenclave: bytes
    report_data: bytes
    token: str | None


class CannotAppraise(Exception):
    """The quote could not be appraised (unreadable input, unreachable service)."""


def _verifier_settings(state: Path | None) -> dict[str, Any]:
    if state is None:
        return {}
    path = state / "verifier" / "verifier.toml"
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError:
        return {}


def appraise_locally(
    quote: bytes, collateral_file: Path, anchors: AnchorSet, checks: Checks
) -> Appraisal:
    try:
        collateral = Collateral.from_json(collateral_file.read_bytes())
    except (OSError, VerificationError, ValueError) as e:
        raise CannotAppraise(f"cannot use the collateral {collateral_file}: {e}") from e
    verdict = appraise(quote, collateral, anchors=anchors)
    names = ", ".join(a.name for a in anchors)
    if not checks.record(
        "quote signatures, certificate chain, CRLs, TCB Info and QE Identity",
        verdict.verified,
        f"chains to {verdict.trust_anchor.name}"
        if verdict.trust_anchor
        else "; ".join(f"{f.code}: {f.message}" for f in verdict.failures),
    ):
        return Appraisal(False, False, b"", b"", None)
    # The default relying-party policy: UpToDate only, no debug enclave, these anchors only.
    result = DEFAULT_POLICY.with_anchors(a.name for a in anchors).evaluate(verdict)
    checks.record(
        f"policy (TCB UpToDate, no debug enclave, anchor among: {names})",
        result.passed,
        f"TCB {verdict.tcb_status}"
        if result.passed
        else "; ".join(f"{v.code}: {v.message}" for v in result.violations),
    )
    enclave = verdict.enclave
    assert enclave is not None  # a verified verdict names its enclave
    return Appraisal(True, result.passed, enclave.mrenclave, enclave.report_data, None)


def appraise_remotely(
    stub: verifier_pb2_grpc.QuoteVerificationServiceStub,
    quote: bytes,
    collateral_file: Path | None,
    challenge: bytes,
    user_data: bytes,
    checks: Checks,
) -> Appraisal:
    request = verifier_pb2.VerifyQuoteRequest(quote=quote, challenge=challenge, user_data=user_data)
    if collateral_file is not None:
        request.collateral_json = collateral_file.read_text()
    try:
        response = stub.VerifyQuote(request, timeout=TIMEOUT)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.UNAVAILABLE:
            raise CannotAppraise("the verifier does not answer; is it up?") from e
        info = error_info(e)
        reason = info.reason if info is not None else e.code().name
        raise CannotAppraise(f"the verifier refused ({reason}): {e.details()}") from e
    if not checks.record(
        "the verifier verified the quote",
        response.verified,
        f"TCB {response.tcb_status}, anchor {response.trust_anchor.name}"
        if response.verified
        else "; ".join(f"{f.code}: {f.message}" for f in response.failures),
    ):
        return Appraisal(False, False, b"", b"", None)
    checks.record(
        "the verifier's policy accepted it"
        + (" (and redeemed the challenge)" if challenge else ""),
        response.accepted,
        "; ".join(f"{v.detail or v.code}: {v.message}" for v in response.policy.violations),
    )
    return Appraisal(
        True,
        response.accepted,
        response.enclave.mrenclave,
        response.enclave.report_data,
        response.token or None,
    )


def check_token(
    token: str,
    jwks_json: str,
    *,
    issuer: str,
    audience: str,
    quote: bytes,
    mrenclave: bytes,
    checks: Checks,
) -> None:
    """Check ``token`` against the verifier's JWKS and against the quote it should speak of."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as e:
        checks.record("token is a JWS", False, str(e))
        return
    keys = {k.key_id: k for k in jwt.PyJWKSet.from_json(jwks_json).keys}
    kid = header.get("kid")
    if not checks.record(
        "token signed with ES256 by a key the JWKS publishes",
        header.get("alg") == "ES256" and kid in keys,
        f"alg {header.get('alg')}, kid {kid}; the JWKS has {sorted(k for k in keys if k)}",
    ):
        return
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            keys[kid].key,
            algorithms=["ES256"],
            issuer=issuer,
            audience=audience,
            options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub"]},
        )
    except jwt.PyJWTError as e:
        checks.record("token signature, issuer, audience and lifetime", False, str(e))
        return
    checks.record(
        "token signature, issuer, audience and lifetime",
        True,
        f"iss {claims['iss']}, aud {claims['aud']}, "
        f"expires in {claims['exp'] - int(time.time())} s",
    )
    expected_sub = "sha256:" + hashlib.sha256(quote).hexdigest()
    checks.record(
        "token is about this quote (sub = sha256 of the quote)", claims["sub"] == expected_sub
    )
    sgx = claims.get("sgx", {})
    checks.record("token says the quote was verified", sgx.get("verified") is True)
    checks.record(
        "token names the quote's enclave (MRENCLAVE)",
        sgx.get("mrenclave") == mrenclave.hex(),
        sgx.get("mrenclave", "none"),
    )
    checks.record(
        "token records a redeemed challenge (freshness)",
        claims.get("challenge_redeemed") is True,
        "" if claims.get("challenge_redeemed") else "the quote was verified without a challenge",
    )


def fetch_jwks(stub: verifier_pb2_grpc.QuoteVerificationServiceStub) -> str:
    jwks: str = stub.GetJwks(verifier_pb2.GetJwksRequest(), timeout=TIMEOUT).jwks_json
    return jwks


def _anchors(args: argparse.Namespace, state: Path | None) -> AnchorSet:
    if args.intel:
        return AnchorSet.of([intel_sgx_root_ca()])
    if state is None:
        raise CannotAppraise("give --state (its emulated root CA) or --intel")
    try:
        root = (state / "verifier" / "emulated-root.der").read_bytes()
    except OSError as e:
        raise CannotAppraise(f"cannot read the emulated root CA: {e}") from e
    return AnchorSet.of([load_anchor(root, EMULATED_ANCHOR)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Verify a quote file (locally or at the verifier) and check a token."
    )
    parser.add_argument("quote", type=Path, help="the quote file (raw bytes)")
    parser.add_argument(
        "--state",
        type=Path,
        default=os.environ.get("SGXEMU_STATE"),
        help="the state directory (env SGXEMU_STATE): its CA, verifier address, emulated root",
    )
    parser.add_argument("--collateral", type=Path, help="QuoteCollateralV3 JSON")
    parser.add_argument(
        "--remote",
        nargs="?",
        const="",
        metavar="ADDR",
        help="let the verifier at ADDR appraise the quote (default address: verifier.toml)",
    )
    parser.add_argument("--challenge", type=Path, help="the challenge file the quote binds")
    parser.add_argument("--user-data", default="", help="text hashed with the challenge")
    parser.add_argument("--token", type=Path, help="a token (JWT) to check against the JWKS")
    parser.add_argument("--intel", action="store_true", help="local: trust the Intel root only")
    parser.add_argument("--issuer", help="expected token issuer (default: verifier.toml)")
    parser.add_argument("--audience", help="expected token audience (default: verifier.toml)")
    parser.add_argument("--json", action="store_true", help="print one JSON document at the end")
    args = parser.parse_args(argv)
    state = Path(args.state).expanduser().absolute() if args.state else None
    settings = _verifier_settings(state)
    address = args.remote or settings.get("server", {}).get("listen")
    issuer = args.issuer or settings.get("tokens", {}).get("issuer", "sgxemu-verifier")
    audience = args.audience or settings.get("tokens", {}).get("audience", "sgxemu")

    # With --json the explanation goes to stderr and stdout carries one JSON document.
    def tell(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout)

    checks = Checks(tell)
    channel: grpc.Channel | None = None
    try:
        quote = args.quote.read_bytes()
        challenge = args.challenge.read_bytes() if args.challenge else b""
        token = args.token.read_text().strip() if args.token else None
        user_data = args.user_data.encode()
        stub = None
        if args.remote is not None or token is not None:
            if address is None or state is None:
                raise CannotAppraise("reaching the verifier needs --state (its CA and address)")
            channel = tls_channel(address, (state / "tls" / "ca.pem").read_bytes())
            stub = verifier_pb2_grpc.QuoteVerificationServiceStub(channel)

        if stub is not None and args.remote is not None:
            tell(f"asking the verifier at {address} to appraise {args.quote}:")
            appraisal = appraise_remotely(
                stub, quote, args.collateral, challenge, user_data, checks
            )
        else:
            if args.collateral is None:
                raise CannotAppraise("a local appraisal needs --collateral C.json")
            anchors = _anchors(args, state)
            tell(f"appraising {args.quote} here, with sgx_verifier:")
            appraisal = appraise_locally(quote, args.collateral, anchors, checks)
            if challenge and appraisal.verified:
                checks.record(
                    "REPORTDATA[0:32] = SHA-256(challenge || user data)",
                    hmac.compare_digest(
                        appraisal.report_data[:32], binding_digest(challenge, user_data)
                    ),
                    "only the verifier can tell whether the challenge is genuine and unused",
                )

        token = token or appraisal.token
        if not appraisal.verified:
            tell("the quote is NOT verified: do not trust it")
        elif token is None and args.remote is not None:
            tell("no token: the verifier signs one only for a quote its policy accepts")
        elif token is None:
            tell("no token to check (give --token FILE, or use --remote)")
        else:
            assert stub is not None
            tell("checking the token against the verifier's published keys (GetJwks):")
            check_token(
                token,
                fetch_jwks(stub),
                issuer=issuer,
                audience=audience,
                quote=quote,
                mrenclave=appraisal.mrenclave,
                checks=checks,
            )
    except (CannotAppraise, OSError) as e:
        print(f"relying_party: {e}", file=sys.stderr)
        return 2
    except grpc.RpcError as e:
        print(
            f"relying_party: the verifier at {address}: {e.code().name}: {e.details()}",
            file=sys.stderr,
        )
        return 2
    finally:
        if channel is not None:
            channel.close()

    if args.json:
        print(
            json.dumps(
                {
                    "verified": appraisal.verified,
                    "accepted": appraisal.accepted,
                    "passed": appraisal.verified and checks.passed,
                    "checks": [{"check": n, "ok": ok, "detail": d} for n, ok, d in checks.results],
                },
                indent=2,
            )
        )
    if not appraisal.verified:
        return 2
    tell("trust it: every check passed" if checks.passed else "do NOT trust it: a check failed")
    return 0 if checks.passed else 1


if __name__ == "__main__":
    sys.exit(main())
