"""kill -9 of each service in the middle of a flow, then ``sgxemu up --detach`` again.

Each test does part of a flow, kills one service with SIGKILL (no chance to flush or clean
up), checks that its clients see it gone (and that launches fail closed while launchctl is
gone), restarts it with ``sgxemu up --detach`` (which starts only what is not running), and
then checks that nothing it had acknowledged was lost and that clients created before the
kill work again on the same channels:

- launchctl: allowlist entries and the lock (the platform's latch still holds its digest);
- quoting: the same attestation key; a REPORT made before the kill is still quoted;
- verifier: a redeemed challenge stays redeemed, an issued one stays valid, the token keys
  (JWKS) are the same, so a token issued before the kill still checks;
- platform: data sealed before the restart unseals after it; old enclave handles are stale
  (NOT_FOUND, STALE_HANDLE), never silently reused; launchctl and quoting follow the new boot
  and the allowlist is intact. A platform restart is an emulated reboot: the latch, and so the
  lock, is cleared (ADR 0018); the allowlist itself is kept.

The module's world has its own state directory (conftest ``world``); its teardown checks that
``sgxemu down`` leaves no process behind.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc
import jwt
import pytest

from sgx.platform.v1 import platform_pb2
from sgx.quoting.v1 import provisioning_pb2, quoting_pb2
from sgx.verifier.v1 import verifier_pb2
from sgx_platform.arch.dcap.quote import Quote
from sgx_platform.rpc.client import EnclaveSession, PlatformClient, PlatformRpcError

if TYPE_CHECKING:
    from conftest import World

T = TypeVar("T")

#: How long a client keeps retrying after a restart before the test fails. Generous: this is
#: a liveness bound, not a timing measurement (bench/ measures).
RECOVERY_SECONDS = 20.0


def eventually(call: Callable[[], T], retry_on: tuple[type[BaseException], ...]) -> T:
    """``call()``, retried on ``retry_on`` until it succeeds or RECOVERY_SECONDS pass."""
    deadline = time.monotonic() + RECOVERY_SECONDS
    while True:
        try:
            return call()
        except retry_on:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="module")
def app(world: World) -> tuple[Path, Path]:
    image, sig = world.build_signed("app", world.keys.app)
    run = world.sgxemu("launchctl", "add-signer", "--key", world.keys.app)
    assert run.code == 0, run.err
    return image, sig


@contextmanager
def loaded(world: World, client: PlatformClient, app: tuple[Path, Path]) -> Iterator[bytes]:
    """The app enclave, loaded through the platform; yields its handle."""
    image, sig = app
    result = client.load_enclave_from_file(image, sig.read_bytes())
    with EnclaveSession(client, result.handle, result.enclave_id, result.lease_seconds):
        yield result.handle


def report_data(challenge: bytes) -> bytes:
    return hashlib.sha256(challenge).digest() + bytes(32)


def collateral(world: World, quote: bytes) -> str:
    with world.pcs_channel() as channel:
        reply = world.pcs(channel).GetCollateral(
            provisioning_pb2.GetCollateralRequest(quote=quote), timeout=30
        )
    text: str = reply.quote_collateral_json
    return text


def verify(
    world: World, channel: grpc.Channel, quote: bytes, challenge: bytes
) -> verifier_pb2.VerifyQuoteResponse:
    response: verifier_pb2.VerifyQuoteResponse = world.verifier(channel).VerifyQuote(
        verifier_pb2.VerifyQuoteRequest(
            quote=quote, collateral_json=collateral(world, quote), challenge=challenge
        ),
        timeout=30,
        wait_for_ready=True,
    )
    return response


def new_challenge(world: World, channel: grpc.Channel) -> bytes:
    reply = world.verifier(channel).CreateChallenge(
        verifier_pb2.CreateChallengeRequest(), timeout=30, wait_for_ready=True
    )
    challenge: bytes = reply.challenge
    return challenge


def quote_for(
    world: World, client: PlatformClient, app: tuple[Path, Path], challenge: bytes
) -> bytes:
    """The app enclave's quote binding ``challenge`` (platform and quoting calls)."""
    with world.quoting_channel() as channel, loaded(world, client, app) as handle:
        stub = world.quoting(channel)
        target = stub.GetTargetInfo(quoting_pb2.GetTargetInfoRequest(), timeout=30).target_info
        report = client.create_report(handle, target, report_data(challenge))
        quote: bytes = stub.GetQuote(quoting_pb2.GetQuoteRequest(report=report), timeout=30).quote
    return quote


