"""Reading `forward FROM TO... { ... }` as CoreDNS 1.14's ``parseStanza``/``parseBlock``.

Every option, default and error text is CoreDNS's; each error is located at the line and
token that caused it, its message prefixed ``plugin/forward:`` as CoreDNS prints it.
**TO** is ``[dns://]IP[:PORT]`` (port 53), ``tls://IP[%SERVERNAME][:PORT]`` (port 853) or
a resolv.conf-style file whose ``nameserver`` lines are the upstreams (port 53);
duplicates are dropped and at most 15 upstreams are allowed.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Sequence

from kubernetai.corefile import CorefileError, Directive, arg_error, parse_key
from kubernetai.pkg.dnscodes import STRING_TO_RCODE
from kubernetai.pkg.gosyntax import go_duration, parse_duration_ns, quote

__all__ = ["ForwardConfig", "Upstream", "parse_forward", "MAX_UPSTREAMS", "RCODES"]

MAX_UPSTREAMS = 15
PREFIX = "plugin/forward: "

#: miekg/dns ``StringToRcode`` (looked up upper-cased).
RCODES = STRING_TO_RCODE

_DEFAULT_PORTS = {"dns": 53, "tls": 853, "quic": 853, "grpc": 443, "https": 443,
                  "https3": 443}
_SUPPORTED = ("dns", "tls")
_KNOWN = ("tls", "dns", "quic", "grpc", "https3", "https", "unix")


@dataclass(frozen=True, slots=True)
class Upstream:
    """One TO: ``label`` is how CoreDNS names it (``127.0.0.1:53``, ``[::1]:853``)."""

    transport: str          # "dns" or "tls"
    host: str
    port: int
    servername: str = ""    # tls://IP%NAME

    @property
    def label(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(slots=True)
class ForwardConfig:
    from_zone: str = "."
    ignored: list[str] = field(default_factory=list)
    upstreams: list[Upstream] = field(default_factory=list)
    force_tcp: bool = False
    prefer_udp: bool = False
    expire: float = 10.0
    max_age: float = 0.0
    max_idle_conns: int = 0
    read_timeout: float = 2.0
    max_fails: int = 2
    max_connect_attempts: int | None = None
    tls: tuple[str, ...] | None = None
    tls_servername: str = ""
    policy: str = "random"
    hc_interval: float = 0.5
    hc_recursion: bool = True
    hc_domain: str = "."
    max_concurrent: int = 0
    max_concurrent_text: str = ""
    next_rcodes: list[int] = field(default_factory=list)
    next_on_nodata: bool = False
    failfast: bool = False
    failover_rcodes: list[int] = field(default_factory=list)
    doh_method: str = "POST"
    source_address: str | None = None
    resolver: list[str] = field(default_factory=list)


class _Error(Exception):
    def __init__(self, message: str, token: str | None = None) -> None:
        super().__init__(message)
        self.token = token


def _located(filename: str, line: int, message: str, token: str | None) -> CorefileError:
    return CorefileError(filename, line, PREFIX + message, token)


def parse_forward(directive: Directive) -> ForwardConfig:
    """The configuration of one `forward` line and its block, or a located CorefileError."""
    d = directive
    if not d.args:
        raise arg_error(d.filename, d.line, d.name, d.name, PREFIX)
    config = ForwardConfig()
    from_arg = d.args[0]
    try:
        zones = parse_key(from_arg)
    except ValueError:
        zones = []
    if not zones:
        raise _located(d.filename, d.arg_lines[0], f"unable to normalize '{from_arg}'",
                       from_arg)
    config.from_zone = zones[0].zone
    if len(d.args) < 2:
        raise arg_error(d.filename, d.arg_lines[0], from_arg, from_arg, PREFIX)
    for option in d.block:
        _option(option, config)
    if config.max_age > 0 and config.max_age < config.expire:
        raise _located(d.filename, d.line,
                       f"max_age ({_dur(config.max_age)}) must not be less than expire "
                       f"({_dur(config.expire)})", None)
    seen: set[tuple[str, int]] = set()
    for index, to in enumerate(d.args[1:], start=1):
        try:
            found = parse_to(to)
        except _Error as exc:
            raise _located(d.filename, d.arg_lines[index], str(exc), to) from None
        for upstream in found:
            if upstream.servername and config.tls_servername:
                raise _located(
                    d.filename, d.arg_lines[index],
                    f"both forward ('{config.tls_servername}') and proxy level "
                    f"('{upstream.servername}') TLS servernames are set for upstream proxy "
                    f"'{upstream.transport}://{upstream.label}'", to)
            key = (upstream.host, upstream.port)
            if key not in seen:
                seen.add(key)
                config.upstreams.append(upstream)
    if not config.upstreams:
        raise _located(d.filename, d.line, "no valid upstream addresses found", None)
    if len(config.upstreams) > MAX_UPSTREAMS:
        raise _located(d.filename, d.line, f"more than {MAX_UPSTREAMS} TOs configured: "
                       f"{len(config.upstreams)}", None)
    return config


def _dur(seconds: float) -> str:
    return go_duration(round(seconds * 1e9))


# ---------------------------------------------------------------------------------------
# TO


def _transport(text: str) -> tuple[str, str]:
    for name in _KNOWN:
        if text.startswith(name + "://"):
            return name, text[len(name) + 3:]
    return "dns", text


def split_host_port(text: str) -> tuple[str, str] | None:
    """Go's ``net.SplitHostPort``, None where it fails."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1:end + 2] != ":":
            return None
        host, port = text[1:end], text[end + 2:]
        if "[" in port or "]" in port:
            return None
        return host, port
    colon = text.rfind(":")
    if colon < 0:
        return None
    host, port = text[:colon], text[colon + 1:]
    if ":" in host or "[" in host or "]" in host:
        return None
    return host, port


