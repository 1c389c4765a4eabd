"""`/metrics`: the process's metric store in the Prometheus text format.

The store (:data:`kubernetai.core.metrics.PROCESS`) holds plain numbers; this module turns
them into ``prometheus_client`` families only when `/metrics` is read, through a custom
collector, and writes them with ``prometheus_client``'s own exposition. One registry
serves every listener of the process, as CoreDNS's default registry does: whichever
address a scraper asks, it sees every block's metrics. Besides the store, the registry
holds ``prometheus_client``'s process collector (``process_cpu_seconds_total``,
``process_resident_memory_bytes``, ``process_open_fds``, ... : the names Go's client
exports too), and its Python platform and garbage-collector collectors in place of Go's
``go_*`` runtime metrics.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any, Iterable, Iterator

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from twisted.web import resource

from kubernetai.core.metrics import PROCESS, Counter, Histogram, MetricStore

__all__ = ["StoreCollector", "registry", "render_metrics", "MetricsPage", "go_float"]


def go_float(value: float) -> str:
    """``value`` as Go's ``strconv.FormatFloat(v, 'g', -1, 64)`` writes it, which is how
    Go's client writes a bucket's ``le`` (``0.00025``, ``16000``, ``1e+06``, ``+Inf``)."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    _, digits, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    text = "".join(map(str, digits))
    point = len(digits) + int(exponent)      # the value is 0.TEXT x 10**point
    if point - 1 < -4 or point - 1 >= 6:     # Go's shortest 'g' switches to an exponent
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{sign}{mantissa}e{point - 1:+03d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{text}"
    if point >= len(text):
        return sign + text + "0" * (point - len(text))
    return f"{sign}{text[:point]}.{text[point:]}"


def _families(metrics: Iterable[Any]) -> Iterator[Metric]:
    """The store's metrics as ``prometheus_client`` families, those of one name merged
    (several collectors may each give part of one family)."""
    merged: dict[str, list[Any]] = {}
    for metric in metrics:
        merged.setdefault(metric.name, []).append(metric)
    for name, parts in merged.items():
        first = parts[0]
        labelnames = list(first.labelnames)
        family: Any
        if isinstance(first, Histogram):
            family = HistogramMetricFamily(name, first.help, labels=labelnames)
            bounds = [go_float(b) for b in first.buckets] + ["+Inf"]
            for part in parts:
                for labels in list(part.values):
                    cumulative, total = part.cumulative(labels)
                    family.add_metric(list(labels), list(zip(bounds, cumulative)), total)
        else:
            kind = CounterMetricFamily if isinstance(first, Counter) else GaugeMetricFamily
            family = kind(name, first.help, labels=labelnames)
            seen: dict[tuple[str, ...], float] = {}
            for part in parts:
                for labels, value in list(part.values.items()):
                    seen[labels] = seen.get(labels, 0) + value
            if not seen and not labelnames:
                seen[()] = 0  # an unlabelled counter or gauge is there from the start
            for labels, value in seen.items():
                family.add_metric(list(labels), value)
        yield family


class StoreCollector:
    """A ``prometheus_client`` collector over a :class:`MetricStore`."""

    def __init__(self, store: MetricStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        return _families(self.store)

    def describe(self) -> list[Metric]:
        return []  # nothing known ahead: the registry must not collect to describe


def _registry(store: MetricStore) -> CollectorRegistry:
    made = CollectorRegistry(auto_describe=False)
    made.register(StoreCollector(store))  # type: ignore[arg-type]
    ProcessCollector(registry=made)
    PlatformCollector(registry=made)
    GCCollector(registry=made)
    return made


_REGISTRY: CollectorRegistry | None = None


def registry() -> CollectorRegistry:
    """The process's registry (made on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _registry(PROCESS)
    return _REGISTRY


def render_metrics() -> bytes:
    """The text format 0.0.4, as CoreDNS's ``promhttp`` handler writes it."""
    return generate_latest(registry())


class MetricsPage(resource.Resource):
    """``GET /metrics``."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        body = render_metrics()
        request.setHeader(b"content-type", CONTENT_TYPE_PLAIN_0_0_4.encode())
        return body