def attestation_key(world: World) -> bytes:
    with world.quoting_channel() as channel:
        info = world.quoting(channel).GetQuotingInfo(
            quoting_pb2.GetQuotingInfoRequest(), timeout=30, wait_for_ready=True
        )
    key: bytes = info.attestation_public_key
    return key


def jwks_kids(world: World, channel: grpc.Channel) -> list[str]:
    reply = world.verifier(channel).GetJwks(
        verifier_pb2.GetJwksRequest(), timeout=30, wait_for_ready=True
    )
    return sorted(str(k.key_id) for k in jwt.PyJWKSet.from_json(reply.jwks_json).keys)


class LaunchRefused(Exception):
    pass


def cli_launch(world: World, image: Path, sig: Path) -> None:
    """``sgxemu enclave load`` (load, print, destroy); LaunchRefused when it fails."""
    run = world.sgxemu("enclave", "load", image, sig)
    if run.code != 0:
        raise LaunchRefused(run.err)


def launch(world: World, client: PlatformClient, app: tuple[Path, Path]) -> None:
    """Load the app enclave through ``client`` and destroy it again."""
    with loaded(world, client, app):
        pass


def assert_accepted(response: verifier_pb2.VerifyQuoteResponse) -> None:
    assert response.verified and response.accepted and response.token, (
        [f.code for f in response.failures],
        [(v.code, v.detail) for v in response.policy.violations],
    )


# -- launchctl -----------------------------------------------------------------------------------


def test_launchctl_kill9_keeps_the_allowlist_and_the_lock(
    world: World, app: tuple[Path, Path]
) -> None:
    image, sig = app
    assert world.sgxemu("launchctl", "add-signer", "--key", world.keys.admin).code == 0
    assert world.sgxemu("launchctl", "lock").code == 0
    before = world.sgxemu("launchctl", "status", "--json").json()
    entries = world.sgxemu("launchctl", "list", "--json").json()
    assert before["locked"] is True and len(entries) == 3

    world.kill9("launchctl")
    # No launch-control daemon: the platform gets no policy and no token, so nothing launches.
    closed = world.sgxemu("enclave", "load", image, sig)
    assert closed.code == 1
    assert "LOAD_POLICY_UNAVAILABLE" in closed.err or "LAUNCH_AUTHORITY" in closed.err

    world.restart("launchctl")
    after = world.sgxemu("launchctl", "status", "--json").json()
    assert after["locked"] is True
    assert after["policy_digest"] == before["policy_digest"] == after["latched_digest"]
    assert world.sgxemu("launchctl", "list", "--json").json() == entries
    refused = world.sgxemu("launchctl", "add-signer", "--key", world.keys.extra)
    assert refused.code == 1 and "POLICY_LOCKED" in refused.err
    # The platform, the daemon's client, recovers: the allowed enclave launches again.
    eventually(lambda: cli_launch(world, image, sig), (LaunchRefused,))
    assert world.sgxemu("launchctl", "audit", "--verify").code == 0


# -- quoting -------------------------------------------------------------------------------------


def test_quoting_kill9_keeps_the_attestation_key_and_quotes_an_earlier_report(
    world: World, app: tuple[Path, Path]
) -> None:
    key = attestation_key(world)
    client = world.platform()
    quoting_channel = world.quoting_channel()
    verifier_channel = world.verifier_channel()
    try:
        quoting = world.quoting(quoting_channel)
        challenge = new_challenge(world, verifier_channel)
        with loaded(world, client, app) as handle:
            target = quoting.GetTargetInfo(quoting_pb2.GetTargetInfoRequest(), timeout=30)
            report = client.create_report(handle, target.target_info, report_data(challenge))

            world.kill9("quoting")
            with pytest.raises(grpc.RpcError) as gone:
                quoting.GetQuote(quoting_pb2.GetQuoteRequest(report=report), timeout=5)
            assert gone.value.code() == grpc.StatusCode.UNAVAILABLE

            world.restart("quoting")
            # The same channel, the REPORT made for the quoting enclave before the kill.
            quote = eventually(
                lambda: (
                    quoting.GetQuote(
                        quoting_pb2.GetQuoteRequest(report=report), timeout=30, wait_for_ready=True
                    ).quote
                ),
                (grpc.RpcError,),
            )
        assert attestation_key(world) == key
        assert Quote.from_bytes(quote).signature_data.attestation_public_key == key
        assert_accepted(verify(world, verifier_channel, quote, challenge))
    finally:
        client.close()
        quoting_channel.close()
        verifier_channel.close()


