"""`cache [TTL] [ZONES...] { ... }`: the directive, read as CoreDNS 1.14's ``cacheParse``.

Mistakes are CorefileErrors naming the line and token, with CoreDNS's message texts
(``plugin/cache: ...``). The step it configures is :class:`~.handler.CacheHandler`, made
when the block's pipeline is built, over the process's answer store (it takes the place of
the implicit answer cache: one step, one store).
"""

from __future__ import annotations

from typing import Callable

from kubernetai.core.plugin import Next, Result
from kubernetai.core.registry import BlockBuilder
from kubernetai.core.request import Request
from kubernetai.core.wirecache import WireCache
from kubernetai.corefile import CorefileError, Directive, arg_error
from kubernetai.pkg.dnsname import ascii_lower, fqdn
from kubernetai.pkg.gosyntax import GoSyntaxError, atoi, parse_duration_ns
from kubernetai.plugins.cache.config import DENIAL, SUCCESS, CacheConfig
from kubernetai.plugins.cache.handler import CacheHandler

__all__ = ["CacheDirective", "CacheSpec", "parse"]

_PREFIX = "plugin/cache: "
_FIVE_MINUTES = 300 * 10**9
_UINT32 = (1 << 32) - 1


class CacheSpec:
    """What the directive adds to the block: its configuration, made a
    :class:`CacheHandler` over the process's store by :meth:`for_store` when the pipeline
    is built (`kubernetai.app.load`). Standing in the pipeline itself (a pipeline built
    without a store), it passes every query on."""

    name = "cache"

    def __init__(self, config: CacheConfig) -> None:
        self.config = config

    def for_store(self, store: WireCache) -> CacheHandler:
        return CacheHandler(self.config, store)

    def serve(self, request: Request, next: Next) -> Result:
        return next(request)


class CacheDirective:
    name = "cache"
    once = True

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        builder.add_handler(CacheSpec(parse(directive, builder.zones)))


def _zone(text: str) -> str:
    return fqdn(ascii_lower(text))


def parse(directive: Directive, block_zones: tuple[str, ...] = (".",)) -> CacheConfig:
    """The configuration a `cache` line and its block say, or a CorefileError."""
    config = CacheConfig()
    args = list(directive.args)
    lines = list(directive.arg_lines)
    if args:
        try:
            ttl = atoi(args[0])
        except GoSyntaxError:
            ttl = None
        if ttl is not None:
            if ttl <= 0:
                raise CorefileError(directive.filename, lines[0],
                                    f"{_PREFIX}cache TTL can not be zero or negative: {ttl}",
                                    args[0])
            config.pttl = config.nttl = ttl
            args, lines = args[1:], lines[1:]
    config.zones = tuple(dict.fromkeys(_zone(a) for a in args)) if args else tuple(
        dict.fromkeys(block_zones)) or (".",)
    stale_given = policy_given = False
    for option in directive.block:
        reader = _Option(option)
        name = option.name
        if name in (SUCCESS, DENIAL):
            _capacity(reader, config, name == SUCCESS)
        elif name == "prefetch":
            _prefetch(reader, config)
        elif name == "serve_stale":
            stale_given = True
            _serve_stale(reader, config)
        elif name == "serve_stale_policy":
            if policy_given:
                raise reader.error(-1, "serve_stale_policy can only be specified once")
            policy_given = True
            if len(option.args) != 1:
                raise reader.arg_error()
            if option.args[0].lower() != "prefer_positive":
                raise reader.error(0, f"invalid serve_stale_policy: {option.args[0]}")
            raise reader.error(0, "serve_stale_policy prefer_positive is not supported here")
        elif name == "servfail":
            if len(option.args) != 1:
                raise reader.arg_error()
            d = reader.duration(0)
            if d < 0:
                raise reader.error(0, "invalid negative ttl for servfail")
            if d > _FIVE_MINUTES:
                raise reader.error(0, "caching SERVFAIL responses over 5 minutes is not "
                                      "permitted")
            config.failttl = d / 1e9
        elif name == "disable":
            if not option.args:
                raise reader.arg_error()
            zones = tuple(_zone(z) for z in option.args[1:]) or (".",)
            if option.args[0] == DENIAL:
                config.nexcept = zones
            elif option.args[0] == SUCCESS:
                config.pexcept = zones
            else:
                raise reader.error(0, f'cache type for disable must be "{SUCCESS}" or '
                                      f'"{DENIAL}"')
        elif name == "keepttl":
            if option.args:
                raise reader.arg_error()
            config.keepttl = True
        else:
            raise arg_error(option.filename, option.line, name, name, _PREFIX)
    if policy_given and not stale_given:
        raise CorefileError(directive.filename, directive.line,
                            f"{_PREFIX}serve_stale_policy requires serve_stale", "cache")
    return config


