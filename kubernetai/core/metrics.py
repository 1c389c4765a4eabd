"""The process's metrics, counted in plain numbers where they happen.

A query's step must not pay for a metrics library: the counting done on the query path is
a dict lookup and an integer add, on the reactor thread, with no lock. The `prometheus`
plugin turns these into Prometheus families only when `/metrics` is scraped.

Metrics live as long as the process, as CoreDNS's registry does: a reload builds new
handlers, and they ask the store for their metrics by name again, getting the same objects,
so counters keep counting across reloads. Values that belong to a configuration (a
stanza's sync state) come from a *collector*, a function registered under a key that the
next configuration replaces.

Label values are tuples in ``labelnames`` order. Histograms keep per-bucket counts (not
cumulative); the exporter sums them.

:class:`DNSRequests` is the one place CoreDNS's per-query metrics (``coredns_dns_*``, its
``plugin/metrics/vars``) are counted: the `prometheus` step of a block reports each answer
it sees, the server reports the queries no block takes ("dropped"). A query costs one tuple
and one dict lookup there; the label sets of the six families are made when read.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar, Union

__all__ = ["Counter", "Gauge", "Histogram", "Metric", "MetricStore", "PROCESS",
           "exponential_buckets", "DNSRequests", "DNS_REQUESTS", "DROPPED", "Source",
           "TIME_BUCKETS", "SIZE_BUCKETS", "type_label", "rcode_label", "zone_label"]

Labels = tuple[str, ...]


@dataclass(slots=True, eq=False)
class Counter:
    name: str
    help: str
    labelnames: Labels
    values: dict[Labels, float] = field(default_factory=dict)

    def inc(self, labels: Labels = (), amount: float = 1) -> None:
        values = self.values
        values[labels] = values.get(labels, 0) + amount


@dataclass(slots=True, eq=False)
class Gauge:
    name: str
    help: str
    labelnames: Labels
    values: dict[Labels, float] = field(default_factory=dict)

    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value


@dataclass(slots=True)
class _Series:
    counts: list[int]
    sum: float = 0.0


@dataclass(slots=True, eq=False)
class Histogram:
    name: str
    help: str
    labelnames: Labels
    buckets: tuple[float, ...]   # upper bounds, ascending, +Inf implied
    values: dict[Labels, _Series] = field(default_factory=dict)

    def observe(self, labels: Labels, value: float) -> None:
        series = self.values.get(labels)
        if series is None:
            series = self.values[labels] = _Series([0] * (len(self.buckets) + 1))
        series.counts[bisect_left(self.buckets, value)] += 1
        series.sum += value

    def cumulative(self, labels: Labels) -> tuple[list[int], float]:
        """Counts at or below each bound (the last is +Inf, the total), and the sum."""
        series = self.values[labels]
        total, out = 0, []
        for count in series.counts:
            total += count
            out.append(total)
        return out, series.sum


Metric = Union[Counter, Gauge, Histogram]
_Plain = TypeVar("_Plain", Counter, Gauge)
Collector = Callable[[], Iterable[Metric]]


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    """Prometheus's (and Go's) ExponentialBuckets."""
    return tuple(start * factor ** i for i in range(count))


class MetricStore:
    """Metrics by name, made on first use; collectors by key."""

    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}
        self._collectors: dict[object, Collector] = {}

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._get(Counter, name, help, tuple(labelnames))

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._get(Gauge, name, help, tuple(labelnames))

    def histogram(self, name: str, help: str, labelnames: Sequence[str],
                  buckets: Sequence[float]) -> Histogram:
        metric = self._metrics.get(name)
        if metric is None:
            metric = self._metrics[name] = Histogram(name, help, tuple(labelnames),
                                                      tuple(buckets))
        if not isinstance(metric, Histogram) or metric.labelnames != tuple(labelnames):
            raise ValueError(f"metric {name} is already defined differently")
        return metric

    def _get(self, kind: type[_Plain], name: str, help: str, labelnames: Labels) -> _Plain:
        metric = self._metrics.get(name)
        if metric is None:
            metric = self._metrics[name] = kind(name, help, labelnames)
        if not isinstance(metric, kind) or metric.labelnames != labelnames:
            raise ValueError(f"metric {name} is already defined differently")
        return metric

    def collect(self, key: object, collector: Collector | None) -> None:
        """Register ``collector`` under ``key`` (replacing the one before), or remove it."""
        if collector is None:
            self._collectors.pop(key, None)
        else:
            self._collectors[key] = collector

    def __iter__(self) -> Iterator[Metric]:
        """Every metric: the stored ones, then what each collector gives now."""
        yield from list(self._metrics.values())
        for collector in list(self._collectors.values()):
            yield from collector()


#: The process's store: what `/metrics` shows.
PROCESS = MetricStore()


# ---------------------------------------------------------------------------------------
# CoreDNS's per-query metrics (plugin/metrics/vars)

#: ``plugin.TimeBuckets``: ExponentialBuckets(0.00025, 2, 16), 0.25 ms to 8.192 s.
TIME_BUCKETS = exponential_buckets(0.00025, 2, 16)
#: The request and response size buckets of ``vars`` (bytes).
SIZE_BUCKETS: tuple[float, ...] = (0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291,
                                   16e3, 32e3, 48e3, 64e3)
#: The zone label of a query no server block took (no closing dot: never a real zone).
DROPPED = "dropped"

# The query types the `type` label names (``vars.monitorType``); every other is "other".
_TYPE_LABELS = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT",
                28: "AAAA", 33: "SRV", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY",
                50: "NSEC3", 64: "SVCB", 65: "HTTPS", 251: "IXFR", 252: "AXFR", 255: "ANY"}
# miekg/dns ``RcodeToString`` for the rcodes a header holds; others are "RCODE<n>".
_RCODE_LABELS = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
                 5: "REFUSED", 6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH",
                 10: "NOTZONE"}


def type_label(qtype: int) -> str:
    """The `type` label: the type's name if CoreDNS watches it, else ``other``."""
    return _TYPE_LABELS.get(qtype, "other")


