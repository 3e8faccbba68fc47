#!/usr/bin/env python3
"""An application attesting its enclave to a verifier, over the services' gRPC APIs.

This is what ``sgxemu attest --challenge`` plus ``sgxemu verify --remote`` do, written out as a
small client of the running services (``sgxemu up``), one call per step:

1. the verifier (TLS, trusting the state directory's service CA) hands out a fresh challenge;
2. the platform loads the enclave: it opens the SGXS image itself, so the image must lie under
   an allowed directory (by default ``$STATE/enclaves/``) and its signer must be on launchctl's
   allowlist (token mode);
3. the quoting service says which enclave it is (its TARGETINFO), so that the enclave's REPORT
   is MAC'd for the quoting enclave;
4. the enclave makes its REPORT with REPORTDATA[0:32] = SHA-256(challenge || user data): the
   binding rule every component uses, so the verifier can tell the quote is fresh;
5. the quoting service turns the REPORT into a DCAP quote (v3, ECDSA P-256);
6. the emulated PCS (co-hosted with the quoting service) gives the quote's collateral;
7. the verifier appraises the quote, redeems the challenge (once) and, when its policy accepts
   the result, signs a token (a JWT) that relying parties check against its JWKS.

Run ``python examples/attest_client.py --help``; ``examples/README.md`` shows a whole session.
Exit 0 when the verifier accepted the quote and issued a token, 1 when it refused, 2 when a
service refused a step or could not be reached.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from sgx.quoting.v1 import provisioning_pb2, provisioning_pb2_grpc, quoting_pb2, quoting_pb2_grpc
from sgx.verifier.v1 import verifier_pb2, verifier_pb2_grpc
from sgx_platform.arch.binding import report_data_for
from sgx_platform.config import load_config as load_platform_config
from sgx_platform.rpc.client import EnclaveSession, PlatformClient, PlatformRpcError
from sgx_quoting.config import load_config as load_quoting_config
from sgx_rpc.channel import tls_channel, unix_channel
from sgx_rpc.errors import error_info

TIMEOUT = 30.0


@dataclass(frozen=True)
class Services:
    """Where the services of one state directory listen (read from its configuration files)."""

    platform_socket: Path
    quoting_socket: Path
    pcs_socket: Path
    verifier_address: str
    service_ca_pem: bytes

    @classmethod
    def of_state(cls, state: Path, verifier: str | None = None) -> Services:
        platform = load_platform_config(state)
        quoting = load_quoting_config(state)
        if verifier is None:
            with open(state / "verifier" / "verifier.toml", "rb") as f:
                verifier = str(tomllib.load(f)["server"]["listen"])
        return cls(
            platform_socket=platform.sockets.device,
            quoting_socket=quoting.socket,
            pcs_socket=quoting.pcs_socket,
            verifier_address=verifier,
            service_ca_pem=(state / "tls" / "ca.pem").read_bytes(),
        )


@dataclass(frozen=True)
class Attestation:
    """Everything the flow produced: what the application keeps or hands on."""

    challenge: bytes
    user_data: bytes
    report_data: bytes
    quote: bytes
    collateral_json: str
    verdict: verifier_pb2.VerifyQuoteResponse


class StepFailed(Exception):
    """A service refused a step; the message says which step and why."""


def _refused(step: str, error: grpc.RpcError) -> StepFailed:
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        return StepFailed(f"{step}: no answer; are the services up? (sgxemu up --detach)")
    info = error_info(error)
    reason = info.reason if info is not None else error.code().name
    return StepFailed(f"{step}: refused ({reason}): {error.details()}")


def attest(
    services: Services,
    image: Path,
    sigstruct: bytes,
    user_data: bytes = b"",
    *,
    tell: Callable[[str], None] = print,
) -> Attestation:
    """Run the whole flow once; ``tell`` receives one plain sentence per step."""
    verifier_channel = tls_channel(services.verifier_address, services.service_ca_pem)
    quoting_channel = unix_channel(services.quoting_socket)
    pcs_channel = unix_channel(services.pcs_socket)
    platform = PlatformClient.unix(services.platform_socket, timeout=TIMEOUT)
    verifier = verifier_pb2_grpc.QuoteVerificationServiceStub(verifier_channel)
    quoting = quoting_pb2_grpc.QuotingServiceStub(quoting_channel)
    pcs = provisioning_pb2_grpc.ProvisioningServiceStub(pcs_channel)
    try:
        try:
            challenge = verifier.CreateChallenge(
                verifier_pb2.CreateChallengeRequest(), timeout=TIMEOUT
            )
        except grpc.RpcError as e:
            raise _refused(f"challenge from the verifier at {services.verifier_address}", e) from e
        expires = datetime.datetime.fromtimestamp(challenge.expires_at, datetime.UTC)
        tell(
            f"1. the verifier issued a challenge ({len(challenge.challenge)} bytes, MAC'd by the "
            f"verifier, valid until {expires:%H:%M:%S} UTC, redeemable once)"
        )

        try:
            loaded = platform.load_enclave_from_file(image, sigstruct)
        except PlatformRpcError as e:
            hint = f" ({e.hint})" if e.hint and e.hint not in e.message else ""
            raise StepFailed(f"loading {image}: refused ({e.reason}): {e.message}{hint}") from e
        tell(
            f"2. the platform loaded {image.name} as enclave {loaded.enclave_id}: "
            f"MRENCLAVE {loaded.mrenclave}, MRSIGNER {loaded.mrsigner}"
        )
        # The session renews the enclave's lease in the background and destroys it at the end.
        with EnclaveSession(platform, loaded.handle, loaded.enclave_id, loaded.lease_seconds):
            try:
                target = quoting.GetTargetInfo(
                    quoting_pb2.GetTargetInfoRequest(), timeout=TIMEOUT
                ).target_info
            except grpc.RpcError as e:
                raise _refused("TARGETINFO from the quoting service", e) from e
            tell("3. the quoting service gave its enclave's TARGETINFO")

            report_data = report_data_for(challenge.challenge, user_data)
            try:
                report = platform.create_report(loaded.handle, target, report_data)
            except PlatformRpcError as e:
                raise StepFailed(f"REPORT: refused ({e.reason}): {e.message}") from e
            tell(
                f"4. the enclave made a REPORT for the quoting enclave; REPORTDATA[0:32] = "
                f"SHA-256(challenge || user data) = {report_data[:32].hex()}"
            )

        try:
            quote = quoting.GetQuote(
                quoting_pb2.GetQuoteRequest(report=report), timeout=TIMEOUT
            ).quote
        except grpc.RpcError as e:
            raise _refused("quote from the quoting service", e) from e
        tell(f"5. the quoting service signed a DCAP quote v3 ({len(quote)} bytes)")

        try:
            collateral = pcs.GetCollateral(
                provisioning_pb2.GetCollateralRequest(quote=quote), timeout=TIMEOUT
            ).quote_collateral_json
        except grpc.RpcError as e:
            raise _refused("collateral from the PCS", e) from e
        tell("6. the PCS gave the quote's collateral (TCB Info, QE Identity, CRLs)")

        try:
            verdict = verifier.VerifyQuote(
                verifier_pb2.VerifyQuoteRequest(
                    quote=quote,
                    collateral_json=collateral,
                    challenge=challenge.challenge,
                    user_data=user_data,
                ),
                timeout=TIMEOUT,
            )
        except grpc.RpcError as e:
            raise _refused("verification", e) from e
        tell("7. the verifier appraised the quote and redeemed the challenge")
    finally:
        platform.close()
        for channel in (verifier_channel, quoting_channel, pcs_channel):
            channel.close()
    return Attestation(challenge.challenge, user_data, report_data, quote, collateral, verdict)


def explain(verdict: verifier_pb2.VerifyQuoteResponse) -> list[str]:
    """The verdict in plain sentences."""
    lines = [
        f"verified: {'yes' if verdict.verified else 'NO'}; "
        f"accepted by the verifier's policy: {'yes' if verdict.accepted else 'NO'}"
    ]
    if verdict.verified:
        lines.append(
            f"TCB status {verdict.tcb_status} under trust anchor {verdict.trust_anchor.name!r}"
        )
        lines.append(
            f"enclave MRENCLAVE {verdict.enclave.mrenclave.hex()}, MRSIGNER "
            f"{verdict.enclave.mrsigner.hex()}, debug {'yes' if verdict.enclave.debug else 'no'}"
        )
    for failure in verdict.failures:
        lines.append(f"failed check {failure.check} ({failure.code}): {failure.message}")
        lines.append(f"  hint: {failure.hint}")
    for violation in verdict.policy.violations:
        lines.append(f"policy violation {violation.code}: {violation.message}")
    if verdict.warning:
        lines.append(f"warning: {verdict.warning}")
    return lines


def _write(path: str | None, data: bytes) -> None:
    if path and data:
        Path(path).write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Attest an enclave against running sgxemu services (gRPC)."
    )
    parser.add_argument("image", type=Path, help="the enclave image (SGXS) in an allowed dir")
    parser.add_argument("sigstruct", type=Path, help="its SIGSTRUCT (sgxemu sign)")
    parser.add_argument(
        "--state",
        type=Path,
        default=os.environ.get("SGXEMU_STATE"),
        help="the state directory (env SGXEMU_STATE)",
    )
    parser.add_argument("--verifier", help="the verifier's TLS address (default: verifier.toml)")
    parser.add_argument("--user-data", default="", help="text hashed with the challenge")
    parser.add_argument("--quote-out", help="write the quote here")
    parser.add_argument("--collateral-out", help="write the collateral JSON here")
    parser.add_argument("--challenge-out", help="write the (redeemed) challenge here")
    parser.add_argument("--token-out", help="write the token (JWT) here")
    parser.add_argument("--json", action="store_true", help="print one JSON document at the end")
    args = parser.parse_args(argv)
    if args.state is None:
        parser.error("give --state DIR or set SGXEMU_STATE")
    state = Path(args.state).expanduser().absolute()
    image = Path(args.image).absolute()

    try:
        services = Services.of_state(state, args.verifier)
        sigstruct = args.sigstruct.read_bytes()
    except (OSError, KeyError, ValueError) as e:
        print(f"attest_client: cannot use {state}: {e}", file=sys.stderr)
        return 2

    # With --json, the step-by-step explanation goes to stderr and stdout stays one document.
    def tell(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout)

    try:
        result = attest(services, image, sigstruct, args.user_data.encode(), tell=tell)
    except StepFailed as e:
        print(f"attest_client: {e}", file=sys.stderr)
        return 2

    verdict = result.verdict
    _write(args.quote_out, result.quote)
    _write(args.collateral_out, result.collateral_json.encode())
    _write(args.challenge_out, result.challenge)
    _write(args.token_out, verdict.token.encode())
    if args.json:
        print(
            json.dumps(
                {
                    "verified": verdict.verified,
                    "accepted": verdict.accepted,
                    "tcb_status": verdict.tcb_status,
                    "trust_anchor": verdict.trust_anchor.name,
                    "mrenclave": verdict.enclave.mrenclave.hex(),
                    "mrsigner": verdict.enclave.mrsigner.hex(),
                    "report_data": result.report_data.hex(),
                    "challenge": result.challenge.hex(),
                    "violations": [v.code for v in verdict.policy.violations],
                    "failures": [f.code for f in verdict.failures],
                    "token": verdict.token or None,
                },
                indent=2,
            )
        )
    else:
        for line in explain(verdict):
            print(line)
        if verdict.token:
            print("token (a JWT signed by the verifier; check it against its JWKS):")
            print(verdict.token)
        else:
            print("no token: the verifier issues one only for an accepted quote")
    return 0 if verdict.accepted and verdict.token else 1


if __name__ == "__main__":
    sys.exit(main())
