"""A log line that cannot flood: at most one per interval, the rest counted."""

from __future__ import annotations

import time
from typing import Any, Callable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """At most one log line per ``interval`` seconds, counting the suppressed ones."""

    def __init__(self, interval: float = 10.0):
        self.interval = interval
        self._last = -interval
        self.suppressed = 0

    def __call__(self, emit: Callable[..., None], fmt: str, **kw: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self.suppressed += 1
            return
        self._last = now
        emit(fmt + " ({suppressed} similar messages suppressed)", suppressed=self.suppressed, **kw)
        self.suppressed = 0

