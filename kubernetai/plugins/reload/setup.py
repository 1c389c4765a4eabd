"""`reload [INTERVAL] [JITTER]`: the directive, as CoreDNS's."""

from __future__ import annotations

import random

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import CorefileError, Directive, arg_error
from kubernetai.pkg.gosyntax import parse_duration_ns
from kubernetai.plugins.reload.service import ReloadService

SECOND = 1_000_000_000  # nanoseconds, as Go's time.Duration counts
DEFAULT_INTERVAL = 30 * SECOND
DEFAULT_JITTER = 15 * SECOND
MIN_INTERVAL = 2 * SECOND
MIN_JITTER = 1 * SECOND


def period(interval: int, jitter: int, rng: random.Random | None = None) -> float:
    """Seconds between checks: INTERVAL moved by a random amount in [-JITTER/2, JITTER/2)
    (what CoreDNS's setup draws, once per configuration), from nanoseconds."""
    if jitter > 0:
        interval += (rng or random).randrange(jitter) - jitter // 2
    return interval / SECOND


class ReloadDirective:
    name = "reload"
    once = True

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        args = directive.args
        if len(args) > 2:
            raise arg_error(directive.filename, directive.arg_lines[2], args[-1], args[2],
                            prefix="reload: ")
        if directive.block:
            first = directive.block[0]
            raise CorefileError(first.filename, first.line,
                                f"reload: takes no block (found '{first.name}')", first.name)
        interval = self._duration(directive, 0, DEFAULT_INTERVAL)
        if interval < MIN_INTERVAL:
            raise CorefileError(directive.filename, directive.arg_lines[0],
                                "reload: interval value must be greater or equal to 2s", args[0])
        jitter = self._duration(directive, 1, DEFAULT_JITTER)
        if jitter != 0 and jitter < MIN_JITTER:
            raise CorefileError(directive.filename, directive.arg_lines[1],
                                "reload: jitter value must be 0 or greater or equal to 1s",
                                args[1])
        if jitter > interval // 2:
            jitter = interval // 2
        builder.add_process_service(ReloadService(interval / SECOND, jitter / SECOND,
                                                  period(interval, jitter)))

    @staticmethod
    def _duration(directive: Directive, index: int, default: int) -> int:
        if len(directive.args) <= index:
            return default
        try:
            return parse_duration_ns(directive.args[index])
        except ValueError as error:
            raise CorefileError(directive.filename, directive.arg_lines[index],
                                f"reload: {error}", directive.args[index]) from None
