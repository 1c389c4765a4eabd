"""`loadbalance [round_robin | weighted WEIGHTFILE] { reload DURATION; prefer CIDR... }`:
the directive, as CoreDNS 1.14's (its checks and messages)."""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import CorefileError, Directive
from kubernetai.pkg.gosyntax import go_duration, parse_duration_ns
from kubernetai.plugins.loadbalance.handler import LoadbalanceHandler
from kubernetai.plugins.loadbalance.policy import Prefer, RoundRobin, Weighted
from kubernetai.plugins.loadbalance.weights import (
    WeightFileError,
    WeightFileMissing,
    WeightReloader,
    parse_weights,
    read_weights,
)

DEFAULT_RELOAD_NS = 30_000_000_000


def _error(line: Directive, message: str, token: str | None,
           at: int | None = None) -> CorefileError:
    return CorefileError(line.filename, at if at is not None else line.line,
                         f"loadbalance: {message}", token)


class LoadbalanceDirective:
    name = "loadbalance"
    # CoreDNS reads every `loadbalance` of a block into one plugin: the last policy
    # written wins, and `prefer` subnets add up (a `weighted` line starts them afresh).
    once = False

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        existing = [s.handler for s in builder.stages if s.name == self.name]
        handler: Any = existing[0] if existing else None
        args = directive.args
        subnets: list[Any] = []
        if not args or args[0] == "round_robin":
            if len(args) > 1:
                raise _error(directive, f"unknown property for {args[0]}", args[1],
                             directive.arg_lines[1])
            base: Any = RoundRobin()
            if handler is not None and isinstance(handler.base, RoundRobin):
                subnets = list(handler.subnets)
            subnets += self._prefer(directive)
        elif args[0] == "weighted":
            base = self._weighted(directive, builder)
        else:
            raise _error(directive, f"unknown policy: {args[0]}", args[0],
                         directive.arg_lines[0])
        if handler is None:
            handler = LoadbalanceHandler(base)
            builder.add_handler(handler)
        handler.base, handler.subnets = base, subnets
        handler.policy = Prefer(base, subnets) if subnets else base

    @staticmethod
    def _prefer(directive: Directive) -> list[Any]:
        subnets = []
        for option in directive.block:
            if option.name != "prefer":
                raise _error(option, f"unknown property '{option.name}'", option.name)
            for at, cidr in zip(option.arg_lines, option.args):
                try:
                    if "/" not in cidr:
                        raise ValueError
                    subnets.append(ipaddress.ip_network(cidr, strict=False))
                except ValueError:
                    raise _error(option, f'invalid CIDR "{cidr}": invalid CIDR address: '
                                 f"{cidr}", cidr, at) from None
        return subnets

    @staticmethod
    def _weighted(directive: Directive, builder: BlockBuilder) -> Weighted:
        args = directive.args
        if len(args) < 2:
            raise _error(directive, "missing weight file argument", args[0],
                         directive.arg_lines[0])
        if len(args) > 2:
            raise _error(directive, "unexpected argument(s)", args[2], directive.arg_lines[2])
        path = args[1]
        reload_ns = DEFAULT_RELOAD_NS
        for option in directive.block:
            if option.name != "reload":
                raise _error(option, f"unknown property '{option.name}'", option.name)
            if not option.args:
                raise _error(option, "reload duration value is missing", option.name)
            if len(option.args) > 1:
                raise _error(option, "unexpected argument", option.args[1],
                             option.arg_lines[1])
            try:
                reload_ns = parse_duration_ns(option.args[0])
            except ValueError:
                raise _error(option, f"invalid reload duration '{option.args[0]}'",
                             option.args[0], option.arg_lines[0]) from None
        policy = Weighted()
        digest = b""
        try:
            data = read_weights(path)
        except WeightFileMissing as error:
            if reload_ns == 0:
                raise _error(directive, str(error), path, directive.arg_lines[1]) from None
            builder.warnings.append(f"plugin/loadbalance: Failed to open weight file:{error}. "
                                    f"Will try again in {go_duration(reload_ns)}")
        else:
            digest = hashlib.md5(data, usedforsecurity=False).digest()
            try:
                policy.weights = parse_weights(data.decode("utf-8", "replace"), path)
            except WeightFileError as error:
                raise _error(directive, str(error), path, directive.arg_lines[1]) from None
        if reload_ns > 0:
            builder.add_process_service(WeightReloader(policy, path, reload_ns / 1e9, digest))
        return policy