def rcode_label(rcode: int) -> str:
    """The `rcode` label (``rcode.ToString``)."""
    return _RCODE_LABELS.get(rcode) or f"RCODE{rcode}"


def zone_label(zone: bytes | str) -> str:
    """The `zone` label: a server block's zone with its closing dot (``.`` for the root),
    or a string as it is (:data:`DROPPED`)."""
    if isinstance(zone, str):
        return zone
    return zone.decode("ascii", "backslashreplace") + "." if zone else "."


#: Where a query came in: the server label, UDP (else TCP), the address family (1, 2).
Source = tuple[str, bool, int]
# A query's key: source, zone, qtype, DO, rcode, plugin, request size, response size,
# duration bucket. Its value: [count, duration sum].
_QueryKey = tuple[Source, Union[bytes, str], int, bool, int, str, int, int, int]
# A series of the six families: server, zone, udp, family, type label, DO, rcode, plugin.
# Its value: count, duration buckets, duration sum, request size buckets, their sum,
# response size buckets, their sum (per-bucket counts, +Inf last).
_SeriesKey = tuple[str, Union[bytes, str], bool, int, str, bool, int, str]

_NTIME = len(TIME_BUCKETS) + 1
_NSIZE = len(SIZE_BUCKETS) + 1
#: The first duration bucket's bound: most answers take less (no bisection for them).
FIRST_BUCKET = TIME_BUCKETS[0]


