"""Prometheus metrics of the platform service: calls, denials by rule, EPC and enclave use.

Invariants: every metric lives in the service's own :class:`CollectorRegistry` (never the
process-global one), so several platforms in one process (tests) do not collide; EPC and
enclave gauges are read from the driver at scrape time, never cached; labels carry method
names, status codes, reason codes and rule names only (no handles, no identities).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sgx_platform.driver import PlatformInfo


class _PlatformCollector(Collector):
    def __init__(self, info: Callable[[], PlatformInfo]) -> None:
        self._info = info

    def collect(self) -> Iterator[Metric]:
        info = self._info()
        epc = GaugeMetricFamily(
            "sgxemu_platform_epc_pages", "EPC pages by state", labels=["state"]
        )
        epc.add_metric(["total"], info.epc_pages_total)
        epc.add_metric(["free"], info.epc_pages_free)
        epc.add_metric(["used"], info.epc_pages_total - info.epc_pages_free)
        epc.add_metric(["evicted"], info.epc_pages_evicted)
        yield epc
        yield GaugeMetricFamily(
            "sgxemu_platform_enclaves", "Enclaves alive in this boot", value=info.enclave_count
        )
        yield GaugeMetricFamily(
            "sgxemu_platform_boot_epoch", "The platform's boot number",
            value=int.from_bytes(info.boot_epoch, "little"),
        )


class PlatformMetrics:
    """The metrics one platform service exports."""

    def __init__(self, info: Callable[[], PlatformInfo]) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "sgxemu_platform_calls",
            "Platform RPCs by method and gRPC status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.denials = Counter(
            "sgxemu_platform_denials",
            "Refusals by the rule or check that decided (load rules, launch, attributes)",
            ["rule", "reason"],
            registry=self.registry,
        )
        self.registry.register(_PlatformCollector(info))

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (0 when absent); for tests and the benchmark."""
        got = self.registry.get_sample_value(name, labels or {})
        return 0.0 if got is None else got
