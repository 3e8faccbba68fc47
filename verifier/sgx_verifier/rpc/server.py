"""Assembling the verification service from its configuration, and serving it.

Invariants: every TCP listener is TLS (the service CA's certificate); VerifyQuote,
CreateChallenge and GetJwks are open to any TLS client, ImportCollateral and RefreshCollateral
only to the admin role (the 0600 admin socket, or an mTLS listener whose client certificate
names the admin). Health, reflection and graceful shutdown come from :class:`ServiceHost`;
metrics are served on their own loopback HTTP endpoint when configured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from sgx.verifier.v1 import verifier_pb2 as pb
from sgx.verifier.v1 import verifier_pb2_grpc as pb_grpc
from sgx_rpc.channel import QUICK_RECONNECT, tls_channel, unix_channel
from sgx_rpc.server import Authorizer, Listener, ServiceHost, TlsListener, UnixListener
from sgx_verifier.challenge import ChallengeKey, ChallengeService, SqliteReplayStore
from sgx_verifier.fetch import PcsClient
from sgx_verifier.rpc.metrics import VerifierMetrics
from sgx_verifier.rpc.pcs import GrpcPcsSource
from sgx_verifier.rpc.servicer import SERVICE_NAME, QuoteVerificationServicer
from sgx_verifier.service import (
    Appraiser,
    CollateralSource,
    ConfigError,
    RestSource,
    VerifierConfig,
    VerifierService,
)
from sgx_verifier.store import SqliteCollateralStore
from sgx_verifier.token import TokenIssuer, TokenKeyring

log = logging.getLogger(__name__)

_PUBLIC_METHODS = ("VerifyQuote", "CreateChallenge", "GetJwks")
#: The RPCs each role may call: any TLS client the public ones, the admin all of them.
ROLE_METHODS = {
    "client": _PUBLIC_METHODS,
    "admin": (*_PUBLIC_METHODS, "ImportCollateral", "RefreshCollateral"),
}


def default_appraiser() -> Appraiser:
    from sgx_verifier.appraisal import appraise

    return appraise


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror or e}") from None


def build_source(config: VerifierConfig) -> CollateralSource | None:
    if config.pcs_url and config.pcs_grpc:
        raise ConfigError("[pcs]: set url or grpc, not both")
    cafile = config.resolve(config.pcs_ca) if config.pcs_ca else None
    if config.pcs_url:
        return RestSource(PcsClient(config.pcs_url, cafile=cafile))
    if config.pcs_grpc:
        target = config.pcs_grpc
        if target.startswith("unix:"):
            channel = unix_channel(
                config.resolve(Path(target.removeprefix("unix:"))), options=QUICK_RECONNECT
            )
        else:
            if cafile is None:
                raise ConfigError("[pcs] grpc over TCP needs ca (the PCS's TLS CA)")
            channel = tls_channel(target, _read(cafile, "PCS CA"), options=QUICK_RECONNECT)
        return GrpcPcsSource(channel, target)
    return None


def build_service(
    config: VerifierConfig,
    *,
    appraise: Appraiser | None = None,
    source: CollateralSource | None = None,
    clock: Callable[[], float] = time.time,
) -> VerifierService:
    """The domain service: store, keys, anchors and policy from the configuration."""
    for directory in {
        config.resolve(config.collateral_db).parent,
        config.resolve(config.challenge_key).parent,
    }:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = SqliteCollateralStore(config.resolve(config.collateral_db))
    challenges = ChallengeService(
        ChallengeKey.load_or_create(config.resolve(config.challenge_key)),
        SqliteReplayStore(config.resolve(config.replay_db)),
        ttl=config.challenge_ttl,
    )
    keyring = TokenKeyring.load_or_create(
        config.resolve(config.token_keys), max_lifetime=config.token_max_lifetime
    )
    tokens = TokenIssuer(keyring, issuer=config.token_issuer, lifetime=config.token_lifetime)
    return VerifierService(
        store=store,
        anchors=config.anchor_set(),
        challenges=challenges,
        tokens=tokens,
        appraise=appraise or default_appraiser(),
        default_policy=config.default_policy(),
        default_audience=config.token_audience,
        source=source if source is not None else build_source(config),
        clock=clock,
    )


@dataclass
class VerifierServer:
    """A running (or ready to run) verification service."""

    service: VerifierService
    host: ServiceHost
    metrics: VerifierMetrics
    metrics_listen: str | None = None
    addresses: dict[Listener, str] = field(default_factory=dict)
    metrics_address: str | None = None

    def start(self) -> dict[Listener, str]:
        self.addresses = self.host.start()
        if self.metrics_listen:
            self.metrics_address = self.metrics.serve(self.metrics_listen)
        for listener, address in self.addresses.items():
            log.info("verifier listening on %s (%s)", address, type(listener).__name__)
        return self.addresses

    def address_of(self, kind: type[Listener]) -> str:
        return next(a for listener, a in self.addresses.items() if isinstance(listener, kind))

    def stop(self, grace: float = 5.0) -> None:
        self.host.stop(grace)
        self.metrics.stop()

    def serve_forever(self, grace: float = 5.0) -> None:
        try:
            self.host.serve_forever(grace)
        finally:
            self.metrics.stop()


def build_server(
    config: VerifierConfig,
    service: VerifierService,
    *,
    max_workers: int = 8,
) -> VerifierServer:
    """The gRPC host for ``service`` with the listeners the configuration names."""
    metrics = VerifierMetrics(service.store, service.now)
    servicer = QuoteVerificationServicer(service, metrics)
    admin_cn = config.admin_common_name
    authorizer = Authorizer.for_service(
        pb.DESCRIPTOR.services_by_name["QuoteVerificationService"],
        ROLE_METHODS,
        domain="verifier.sgxemu",
        role_of_certificate=lambda cn: "admin" if cn == admin_cn else "client",
    )
    host = ServiceHost(
        authorizer,
        [lambda server: pb_grpc.add_QuoteVerificationServiceServicer_to_server(servicer, server)],
        [SERVICE_NAME],
        max_workers=max_workers,
    )
    certificate = _read(config.resolve(config.tls_certificate), "TLS certificate")
    key = _read(config.resolve(config.tls_key), "TLS key")
    host.add(TlsListener(config.listen, certificate, key, anonymous_role="client"))
    if config.admin_socket is not None:
        host.add(UnixListener(config.resolve(config.admin_socket), 0o600, "admin"))
    if config.admin_listen is not None:
        if config.client_ca is None:
            raise ConfigError("[server] admin_listen needs client_ca (mTLS)")
        client_ca = _read(config.resolve(config.client_ca), "client CA")
        host.add(TlsListener(config.admin_listen, certificate, key, client_ca_pem=client_ca))
    return VerifierServer(service, host, metrics, config.metrics_listen)


def stub(channel: grpc.Channel) -> pb_grpc.QuoteVerificationServiceStub:
    return pb_grpc.QuoteVerificationServiceStub(channel)
