"""Faults the sandbox can be told to inject, and their current state.

Each fault is one a real API server or network shows to a DNS server in production:
refused connections (the API server is down), a watch cut mid-stream (a proxy or LB
timeout), a stalled stream (a half-dead TCP connection: no bytes, no FIN), throttling and
errors (429/500/503), slowness, expired history or a new resourceVersion epoch (etcd
compaction or restore) that force a re-list, and a restart from the initial objects (an
etcd restore: resourceVersions go back below what clients have seen). The switches live
here; the HTTP layer and watch streams consult them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(slots=True)
class ErrorRule:
    """Answer matching requests with `code` instead of serving them, `remaining` more times."""

    code: int
    remaining: int | None = None  # None: until cleared
    verbs: frozenset[str] = frozenset()  # empty: every verb
    retry_after: int = 1
    # A 429 as kube-apiserver's max-in-flight and priority-and-fairness filters send it:
    # a plain-text body, not a Status.
    plain: bool = False

    def applies(self, verb: str) -> bool:
        return not self.verbs or verb in self.verbs


@dataclass(slots=True)
class Faults:
    """The fault switches of one sandbox. Mutated on the reactor thread only."""

    delay: float = 0.0
    stall_watches: bool = False
    cut_watch_after: int | None = None
    errors: list[ErrorRule] = field(default_factory=list)

    def take_error(self, verb: str) -> ErrorRule | None:
        """The error rule that fires for this request, consuming one use of it."""
        for rule in self.errors:
            if rule.applies(verb):
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self.errors.remove(rule)
                return rule
        return None

    def add_error(self, code: int, *, count: int | None = None, verbs: Any = (),
                  retry_after: int = 1, plain: bool = False) -> None:
        if code not in (429, 500, 503, 504, 403, 401):
            raise ValueError(f"unsupported fault status {code}: use 429, 500, 503, 504, 401 or 403")
        if plain and code != 429:
            raise ValueError("plain=true is the throttling filters' 429; use it with code=429")
        if retry_after < 0:
            raise ValueError("retry_after must be 0 or more seconds")
        self.errors.append(ErrorRule(code, count, frozenset(verbs), retry_after, plain))

    def clear(self) -> None:
        self.delay = 0.0
        self.stall_watches = False
        self.cut_watch_after = None
        self.errors.clear()

    def describe(self) -> dict[str, Any]:
        return {
            "delay": self.delay,
            "stall_watches": self.stall_watches,
            "cut_watch_after": self.cut_watch_after,
            "errors": [{"code": r.code, "remaining": r.remaining, "verbs": sorted(r.verbs),
                        "retry_after": r.retry_after, "plain": r.plain}
                       for r in self.errors],
        }


# Actions that change more than a switch are carried out by the Sandbox; this is their
# vocabulary, shared by the control endpoint and the command line.
ACTIONS = ("refuse", "accept", "cut-watches", "stall-watches", "unstall-watches",
           "cut-watch-after", "error", "delay", "expire-history", "new-epoch", "restart",
           "clear")


def parse_action(spec: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Validate one fault request ({"action": ..., other arguments}) from outside."""
    action = spec.get("action")
    if action not in ACTIONS:
        raise ValueError(f"unknown fault action {action!r}; known: {', '.join(ACTIONS)}")
    args = {k: v for k, v in spec.items() if k != "action"}
    return action, args
