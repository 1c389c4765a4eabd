"""Client-side throttling of one stanza's requests to the API server.

client-go gives CoreDNS a token-bucket rate limiter on every client (``apiserver_qps``,
``apiserver_burst``) and CoreDNS adds a cap on concurrent requests
(``apiserver_max_inflight``); the official Python client has neither, so a stanza's
informers share one :class:`RequestLimiter` built from those options (see
``StanzaConfig.request_limiter``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["CLIENT_GO_DEFAULT_BURST", "CLIENT_GO_DEFAULT_QPS", "RequestLimiter"]

# client-go's rest.Config defaults, which CoreDNS gets whenever
# apiserver_qps / apiserver_burst are unset or 0 (kubernetes.go InitKubeCache
# only overrides them when > 0; client-go rest.RESTClientFor then falls back
# to DefaultQPS / DefaultBurst).
CLIENT_GO_DEFAULT_QPS = 5.0
CLIENT_GO_DEFAULT_BURST = 10


class RequestLimiter:
    """Throttling for one stanza's requests to the API server.

    * A token bucket (golang.org/x/time/rate, which client-go's
      ``flowcontrol.NewTokenBucketRateLimiter`` wraps): it starts full with
      ``burst`` tokens and refills at ``qps`` per second; each request takes
      one token, waiting in arrival order when none is left.  client-go
      throttles every request this way, list and watch alike, so the
      limits matter at start-up and when watches are re-established, not
      for the events a watch streams.  ``qps`` of ``inf`` means unlimited.
    * At most ``max_inflight`` requests at once (CoreDNS's
      ``newMaxInflightRoundTripper``), or no cap for ``None``.  CoreDNS's
      round-tripper holds its slot until the response *headers* arrive,
      not while a watch body streams; so hold :meth:`request` around the
      call that returns the response (with ``_preload_content=False``),
      and read the stream after leaving the block.
    * A list's continuation pages (``continue`` tokens) pass with
      ``token=False``: one list is one request to throttle, however many
      pages the server cuts it into, so a big paginated list does not
      cost one token per page (a 100,000-pod list of 200 pages would
      otherwise take 40 s at the default 5 qps).  They still wait for
      an in-flight slot.  client-go's pager spends a token per page;
      this is a deliberate difference.

    Differences from CoreDNS: CoreDNS's clientset shares one bucket among
    the core and discovery API groups only when ``apiserver_qps`` is set
    (otherwise each group client has its own default 5/10 bucket) and the
    multicluster client has its own; here a stanza has one.

    Thread-safe; ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        qps: float,
        burst: int,
        max_inflight: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not qps > 0:
            raise ValueError(f"qps must be > 0, got {qps}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.qps = float(qps)
        self.burst = int(burst)
        self.max_inflight = max_inflight
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._last = clock()
        self._slots = threading.BoundedSemaphore(max_inflight) if max_inflight else None
        # Counters (for tests, logs and benchmarks): requests let through, tokens taken
        # from the bucket, and the seconds callers waited for them in all.
        self.requests = 0
        self.tokens = 0
        self.waited = 0.0

    def reserve(self) -> float:
        """Take a token now; return how long the caller must wait before
        using it (0 if one was available)."""
        if math.isinf(self.qps):
            with self._lock:
                self.tokens += 1
            return 0.0
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._last)
            self._last = now
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.qps)
            self._tokens -= 1.0
            self.tokens += 1
            if self._tokens >= 0:
                return 0.0
            return -self._tokens / self.qps

    def wait(self) -> float:
        """Block until the request may be sent; return the time waited
        (what client-go reports as rate_limiter_duration_seconds)."""
        delay = self.reserve()
        if delay > 0:
            with self._lock:
                self.waited += delay
            self._sleep(delay)
        return delay

    @contextmanager
    def request(self, timeout: float | None = None, *,
                token: bool = True) -> Iterator[float]:
        """Throttle one request: wait for a token (unless ``token`` is
        False: a list's continuation page), then for an in-flight slot
        (up to ``timeout`` seconds; TimeoutError after that).  Yields the
        time spent waiting for the token."""
        waited = self.wait() if token else 0.0
        with self._lock:
            self.requests += 1
        if self._slots is not None:
            if not self._slots.acquire(timeout=timeout):
                raise TimeoutError("too many API requests in flight")
        try:
            yield waited
        finally:
            if self._slots is not None:
                self._slots.release()