def _strip_zone(host: str) -> tuple[str, str]:
    if "%" in host:
        cut = host.rfind("%")
        return host[:cut], host[cut + 1:]
    return host, ""


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_to(to: str) -> list[Upstream]:
    """The upstreams one TO stands for (a file: each of its nameservers)."""
    trans, host = _transport(to)
    if not host:
        raise _Error(f"invalid address: {quote(to)}")
    if trans == "unix":
        raise _Error(f"'unix' is not supported as a destination protocol in forward: {to}")
    split = split_host_port(host)
    if split is None:
        bare = host.strip("[]")
        address, zone = _strip_zone(bare)
        if not _is_ip(address):
            return _from_file(bare)
        port = _DEFAULT_PORTS.get(trans, 0)
    else:
        address, zone = _strip_zone(split[0])
        if not _is_ip(address):
            return _from_file(host)
        if not split[1].isdigit() or not 0 <= int(split[1]) <= 65535:
            raise _Error(f"invalid port {quote(split[1])} in {quote(to)}")
        port = int(split[1])
    if trans not in _SUPPORTED:
        shown = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        raise _Error(f"'{trans}' is not supported as a destination protocol in forward: "
                     f"{trans}://{shown}")
    servername = zone if trans == "tls" else ""
    return [Upstream(trans, str(ipaddress.ip_address(address)), port, servername)]