class _Option:
    """One line of the block, with errors pointing at its tokens."""

    def __init__(self, option: Directive) -> None:
        self.option = option

    def error(self, index: int, message: str) -> CorefileError:
        option = self.option
        if index < 0 or index >= len(option.args):
            return CorefileError(option.filename, option.line, _PREFIX + message, option.name)
        return CorefileError(option.filename, option.arg_lines[index], _PREFIX + message,
                             option.args[index])

    def arg_error(self) -> CorefileError:
        option = self.option
        last = option.args[-1] if option.args else option.name
        line = option.arg_lines[-1] if option.args else option.line
        return arg_error(option.filename, line, last, last, _PREFIX)

    def integer(self, index: int) -> int:
        try:
            return atoi(self.option.args[index])
        except GoSyntaxError as exc:
            raise self.error(index, str(exc)) from None

    def duration(self, index: int, wrap: Callable[[str], str] | None = None) -> int:
        try:
            return parse_duration_ns(self.option.args[index])
        except ValueError as exc:
            raise self.error(index, wrap(str(exc)) if wrap else str(exc)) from None


def _capacity(reader: _Option, config: CacheConfig, success: bool) -> None:
    args = reader.option.args
    if not args:
        raise reader.arg_error()
    capacity = reader.integer(0)
    ttl = minttl = None
    if len(args) > 1:
        ttl = reader.integer(1)
        if ttl <= 0:
            raise reader.error(1, f"cache TTL can not be zero or negative: {ttl}")
        if len(args) > 2:
            minttl = reader.integer(2)
            if minttl < 0:
                raise reader.error(2, f"cache min TTL can not be negative: {minttl}")
    if success:
        config.pcap = capacity
        config.pttl = ttl if ttl is not None else config.pttl
        config.minpttl = minttl if minttl is not None else config.minpttl
    else:
        config.ncap = capacity
        config.nttl = ttl if ttl is not None else config.nttl
        config.minnttl = minttl if minttl is not None else config.minnttl


def _prefetch(reader: _Option, config: CacheConfig) -> None:
    args = reader.option.args
    if not args or len(args) > 3:
        raise reader.arg_error()
    amount = reader.integer(0)
    if amount < 0:
        raise reader.error(0, f"prefetch amount should be positive: {amount}")
    config.prefetch = amount
    if len(args) > 1:
        config.duration = reader.duration(1) / 1e9
    if len(args) > 2:
        pct = args[2]
        if not pct.endswith("%"):
            raise reader.error(2, "last character of percentage should be `%`, but is: "
                                  f"'{pct[-1:]}'")
        try:
            num = atoi(pct[:-1])
        except GoSyntaxError as exc:
            raise reader.error(2, str(exc)) from None
        if num < 10 or num > 90:
            raise reader.error(2, f"percentage should fall in range [10, 90]: {num}")
        config.percentage = num


def _serve_stale(reader: _Option, config: CacheConfig) -> None:
    args = reader.option.args
    if len(args) > 5:
        raise reader.arg_error()
    config.stale_up_to = 3600.0
    config.stale_ttl = 0
    config.stale_recheck = 0.0
    if args:
        d = reader.duration(0)
        if d < 0:
            raise reader.error(0, "invalid negative duration for serve_stale")
        config.stale_up_to = d / 1e9
    config.verify_stale = False
    config.verify_timeout = 0.0
    if len(args) > 1:
        mode = args[1].lower()
        if mode not in ("immediate", "verify"):
            raise reader.error(1, f"invalid value for serve_stale refresh mode: {mode}")
        config.verify_stale = mode == "verify"
    rest = 2
    if len(args) > 2 and config.verify_stale:
        t = reader.duration(2, lambda e: f"invalid serve_stale verify timeout: {e}")
        if t < 0:
            raise reader.error(2, "invalid negative timeout for serve_stale verify")
        config.verify_timeout = t / 1e9
        rest = 3
    elif len(args) > 4:
        raise reader.arg_error()
    if len(args) > rest:
        config.stale_ttl = _stale_ttl(reader, rest)
    if len(args) > rest + 1:
        config.stale_recheck = _stale_recheck(reader, rest + 1)


def _stale_ttl(reader: _Option, index: int) -> int:
    ttl = reader.duration(index, lambda e: f"invalid serve_stale response TTL: {e}")
    if ttl < 0:
        raise reader.error(index, "invalid negative response TTL for serve_stale")
    if ttl % 10**9:
        raise reader.error(index, "serve_stale response TTL must be a whole number of seconds")
    if ttl // 10**9 > _UINT32:
        raise reader.error(index, "serve_stale response TTL exceeds the DNS TTL range")
    return ttl // 10**9


def _stale_recheck(reader: _Option, index: int) -> float:
    recheck = reader.duration(index, lambda e: f"invalid serve_stale failure recheck: {e}")
    if recheck < 0:
        raise reader.error(index, "invalid negative failure recheck for serve_stale")
    if recheck > _FIVE_MINUTES:
        raise reader.error(index, "serve_stale failure recheck cannot exceed 5 minutes")
    return recheck / 1e9
