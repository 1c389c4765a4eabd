"""How long the reactor stops answering: a heartbeat for stalls, a timer on each GC pass.

A DNS server's latency is bounded by the longest time its reactor thread does not turn:
a full garbage collection over the cluster state, a big install on the reactor, a slow
callback. Two cheap meters catch that in production, counted into the process's metric
store (:data:`kubernetai.core.metrics.PROCESS`) and so exported by the `prometheus` plugin:

* a **heartbeat**: one timed call every :data:`INTERVAL` seconds, each scheduling the
  next; whatever keeps the reactor busy delays it, and a lateness over :data:`THRESHOLD`
  is a stall (``kubernetai_reactor_stall_seconds``, and the largest one since the start,
  ``kubernetai_reactor_stall_max_seconds``, with the CPU time the reactor thread spent
  in it, ``kubernetai_reactor_stall_max_busy_seconds``, which tells computing from
  waiting). A stall is seen from the tick it delays, so the figure is a lower bound by
  at most one interval. The cost is one reactor wake-up and about 15 microseconds
  of Python per interval (0.3 % of a core), none on the query path;
* a **GC timer**: ``gc.callbacks`` time every collection, whichever thread runs it (a
  collection holds the GIL, so it stalls every thread): ``kubernetai_gc_pause_seconds``
  by generation, the longest, ``kubernetai_gc_pause_max_seconds``, and the CPU time
  they took, ``kubernetai_gc_cpu_seconds_total`` (on a busy machine a pause also
  counts the time the collecting thread waited for a CPU). Two Python calls
  per collection, which are at most a few hundred a second. With them, read when
  scraped, ``kubernetai_gc_frozen_objects``: what :mod:`kubernetai.core.gcpolicy` froze
  and is still alive (it must not grow from one re-list to the next).

:func:`start` and :func:`stop` are counted, so every user of the meter (each `prometheus`
listener) may start it; it runs once per process.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Callable

from kubernetai.core.metrics import PROCESS, Counter, Gauge, Histogram, MetricStore, _Series

__all__ = ["StallMeter", "GCTimer", "start", "stop", "running", "INTERVAL", "THRESHOLD",
           "STALL_BUCKETS", "GC_BUCKETS"]

#: Seconds between heartbeats.
INTERVAL = 0.005
#: Lateness (seconds) from which a heartbeat counts a stall.
THRESHOLD = 0.005
#: Stall buckets (seconds): fine around the 20 ms goal, up to seconds.
STALL_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15,
                                    0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
#: GC pause buckets (seconds): 50 us to 1.6 s.
GC_BUCKETS: tuple[float, ...] = tuple(0.00005 * 2 ** i for i in range(16))
GENERATIONS = ("0", "1", "2")


class StallMeter:
    """The heartbeat: a chain of ``callLater`` calls measuring their own lateness."""

    def __init__(self, reactor: Any, store: MetricStore = PROCESS, *,
                 interval: float = INTERVAL, threshold: float = THRESHOLD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reactor = reactor
        self.clock = clock  # monotonic: a step of the wall clock is no stall
        self.interval = interval
        self.threshold = threshold
        self.stalls: Histogram = store.histogram(
            "kubernetai_reactor_stall_seconds",
            "How late the reactor ran a heartbeat due every 5 ms, each time it was more "
            "than 5 ms late: how long it did not turn.", (), STALL_BUCKETS)
        self.largest: Gauge = store.gauge(
            "kubernetai_reactor_stall_max_seconds",
            "The longest reactor stall measured since the process started.")
        self.busy: Gauge = store.gauge(
            "kubernetai_reactor_stall_max_busy_seconds",
            "CPU time the reactor thread spent during the longest stall (from the heartbeat "
            "before it): near the stall's length, the reactor was computing (a callback, a "
            "garbage collection); far below it, it waited (for the CPU, the GIL held by "
            "another thread, a blocking call).")
        self.stalls.values.setdefault((), _empty(self.stalls))
        self.largest.values.setdefault((), 0.0)
        self.busy.values.setdefault((), 0.0)
        self._due = 0.0
        self._cpu = 0.0
        self._call: Any = None

    def start(self) -> None:
        if self._call is None:
            self._schedule()

    def stop(self) -> None:
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    @property
    def running(self) -> bool:
        return self._call is not None

    def _schedule(self) -> None:
        self._due = self.clock() + self.interval
        self._cpu = time.thread_time()
        self._call = self.reactor.callLater(self.interval, self._beat)

    def _beat(self) -> None:
        late = self.clock() - self._due
        if late > self.threshold:
            self.record(late, time.thread_time() - self._cpu)
        self._schedule()

    def record(self, seconds: float, busy: float = 0.0) -> None:
        """One stall of ``seconds``, in which the reactor thread ran ``busy`` seconds."""
        self.stalls.observe((), seconds)
        if seconds > self.largest.values[()]:
            self.largest.values[()] = seconds
            self.busy.values[()] = busy


class GCTimer:
    """Times each garbage collection through ``gc.callbacks``."""

    def __init__(self, store: MetricStore = PROCESS) -> None:
        self.pauses: Histogram = store.histogram(
            "kubernetai_gc_pause_seconds",
            "How long each garbage collection took (every thread waits for it), per "
            "generation collected.", ("generation",), GC_BUCKETS)
        self.largest: Gauge = store.gauge(
            "kubernetai_gc_pause_max_seconds",
            "The longest garbage collection since the process started, per generation.",
            ("generation",))
        self.cpu: Counter = store.counter(
            "kubernetai_gc_cpu_seconds_total",
            "CPU time the collecting thread spent in garbage collections, per generation "
            "(a pause much longer than its CPU time waited for the CPU).", ("generation",))
        # Every series exists before any callback runs: a collection on another thread
        # then never adds a key to a dict the exporter may be reading.
        for generation in GENERATIONS:
            self.pauses.values.setdefault((generation,), _empty(self.pauses))
            self.largest.values.setdefault((generation,), 0.0)
            self.cpu.values.setdefault((generation,), 0.0)
        self._began = 0.0
        self._began_cpu = 0.0
        self.store = store

    def start(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)
        self.store.collect("kubernetai_gc_frozen", _frozen)

    def stop(self) -> None:
        while self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        self.store.collect("kubernetai_gc_frozen", None)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        # Collections never overlap (the collector runs one at a time), so one start time
        # serves every thread.
        if phase == "start":
            self._began = time.perf_counter()
            self._began_cpu = time.thread_time()
            return
        seconds = time.perf_counter() - self._began
        labels = (GENERATIONS[info["generation"]],)
        self.pauses.observe(labels, seconds)
        self.cpu.values[labels] += time.thread_time() - self._began_cpu
        if seconds > self.largest.values[labels]:
            self.largest.values[labels] = seconds


def _frozen() -> list[Gauge]:
    frozen = Gauge("kubernetai_gc_frozen_objects",
                   "Objects in the permanent generation (gc.freeze(): the cluster state "
                   "after each sync), which no collection walks.", ())
    frozen.set((), gc.get_freeze_count())
    return [frozen]


def _empty(histogram: Histogram) -> _Series:
    return _Series([0] * (len(histogram.buckets) + 1))


# -- the process's meters ------------------------------------------------------------------

_users = 0
_meter: StallMeter | None = None
_timer: GCTimer | None = None


def start(reactor: Any) -> None:
    """Start the process's meters (counted: each :func:`start` wants one :func:`stop`)."""
    global _users, _meter, _timer
    _users += 1
    if _users > 1:
        return
    if _meter is None or _meter.reactor is not reactor:
        _meter = StallMeter(reactor)
    if _timer is None:
        _timer = GCTimer()
    _meter.start()
    _timer.start()


def stop() -> None:
    """One user is done with the meters; the last one stops them."""
    global _users
    if _users == 0:
        return
    _users -= 1
    if _users == 0:
        if _meter is not None:
            _meter.stop()
        if _timer is not None:
            _timer.stop()


def running() -> bool:
    """Whether the process's meters run."""
    return _users > 0
