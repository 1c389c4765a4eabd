"""`consolidate DURATION REGEXP [LEVEL] [show_first]`: many like errors, one line a period.

As CoreDNS's errors plugin: the first error matching a pattern starts that pattern's period
(a reactor ``callLater``); later matches only count; when the period ends, one line says how
many there were, at the pattern's level, and the next match starts a new period:

    [WARNING] plugin/errors: 3 errors like '^read udp .* i/o timeout$' occurred in last 30s

With ``show_first`` the first error of a period is written at once, at the pattern's
level, and the summary only if more followed. A timer exists only while a period runs, so
a handler a reload discarded holds none for longer than one period; and the handler's
:class:`Lifetime` (a process service: it stops when its configuration is replaced or the
process exits, as CoreDNS's ``OnShutdown``) writes the periods still running at once and
makes the handler write later errors one by one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from twisted.application import service

from kubernetai.pkg.gosyntax import go_duration

__all__ = ["LEVELS", "DEFAULT_LEVEL", "Pattern", "Consolidator", "Lifetime", "go_duration"]


#: `consolidate`'s levels and the prefix of their lines (CoreDNS's ``plugin/pkg/log``).
LEVELS = {"warning": "[WARNING] ", "error": "[ERROR] ", "info": "[INFO] ", "debug": "[DEBUG] "}
DEFAULT_LEVEL = "error"


@dataclass(eq=False)
class Pattern:
    """One `consolidate` line, and its current period."""

    period_ns: int
    source: str                    # the REGEXP as written: the summary quotes it
    regexp: re.Pattern[str]
    level: str = DEFAULT_LEVEL
    show_first: bool = False
    count: int = 0
    timer: Any = None              # the IDelayedCall ending the running period

    def summary(self, count: int) -> str:
        return (f"plugin/errors: {count} errors like '{self.source}' occurred in last "
                f"{go_duration(self.period_ns)}")


class Consolidator:
    """The patterns of one `errors` step, their counts and timers.

    ``emit(level, text)`` writes a line at a level; ``clock`` (an ``IReactorTime``: a test
    gives a ``task.Clock``) times the periods, the global reactor if None, looked up when
    first needed so that building a configuration starts nothing.
    """

    def __init__(self, patterns: list[Pattern], emit: Callable[[str, str], None],
                 clock: Any = None) -> None:
        self.patterns = patterns
        self.emit = emit
        self.clock = clock
        self.stopped = False

    def match(self, text: str) -> Pattern | None:
        """The first pattern matching ``text`` (CoreDNS: the first one written)."""
        for pattern in self.patterns:
            if pattern.regexp.search(text) is not None:
                return pattern
        return None

    def count(self, pattern: Pattern) -> bool:
        """Count one error of ``pattern``; True if it is consolidated (say nothing now),
        False if the caller writes it (the first one with ``show_first``, or once stopped)."""
        if self.stopped:
            return False
        pattern.count += 1
        if pattern.count == 1:
            delay = max(pattern.period_ns, 0) / 1e9
            pattern.timer = self._reactor().callLater(delay, self.flush, pattern)
            return not pattern.show_first
        return True

    def flush(self, pattern: Pattern) -> None:
        """The period of ``pattern`` ends: its summary, unless show_first already said all."""
        pattern.timer = None
        count, pattern.count = pattern.count, 0
        if count > 1 or (count == 1 and not pattern.show_first):
            self.emit(pattern.level, pattern.summary(count))

    def stop(self) -> None:
        """No more periods: write those running now; later errors are written one by one."""
        self.stopped = True
        for pattern in self.patterns:
            timer = pattern.timer
            if timer is not None and timer.active():
                timer.cancel()
                self.flush(pattern)

    def _reactor(self) -> Any:
        if self.clock is None:
            from twisted.internet import reactor
            self.clock = reactor
        return self.clock


class Lifetime(service.Service):
    """Stops a :class:`Consolidator` with the configuration it belongs to.

    Added as a process service under a key of its own, so that every configuration has its
    own: a reload starts the new one and stops the old one, whose running periods are then
    written at once.
    """

    def __init__(self, consolidator: Consolidator) -> None:
        self.consolidator = consolidator
        self.key = ("errors consolidate", id(consolidator))

    def adopt(self, other: "Lifetime") -> None:  # the key is never shared
        pass

    def stopService(self) -> Any:
        result = super().stopService()
        self.consolidator.stop()
        return result
