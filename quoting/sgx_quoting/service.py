"""The quoting service process: QuotingService on its socket, and (optionally) the PCS.

:class:`QuotingServer` composes the :class:`~sgx_quoting.engine.QuotingEngine` with its gRPC
ports (the platform's device and provision sockets, the PCS's ProvisioningService) and serves
``sgx.quoting.v1.QuotingService`` on a Unix socket (``$STATE/run/quoting.sock``, its file mode
is the gate) and optionally on TCP with mTLS, with health, reflection, Prometheus metrics and
graceful shutdown (:class:`~sgx_rpc.server.ServiceHost`).

With ``serve_pcs`` the same process also serves the emulated PCS (the vendor's service, from
``$STATE/pcs``) on its own socket. That is co-hosting only: the engine still reaches the PCS
through its socket with a gRPC client, exactly as it would reach a PCS elsewhere, and holds no
reference to the PCS's store.

Invariants: the PCS listener is up before the engine registers its PCK; the quoting socket is
bound only after the engine started (or, when the platform does not answer yet or refuses to
launch the PCE/QE, is left to launch them at the next request, each request saying why it
cannot be served meanwhile); :meth:`stop` stops serving first (in-flight calls
finish), then destroys the enclaves, then closes the channels.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import start_http_server

from sgx_quoting.config import QuotingConfig
from sgx_quoting.enclave_errors import EnclaveLaunchError, QuotingUnavailableError
from sgx_quoting.engine import QuotingEngine
from sgx_quoting.metrics import QuotingMetrics
from sgx_quoting.rpc import provisioning
from sgx_quoting.rpc.pcs_client import GrpcPcs
from sgx_quoting.rpc.platform_client import GrpcPlatform
from sgx_quoting.rpc.quoting import ROLE_LOCAL, SERVICE_NAME, QuotingServicer, authorizer, register
from sgx_quoting.state import PcsStore
from sgx_rpc.server import ServiceHost, TlsListener, UnixListener

log = logging.getLogger(__name__)


class QuotingServer:
    """Call :meth:`start`, then :meth:`stop` (or :meth:`serve_forever`)."""

    def __init__(self, config: QuotingConfig, *, max_workers: int = 8) -> None:
        self.config = config
        self.metrics = QuotingMetrics()
        self._pcs_host: ServiceHost | None = None
        if config.serve_pcs:
            self._pcs_host = ServiceHost(
                provisioning.authorizer(),
                [provisioning.register(provisioning.ProvisioningServicer(PcsStore(config.pcs_dir)))],
                [provisioning.SERVICE_NAME],
                max_workers=max_workers,
            )
            self._pcs_host.add(
                UnixListener(config.pcs_socket, config.pcs_socket_mode, provisioning.ROLE_LOCAL)
            )
        self.platform = GrpcPlatform.unix(
            config.platform_device, config.platform_provision, timeout=config.request_timeout
        )
        self.pcs = GrpcPcs.unix(config.pcs_socket, timeout=config.request_timeout)
        self.engine = QuotingEngine(
            self.platform, self.pcs, config.quoting_dir, config.enclaves_dir, metrics=self.metrics
        )
        self.host = ServiceHost(
            authorizer(),
            [register(QuotingServicer(self.engine))],
            [SERVICE_NAME],
            max_workers=max_workers,
        )
        self.host.add(UnixListener(config.socket, config.socket_mode, ROLE_LOCAL))
        if config.tcp is not None:
            tcp = config.tcp
            self._tcp: TlsListener | None = TlsListener(
                tcp.address,
                tcp.certificate.read_bytes(),
                tcp.private_key.read_bytes(),
                client_ca_pem=tcp.client_ca.read_bytes(),
            )
            self.host.add(self._tcp)
        else:
            self._tcp = None
        self._addresses: dict[str, str] = {}
        self._metrics_server: Any = None
        self._stopped = threading.Event()

    @property
    def addresses(self) -> dict[str, str]:
        """Where each listener ended up (``quoting``, ``pcs``, ``tcp``, ``metrics``)."""
        return dict(self._addresses)

    def start(self) -> dict[str, str]:
        if self._pcs_host is not None:
            bound = self._pcs_host.start()
            self._addresses["pcs"] = next(iter(bound.values()))
        try:
            self.engine.start()
        except (QuotingUnavailableError, EnclaveLaunchError) as e:
            # The platform is not up yet, or launch control refuses the PCE/QE: serve anyway
            # (each request says why it cannot be served) and launch at the next request.
            log.error("%s; the enclaves will be launched at the next request", e)
        bound = self.host.start()
        for listener, address in bound.items():
            self._addresses["tcp" if listener is self._tcp else "quoting"] = address
        if self.config.metrics_address is not None:
            host, port = self.config.metrics_address.rsplit(":", 1)
            server, _ = start_http_server(int(port), host, registry=self.metrics.registry)
            self._metrics_server = server
            self._addresses["metrics"] = f"{host}:{server.server_port}"
        log.info("quoting service started: %s", self._addresses)
        return self.addresses

    def stop(self, grace: float = 5.0) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.host.stop(grace)
        self.engine.stop()
        if self._pcs_host is not None:
            self._pcs_host.stop(grace)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        self.platform.close()
        self.pcs.close()

    def serve_forever(self, grace: float = 5.0) -> None:
        """Block until SIGTERM or SIGINT, then stop gracefully."""
        try:
            self.host.serve_forever(grace)
        finally:
            self.stop(grace)