class DNSRequests:
    """``coredns_dns_requests_total``, ``_do_requests_total``, ``_responses_total`` and the
    duration and size histograms, counted as CoreDNS's ``vars.Report`` counts them.

    A query costs one tuple and one dict lookup: it is counted under the
    exact values it was seen with (sizes as they are, the duration's bucket), which repeat
    (the same names are asked again and again), so each key holds only a count and the
    sum of the durations. Those are folded into the families' series (sizes into their
    buckets, types outside CoreDNS's list into "other") when something reads them, or
    when more than :attr:`limit` keys pile up (a client can vary sizes at will), so memory
    stays bounded. Label values are bounded too: zones are the blocks' own. The view
    label is always empty (there is no `view` plugin). Reactor thread only.
    """

    #: keys kept before they are folded into the series.
    limit = 4096

    def __init__(self, store: MetricStore | None = None) -> None:
        self.queries: dict[_QueryKey, list[float]] = {}
        self.series: dict[_SeriesKey, list[Any]] = {}
        if store is not None:
            store.collect("coredns_dns", self.metrics)

    def report(self, source: Source, zone: bytes | str, qtype: int, do: bool, rcode: int,
               plugin: str, request_size: int, response_size: int, duration: float) -> None:
        """One query answered: called on the reactor thread, once per response sent.

        ``source`` is (server label, UDP, address family: 1 IPv4, 2 IPv6); ``zone`` the
        block's zone as the router keys it (``b"cluster.local"``, ``b""`` for the root)
        or :data:`DROPPED`.
        """
        key = (source, zone, qtype, do, rcode, plugin, request_size, response_size,
               0 if duration <= FIRST_BUCKET else bisect_left(TIME_BUCKETS, duration))
        counted = self.queries.get(key)
        if counted is None:
            self.add(key, duration)
        else:
            counted[0] += 1
            counted[1] += duration

    def add(self, key: _QueryKey, duration: float) -> None:
        """The first query of ``key`` (the tuple :meth:`report` makes; a caller on a hot
        path may make it itself, and add to ``queries[key]`` when it is there)."""
        if len(self.queries) >= self.limit:
            self.fold()
        self.queries[key] = [1, duration]

    def fold(self) -> None:
        """Move the counted queries into the series (``queries`` stays the same dict)."""
        queries = list(self.queries.items())
        self.queries.clear()
        series = self.series
        for ((server, udp, family), zone, qtype, do, rcode, plugin, request_size,
             response_size, bucket), (count, duration) in queries:
            key = (server, zone, udp, family, _TYPE_LABELS.get(qtype, "other"), do, rcode,
                   plugin)
            one = series.get(key)
            if one is None:
                one = series[key] = [0, [0] * _NTIME, 0.0, [0] * _NSIZE, 0, [0] * _NSIZE, 0]
            count = int(count)
            one[0] += count
            one[1][bucket] += count
            one[2] += duration
            one[3][bisect_left(SIZE_BUCKETS, request_size)] += count
            one[4] += request_size * count
            one[5][bisect_left(SIZE_BUCKETS, response_size)] += count
            one[6] += response_size * count

    def metrics(self) -> list[Metric]:
        """The six families, as they are now."""
        self.fold()
        requests = Counter("coredns_dns_requests_total",
                           "DNS requests counted per server, zone, view, transport, address "
                           "family and query type.",
                           ("server", "zone", "view", "proto", "family", "type"))
        do = Counter("coredns_dns_do_requests_total",
                     "DNS requests with the DO (DNSSEC OK) bit set, per server, zone and view.",
                     ("server", "zone", "view"))
        responses = Counter("coredns_dns_responses_total",
                            "DNS responses per server, zone, view, rcode and the plugin that "
                            "wrote them.", ("server", "zone", "view", "rcode", "plugin"))
        duration = Histogram("coredns_dns_request_duration_seconds",
                             "Seconds each DNS request took to answer, per server, zone and "
                             "view.", ("server", "zone", "view"), TIME_BUCKETS)
        request_size = Histogram("coredns_dns_request_size_bytes",
                                 "Size of DNS requests in bytes, per server, zone, view and "
                                 "transport.", ("server", "zone", "view", "proto"),
                                 SIZE_BUCKETS)
        response_size = Histogram("coredns_dns_response_size_bytes",
                                  "Size of DNS responses in bytes, per server, zone, view and "
                                  "transport.", ("server", "zone", "view", "proto"),
                                  SIZE_BUCKETS)
        for (server, zone, udp, family, qtype, is_do, rcode, plugin), one in list(
                self.series.items()):
            zone_text = zone_label(zone)
            proto = "udp" if udp else "tcp"
            count = one[0]
            requests.inc((server, zone_text, "", proto, str(family), qtype), count)
            if is_do:
                do.inc((server, zone_text, ""), count)
            responses.inc((server, zone_text, "", rcode_label(rcode), plugin), count)
            _merge(duration, (server, zone_text, ""), one[1], one[2])
            _merge(request_size, (server, zone_text, "", proto), one[3], one[4])
            _merge(response_size, (server, zone_text, "", proto), one[5], one[6])
        return [requests, do, responses, duration, request_size, response_size]


def _merge(histogram: Histogram, labels: Labels, counts: list[int], total: float) -> None:
    series = histogram.values.get(labels)
    if series is None:
        series = histogram.values[labels] = _Series([0] * (len(histogram.buckets) + 1))
    for index, count in enumerate(counts):
        series.counts[index] += count
    series.sum += total


#: The process's per-query DNS metrics (in :data:`PROCESS`).
DNS_REQUESTS = DNSRequests(PROCESS)
