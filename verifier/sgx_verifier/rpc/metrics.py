"""Prometheus metrics of the verification service, in a registry of its own.

Invariants: verifications are counted by result (``accepted``, ``rejected`` by policy,
``not_verified``, ``invalid`` input, ``error``) with their latency; collateral age and time to
expiry are computed from the store at every scrape, so they are never stale; nothing here
reads or changes a verdict. The exposition endpoint binds where it is told (loopback by default).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sgx_verifier.store import CollateralStore

RESULTS = ("accepted", "rejected", "not_verified", "invalid", "error")


class _CollateralCollector(Collector):
    def __init__(self, store: CollateralStore, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        now = int(self._clock())
        age = GaugeMetricFamily(
            "sgxemu_verifier_collateral_age_seconds",
            "Seconds since the latest collateral item of each key was issued",
            labels=["kind", "key"],
        )
        expiry = GaugeMetricFamily(
            "sgxemu_verifier_collateral_expiry_seconds",
            "Seconds until the latest collateral item of each key passes its nextUpdate "
            "(negative: expired)",
            labels=["kind", "key"],
        )
        for stored in self._store.latest_all():
            item = stored.item
            labels = [item.kind.value, item.key]
            age.add_metric(labels, now - item.issue_date)
            expiry.add_metric(labels, item.next_update - now)
        yield age
        yield expiry


class VerifierMetrics:
    """The service's counters and histograms."""

    def __init__(self, store: CollateralStore, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.verifications = Counter(
            "sgxemu_verifier_verifications",
            "VerifyQuote calls by result",
            ["result"],
            registry=self.registry,
        )
        for result in RESULTS:
            self.verifications.labels(result)
        self.latency = Histogram(
            "sgxemu_verifier_verification_seconds",
            "VerifyQuote latency",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
            registry=self.registry,
        )
        self.challenges = Counter(
            "sgxemu_verifier_challenges_issued", "Challenges issued", registry=self.registry
        )
        self.imports = Counter(
            "sgxemu_verifier_collateral_imports",
            "Collateral items verified and stored, by what happened to the latest pointer",
            ["placement"],
            registry=self.registry,
        )
        self.registry.register(_CollateralCollector(store, clock))
        self._server: tuple[WSGIServer, threading.Thread] | None = None

    def observe(self, result: str, seconds: float) -> None:
        self.verifications.labels(result).inc()
        self.latency.observe(seconds)

    def serve(self, address: str) -> str:
        """Expose ``/metrics`` over HTTP at ``host:port`` (port 0: any); returns the address."""
        host, _, port = address.rpartition(":")
        server, thread = start_http_server(
            int(port), addr=host or "127.0.0.1", registry=self.registry
        )
        self._server = (server, thread)
        return f"{host or '127.0.0.1'}:{server.server_port}"

    def stop(self) -> None:
        if self._server is not None:
            server, thread = self._server
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._server = None