# -- verifier ------------------------------------------------------------------------------------


def test_verifier_kill9_keeps_redeemed_challenges_issued_challenges_and_token_keys(
    world: World, app: tuple[Path, Path]
) -> None:
    client = world.platform()
    channel = world.verifier_channel()
    try:
        kids = jwks_kids(world, channel)
        redeemed = new_challenge(world, channel)
        first = quote_for(world, client, app, redeemed)
        response = verify(world, channel, first, redeemed)
        assert_accepted(response)
        token = response.token
        issued = new_challenge(world, channel)

        world.kill9("verifier")
        stub = world.verifier(channel)
        with pytest.raises(grpc.RpcError) as gone:
            stub.CreateChallenge(verifier_pb2.CreateChallengeRequest(), timeout=5)
        assert gone.value.code() == grpc.StatusCode.UNAVAILABLE
        # The application carries on while the verifier is away: its quote waits.
        second = quote_for(world, client, app, issued)

        world.restart("verifier")
        replay = eventually(lambda: verify(world, channel, first, redeemed), (grpc.RpcError,))
        assert replay.verified and not replay.accepted and not replay.token
        assert [v.detail for v in replay.policy.violations] == ["CHALLENGE_REPLAYED"]
        assert_accepted(verify(world, channel, second, issued))
        assert jwks_kids(world, channel) == kids
        # A token issued before the kill still checks against the JWKS served after it.
        reply = stub.GetJwks(verifier_pb2.GetJwksRequest(), timeout=30)
        keys = {k.key_id: k for k in jwt.PyJWKSet.from_json(reply.jwks_json).keys}
        kid = jwt.get_unverified_header(token)["kid"]
        claims = jwt.decode(token, keys[kid].key, algorithms=["ES256"], audience="sgxemu")
        assert claims["sub"] == "sha256:" + hashlib.sha256(first).hexdigest()
    finally:
        client.close()
        channel.close()


# -- platform ------------------------------------------------------------------------------------


def test_platform_kill9_sealed_data_unseals_and_everyone_follows_the_new_boot(
    world: World, app: tuple[Path, Path]
) -> None:
    key = attestation_key(world)
    entries = world.sgxemu("launchctl", "list", "--json").json()
    client = world.platform()
    channel = world.verifier_channel()
    try:
        boot = client.info().boot_epoch
        secret, aad = b"the application's secret", b"not secret, but authenticated"
        with loaded(world, client, app) as handle:
            by_enclave = client.seal(handle, secret, aad, policy=platform_pb2.SEAL_POLICY_MRENCLAVE)
            by_signer = client.seal(handle, secret, aad, policy=platform_pb2.SEAL_POLICY_MRSIGNER)

            world.kill9("platform")
            with pytest.raises(PlatformRpcError) as gone:
                client.info()
            assert gone.value.code == grpc.StatusCode.UNAVAILABLE

            world.restart("platform")
            info = eventually(client.info, (PlatformRpcError,))
            assert info.boot_epoch != boot
            # The handle belongs to the old boot: refused as stale, never reused.
            with pytest.raises(PlatformRpcError) as stale:
                client.unseal(handle, by_enclave)
            assert stale.value.code == grpc.StatusCode.NOT_FOUND
            assert stale.value.reason == "STALE_HANDLE"

        # launchctl follows the new boot (the latch, and so the lock, was cleared: a reboot)
        # and still holds every entry; the same client launches the enclave again.
        eventually(lambda: launch(world, client, app), (PlatformRpcError,))
        status = world.sgxemu("launchctl", "status", "--json").json()
        assert status["boot_epoch"] == info.boot_epoch.hex()
        assert status["locked"] is False and status["latched_digest"] is None
        assert world.sgxemu("launchctl", "list", "--json").json() == entries
        with loaded(world, client, app) as handle:
            assert client.unseal(handle, by_enclave) == (secret, aad)
            assert client.unseal(handle, by_signer) == (secret, aad)

        # Quoting relaunches its enclaves on the new boot with the same sealed key.
        challenge = new_challenge(world, channel)
        quote = eventually(
            lambda: quote_for(world, client, app, challenge), (grpc.RpcError, PlatformRpcError)
        )
        assert attestation_key(world) == key
        assert_accepted(verify(world, channel, quote, challenge))
    finally:
        client.close()
        channel.close()