def _from_file(path: str) -> list[Upstream]:
    """A resolv.conf: its ``nameserver`` lines, each on port 53."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(1 << 20)
    except FileNotFoundError:
        raise _Error(f"not an IP address or file {quote(path)}: failed to open file "
                     f"{quote(path)}: \"open {path}: no such file or directory\"") from None
    except OSError as exc:
        raise _Error(f"not an IP address or file {quote(path)}: {exc.strerror or exc}"
                     ) from None
    upstreams = []
    for raw in data.decode("utf-8", "replace").splitlines():
        fields = raw.split()
        if len(fields) > 1 and fields[0] == "nameserver":
            address, _ = _strip_zone(fields[1])
            if not _is_ip(address):
                raise _Error(f"not an IP address: {quote(fields[1])} (a nameserver of "
                             f"{path})")
            upstreams.append(Upstream("dns", str(ipaddress.ip_address(address)), 53))
    return upstreams


# ---------------------------------------------------------------------------------------
# The block


def _parse_uint32(text: str) -> int:
    """``strconv.ParseUint(s, 10, 32)``."""
    if not text.isascii() or not text.isdigit():
        raise _Error(f"strconv.ParseUint: parsing {quote(text)}: invalid syntax", text)
    value = int(text)
    if value > 0xFFFFFFFF:
        raise _Error(f"strconv.ParseUint: parsing {quote(text)}: value out of range", text)
    return value


def _atoi(text: str) -> int:
    from kubernetai.pkg.gosyntax import atoi
    try:
        return atoi(text)
    except ValueError as exc:
        raise _Error(str(exc), text) from None


def _count(option: str, text: str) -> int:
    """A whole number of something that cannot be negative."""
    n = _atoi(text)
    if n < 0:
        raise _Error(f"{option} can't be negative: {n}", text)
    return n


def _duration(text: str) -> int:
    try:
        return parse_duration_ns(text)
    except ValueError as exc:
        raise _Error(str(exc), text) from None


def _rcodes(args: Sequence[str], failover: bool) -> list[int]:
    out = []
    for arg in args:
        code = RCODES.get(arg.upper())
        if code is None:
            raise _Error(f"{arg} is not a valid rcode", arg)
        if failover and code == 0:
            raise _Error("NoError cannot be used in failover", arg)
        out.append(code)
    return out


def _option(option: Directive, config: ForwardConfig) -> None:
    """One line of the block (CoreDNS's ``parseBlock``)."""
    name, args = option.name, option.args

    def argerr() -> CorefileError:
        # caddy's ArgErr names the last token read: the surplus argument, or the option.
        if args:
            return arg_error(option.filename, option.arg_lines[-1], args[-1], args[-1],
                             PREFIX)
        return arg_error(option.filename, option.line, name, name, PREFIX)

    def one() -> str:
        if not args:
            raise argerr()
        if len(args) > 1:
            # CoreDNS reads the next token as the next property.
            raise CorefileError(option.filename, option.arg_lines[1],
                                f"{PREFIX}unknown property '{args[1]}'", args[1])
        return args[0]

    def none() -> None:
        if args:
            raise arg_error(option.filename, option.arg_lines[0], args[0], args[0], PREFIX)

    try:
        _apply(option, config, name, args, one, none, argerr)
    except _Error as exc:
        token = exc.token if exc.token is not None else name
        line = option.line
        if exc.token is not None and exc.token in args:
            line = option.arg_lines[args.index(exc.token)]
        raise _located(option.filename, line, str(exc), token) from None


def _apply(option: Directive, config: ForwardConfig, name: str, args: tuple[str, ...],
           one, none, argerr) -> None:  # type: ignore[no-untyped-def]
    if name == "except":
        if not args:
            raise argerr()
        for arg in args:
            try:
                zones = parse_key(arg)
            except ValueError:
                raise _Error(f"unable to normalize '{arg}'", arg) from None
            config.ignored += [zone.zone for zone in zones]
    elif name == "max_fails":
        config.max_fails = _parse_uint32(one())
    elif name == "max_connect_attempts":
        config.max_connect_attempts = _parse_uint32(one())
    elif name == "health_check":
        if not args:
            raise argerr()
        ns = _duration(args[0])
        if ns < 0:
            raise _Error(f"health_check can't be negative: {ns}", args[0])
        config.hc_interval = ns / 1e9
        config.hc_domain = "."
        rest = list(args[1:])
        while rest:
            word = rest.pop(0)
            if word == "no_rec":
                config.hc_recursion = False
            elif word == "domain":
                if not rest:
                    raise arg_error(option.filename, option.arg_lines[-1], word, word, PREFIX)
                domain = rest.pop(0)
                if not _domain_name(domain):
                    raise _Error(f"health_check: invalid domain name {domain}", domain)
                config.hc_domain = domain.lower() if domain.endswith(".") else \
                    domain.lower() + "."
            else:
                raise _Error(f"health_check: unknown option {word}", word)
    elif name == "force_tcp":
        none()
        config.force_tcp = True
    elif name == "prefer_udp":
        none()
        config.prefer_udp = True
    elif name == "tls":
        if len(args) > 3:
            raise argerr()
        config.tls = tuple(args)
    elif name == "tls_servername":
        config.tls_servername = one()
    elif name in ("expire", "max_age", "read_timeout"):
        text = one()
        ns = _duration(text)
        if name == "read_timeout":
            if ns <= 0:
                raise _Error(f"read_timeout must be positive: {go_duration(ns)}", text)
            config.read_timeout = ns / 1e9
        elif ns < 0:
            raise _Error(f"{name} can't be negative: {go_duration(ns)}", text)
        elif name == "expire":
            config.expire = ns / 1e9
        else:
            config.max_age = ns / 1e9
    elif name == "max_idle_conns":
        config.max_idle_conns = _count(name, one())
    elif name == "doh_method":
        text = one()
        if text not in ("POST", "GET"):
            raise _Error("doh_method must be either POST or GET", text)
        config.doh_method = text
    elif name == "policy":
        text = one()
        if text not in ("random", "round_robin", "sequential"):
            raise _Error(f"unknown policy '{text}'", text)
        config.policy = text
    elif name == "max_concurrent":
        text = one()
        config.max_concurrent = _count(name, text)
        config.max_concurrent_text = text
    elif name == "next":
        if not args:
            raise argerr()
        config.next_rcodes += _rcodes(args, failover=False)
    elif name == "next_on_nodata":
        none()
        config.next_on_nodata = True
    elif name == "failfast_all_unhealthy_upstreams":
        none()
        config.failfast = True
    elif name == "failover":
        if not args:
            raise argerr()
        config.failover_rcodes += _rcodes(args, failover=True)
    elif name == "resolver":
        if not args:
            raise argerr()
        for arg in args:
            split = split_host_port(arg)
            host = split[0] if split is not None else arg
            if not _is_ip(host):
                raise _Error(f"resolver must be an IP address or IP:port: {quote(arg)}", arg)
        config.resolver = list(args)
    elif name == "source_address":
        text = one()
        if not _is_ip(text):
            raise _Error(f"invalid IP address: {text}", text)
        config.source_address = text
    else:
        raise _Error(f"unknown property '{name}'", name)


def _domain_name(text: str) -> bool:
    """miekg's ``IsDomainName``, near enough: labels of 1..63 octets, 255 in all."""
    if text in (".", ""):
        return text == "."
    body = text[:-1] if text.endswith(".") else text
    labels = body.split(".")
    return (all(0 < len(label) <= 63 for label in labels)
            and len(body.encode("utf-8", "replace")) + 2 <= 255)


def relative_to(path: str, root: str | None) -> str:
    """A `tls` file as CoreDNS finds it (relative to `root`, when the block has one)."""
    if root and not os.path.isabs(path):
        return os.path.join(root, path)
    return path
