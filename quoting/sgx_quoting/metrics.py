"""Prometheus metrics of the quoting service.

Invariants: every metric lives in the service's own :class:`CollectorRegistry` (never the
process-global one), so several services in one process (tests, benchmarks) do not collide;
labels carry method names, status codes and reason codes only (never report contents, keys or
enclave handles).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class QuotingMetrics:
    """The metrics one quoting service exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "sgxemu_quoting_calls",
            "Quoting RPCs by method and gRPC status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.quotes = Counter(
            "sgxemu_quoting_quotes", "Quotes written", registry=self.registry
        )
        self.refusals = Counter(
            "sgxemu_quoting_refusals",
            "REPORTs refused, by reason (REPORT_MAC_MISMATCH, REPORT_MALFORMED, ...)",
            ["reason"],
            registry=self.registry,
        )
        self.launches = Counter(
            "sgxemu_quoting_enclave_launches",
            "Launches of the PCE and QE pair (at start and after platform resets)",
            registry=self.registry,
        )
        self.certifications = Counter(
            "sgxemu_quoting_certifications",
            "QE reports certified by the PCE (at launch and after TCB changes)",
            registry=self.registry,
        )
        self.quote_seconds = Histogram(
            "sgxemu_quoting_quote_seconds",
            "Time to write one quote (REPORT check, signature, encoding)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0),
            registry=self.registry,
        )

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (0 when absent); for tests and the benchmark."""
        got = self.registry.get_sample_value(name, labels or {})
        return 0.0 if got is None else got
