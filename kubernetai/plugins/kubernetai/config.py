"""One ``kubernetai`` stanza: its options, checked, as plain frozen data.

A Corefile may hold many ``kubernetai`` stanzas; each takes exactly the
options of CoreDNS 1.14's *kubernetes* plugin (``plugin/kubernetes/setup.go``
``ParseStanza``; the external kubernetai plugin calls that same function for
every stanza).  This module turns one parsed :class:`~kubernetai.corefile.parser.
Directive` into a :class:`StanzaConfig`, refusing what CoreDNS refuses with
CoreDNS's wording, located at the offending line and token::

    Corefile:12: kubernetai: ttl must be in range [0, 3600]: 4000

Where CoreDNS silently accepts something that is ignored or has no effect
(extra arguments after ``ttl 30``, a second ``endpoint`` URL, ``tls``
without ``endpoint``, a bare ``ignore``, a repeated option, a stanza zone
that the server block never receives ...) the stanza is accepted, as
CoreDNS would, and a located message is added to
:attr:`StanzaConfig.warnings` for the caller to log.  Where CoreDNS's own
behaviour is a crash or silently drops what was written (``startup_timeout
0s`` panics; an invalid zone argument is dropped) we refuse with a clear
message instead; each such place says so in a comment.

It also builds the official Python client's ``Configuration`` for a stanza
(:func:`kube_client_config`) the way CoreDNS's ``getClientConfig`` picks a
connection: ``kubeconfig`` first, then ``endpoint`` (+ ``tls``), else
in-cluster; and provides the client-side request throttling that client-go
gives CoreDNS and the Python client lacks (:class:`RequestLimiter`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from kubernetai.corefile import parser as corefile
from kubernetai.pkg import selectors
from kubernetai.corefile.parser import CorefileError, Directive

__all__ = [
    "DEFAULT_STARTUP_TIMEOUT",
    "DEFAULT_TTL",
    "POD_MODES",
    "Fall",
    "RequestLimiter",
    "StanzaConfig",
    "kube_client_config",
    "parse_duration",
    "parse_label_selector",
    "parse_stanza",
    "plain_http_credentials",
]

DEFAULT_TTL = 5  # plugin/kubernetes/kubernetes.go defaultTTL
MAX_TTL = 3600  # setup.go: "ttl must be in range [0, 3600]"
DEFAULT_STARTUP_TIMEOUT = 5.0  # setup.go: k8s.startupTimeout = time.Second * 5
POD_MODES = ("disabled", "insecure", "verified")  # kubernetes.go podMode*

# client-go's rest.Config defaults, which CoreDNS gets whenever
# apiserver_qps / apiserver_burst are unset or 0 (kubernetes.go InitKubeCache
# only overrides them when > 0; client-go rest.RESTClientFor then falls back
# to DefaultQPS / DefaultBurst).
CLIENT_GO_DEFAULT_QPS = 5.0
CLIENT_GO_DEFAULT_BURST = 10

_IP4ARPA = ".in-addr.arpa."  # plugin/pkg/dnsutil/reverse.go IP4arpa
_IP6ARPA = ".ip6.arpa."

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


# --------------------------------------------------------------------------
# Names


def _dns_lower(name: str) -> str:
    """DNS case folding: ASCII letters only (RFC 4343)."""
    return name.translate(_ASCII_LOWER)


def _fqdn(name: str) -> str:
    if name.endswith(".") and not _escaped_at(name, len(name) - 1):
        return name
    return name + "."


def _escaped_at(name: str, i: int) -> bool:
    """Whether the character at ``i`` is escaped by an odd run of backslashes."""
    n = 0
    j = i - 1
    while j >= 0 and name[j] == "\\":
        n += 1
        j -= 1
    return n % 2 == 1


def _is_subdomain(parent: str, child: str) -> bool:
    """miekg/dns IsSubDomain on lower-cased FQDNs: ``child`` is ``parent``
    or below it, matching whole labels (an escaped dot is not a boundary)."""
    if parent == ".":
        return True
    if child == parent:
        return True
    if not child.endswith(parent):
        return False
    cut = len(child) - len(parent) - 1
    return cut >= 0 and child[cut] == "." and not _escaped_at(child, cut)


def _is_reverse(zone: str) -> bool:
    """dnsutil.IsReverse: note that the bare ``in-addr.arpa.`` and
    ``ip6.arpa.`` are *not* reverse by this test (CoreDNS compares against
    ``.in-addr.arpa.``), so a stanza for just those has them as primary zone."""
    return zone.endswith(_IP4ARPA) or zone.endswith(_IP6ARPA)


# --------------------------------------------------------------------------
# Fallthrough


@dataclass(frozen=True, slots=True)
class Fall:
    """CoreDNS ``plugin/pkg/fall``: the zones for which an NXDOMAIN-class
    answer is handed to the next stanza (or plugin) instead.

    ``zones`` empty: never fall through (``fall.Zero``, no ``fallthrough``
    line).  ``("." ,)``: every name (``fallthrough`` without arguments,
    ``fall.Root``).  Zones are lower-case FQDNs.
    """

    zones: tuple[str, ...] = ()

    def through(self, qname: str) -> bool:
        """``plugin.Zones(f.Zones).Matches(qname) != ""``: case-insensitive,
        on label boundaries; ``qname`` may lack its trailing dot."""
        if not self.zones:
            return False
        name = _fqdn(_dns_lower(qname))
        return any(_is_subdomain(z, name) for z in self.zones)


# --------------------------------------------------------------------------
# The configuration


@dataclass(frozen=True, slots=True)
class StanzaConfig:
    """Everything one ``kubernetai`` stanza says, validated.

    Defaults are CoreDNS's.  ``zones`` is never empty and its first
    non-reverse zone is :attr:`primary_zone` (SOA/NS owner).  The
    ``apiserver_*`` fields are ``None`` when not written; the numbers the
    client should use are :attr:`effective_qps` and friends.
    """

    zones: tuple[str, ...]
    endpoint: str | None = None  # first URL only, scheme added as client-go does
    tls: tuple[str, str, str] | None = None  # CERT, KEY, CACERT
    kubeconfig: tuple[str, str | None] | None = None  # FILE, CONTEXT
    apiserver_qps: float | None = None
    apiserver_burst: int | None = None
    apiserver_max_inflight: int | None = None
    namespaces: frozenset[str] = frozenset()
    namespace_labels: str | None = None  # canonical selector string, None if empty
    labels: str | None = None  # canonical selector string, None if empty
    pods: str = "disabled"
    endpoint_pod_names: bool = False
    ttl: int = DEFAULT_TTL
    noendpoints: bool = False
    fall: Fall = Fall()
    ignore_empty_service: bool = False
    multicluster_zones: tuple[str, ...] = ()
    zonal: bool = False  # CoreDNS 1.14.7 (PR #8388)
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT  # seconds
    filename: str = "Corefile"
    line: int = 0
    warnings: tuple[str, ...] = ()
    # sha256 of the kubeconfig file as read when the stanza was parsed, so
    # that a reload notices a kubeconfig that now says something else.
    kubeconfig_digest: str | None = None
    # (option, line) of the options as written, for locating errors found
    # later (e.g. a tls file that cannot be read).
    option_lines: tuple[tuple[str, int], ...] = field(default=(), compare=False)

    # -- derived values -------------------------------------------------

    @property
    def primary_zone(self) -> str:
        """The first non-reverse zone (kubernetes.go ``primaryZone``)."""
        for z in self.zones:
            if not _is_reverse(z):
                return z
        return self.zones[0]

    @property
    def connection(self) -> str:
        """``"kubeconfig"``, ``"endpoint"`` or ``"in-cluster"``: which one
        :func:`kube_client_config` uses (kubernetes.go ``getClientConfig``)."""
        if self.kubeconfig is not None:
            return "kubeconfig"
        if self.endpoint is not None:
            return "endpoint"
        return "in-cluster"

    @property
    def effective_qps(self) -> float:
        """Requests per second allowed to the API server (client-go default 5)."""
        if self.apiserver_qps is not None and self.apiserver_qps > 0:
            return self.apiserver_qps
        return CLIENT_GO_DEFAULT_QPS

    @property
    def effective_burst(self) -> int:
        """Token bucket size (client-go default 10)."""
        if self.apiserver_burst is not None and self.apiserver_burst > 0:
            return self.apiserver_burst
        return CLIENT_GO_DEFAULT_BURST

    @property
    def effective_max_inflight(self) -> int | None:
        """Concurrent requests allowed, ``None`` for no limit (CoreDNS's
        default: the round-tripper is only installed when > 0)."""
        if self.apiserver_max_inflight is not None and self.apiserver_max_inflight > 0:
            return self.apiserver_max_inflight
        return None

    def option_line(self, name: str) -> int:
        """The line of the (last) ``name`` option, or the stanza's line."""
        for opt, line in reversed(self.option_lines):
            if opt == name:
                return line
        return self.line

    def request_limiter(self) -> RequestLimiter:
        """A fresh :class:`RequestLimiter` with this stanza's limits; share
        one between all the requests (all informers) of the stanza."""
        return RequestLimiter(self.effective_qps, self.effective_burst, self.effective_max_inflight)

    def fingerprint(self) -> tuple:
        """What the API connection and the answers depend on.

        Equal fingerprints mean a reload may keep this stanza's running
        informers and warm cache.  Left out: where the stanza is written
        (file, line, warnings), ``startup_timeout`` (it only matters at
        start), and options that are ignored (``endpoint``/``tls`` when
        ``kubeconfig`` is set, ``tls`` without ``endpoint``).  Rate limits
        are compared by their effective values, so ``apiserver_qps 5`` and
        no ``apiserver_qps`` are the same.
        """
        if self.kubeconfig is not None:
            conn: tuple = ("kubeconfig", self.kubeconfig[0], self.kubeconfig[1], self.kubeconfig_digest)
        elif self.endpoint is not None:
            conn = ("endpoint", self.endpoint, self.tls)
        else:
            conn = ("in-cluster",)
        return (
            self.zones,
            conn,
            (self.effective_qps, self.effective_burst, self.effective_max_inflight),
            tuple(sorted(self.namespaces)),
            self.namespace_labels,
            self.labels,
            self.pods,
            self.endpoint_pod_names,
            self.ttl,
            self.noendpoints,
            self.fall.zones,
            self.ignore_empty_service,
            self.multicluster_zones,
            self.zonal,
        )


# --------------------------------------------------------------------------
# Go number and duration syntax


class _GoSyntaxError(ValueError):
    pass


def _go_quote(s: str) -> str:
    """Go's %q, near enough: double quotes with backslash escapes."""
    return json.dumps(s, ensure_ascii=False)


_INT_RE = re.compile(r"[+-]?[0-9]+")
_INT64_MAX = (1 << 63) - 1


def _go_atoi(s: str) -> int:
    """strconv.Atoi (64-bit): optional sign and decimal digits, nothing else."""
    if not _INT_RE.fullmatch(s):
        raise _GoSyntaxError(f"strconv.Atoi: parsing {_go_quote(s)}: invalid syntax")
    v = int(s)
    if not -_INT64_MAX - 1 <= v <= _INT64_MAX:
        raise _GoSyntaxError(f"strconv.Atoi: parsing {_go_quote(s)}: value out of range")
    return v


_DEC_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX_FLOAT_RE = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+")


def _go_parse_float32(s: str) -> float:
    """strconv.ParseFloat(s, 32): Go float literal syntax (decimal, hex with
    a ``p`` exponent, ``inf``/``infinity``/``nan`` in any case); an
    out-of-range value for float32 is an error.  (Go also accepts ``_``
    between digits after a ``0x`` prefix; that is refused here.)"""
    low = s.lower()
    body = low[1:] if low[:1] in "+-" else low
    if body in ("inf", "infinity"):
        return -math.inf if low.startswith("-") else math.inf
    if low == "nan":
        return math.nan
    if _DEC_FLOAT_RE.fullmatch(s):
        v = float(s)
    elif _HEX_FLOAT_RE.fullmatch(s):
        v = float.fromhex(s)
    else:
        raise _GoSyntaxError(f"strconv.ParseFloat: parsing {_go_quote(s)}: invalid syntax")
    try:
        struct.pack("<f", v)
    except OverflowError:
        raise _GoSyntaxError(f"strconv.ParseFloat: parsing {_go_quote(s)}: value out of range") from None
    if math.isinf(v):
        raise _GoSyntaxError(f"strconv.ParseFloat: parsing {_go_quote(s)}: value out of range")
    if v != 0 and struct.unpack("<f", struct.pack("<f", v))[0] == 0:
        return 0.0  # underflows float32 (not an error in Go)
    return v


_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # U+00B5 micro sign
    "\u03bcs": 1_000,  # U+03BC Greek small letter mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}


def _parse_duration_ns(orig: str) -> int:
    """time.ParseDuration, to integer nanoseconds, with Go's error texts."""

    def invalid() -> ValueError:
        return ValueError(f"time: invalid duration {_go_quote(orig)}")

    s = orig
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise invalid()
    total = 0
    limit = 1 << 63
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise invalid()
        # leadingInt
        i = 0
        v = 0
        while i < len(s) and "0" <= s[i] <= "9":
            if v > limit // 10:
                raise invalid()
            v = v * 10 + ord(s[i]) - 48
            if v > limit:
                raise invalid()
            i += 1
        pre = i > 0
        s = s[i:]
        post = False
        f = 0
        scale = 1.0
        if s and s[0] == ".":
            s = s[1:]
            # leadingFraction: digits past what fits in 63 bits are dropped
            i = 0
            overflow = False
            while i < len(s) and "0" <= s[i] <= "9":
                if not overflow:
                    if f > _INT64_MAX // 10:
                        overflow = True
                    else:
                        y = f * 10 + ord(s[i]) - 48
                        if y > limit:
                            overflow = True
                        else:
                            f = y
                            scale *= 10
                i += 1
            post = i > 0
            s = s[i:]
        if not pre and not post:
            raise invalid()
        i = 0
        while i < len(s) and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise ValueError(f"time: missing unit in duration {_go_quote(orig)}")
        unit_name = s[:i]
        s = s[i:]
        unit = _DURATION_UNITS.get(unit_name)
        if unit is None:
            raise ValueError(f"time: unknown unit {_go_quote(unit_name)} in duration {_go_quote(orig)}")
        if v > limit // unit:
            raise invalid()
        v *= unit
        if f > 0:
            # Go: v += uint64(float64(f) * (float64(unit) / scale))
            v += int(float(f) * (float(unit) / scale))
            if v > limit:
                raise invalid()
        total += v
        if total > limit:
            raise invalid()
    if neg:
        return -total
    if total > _INT64_MAX:
        raise invalid()
    return total


def parse_duration(text: str) -> float:
    """Go's ``time.ParseDuration``, in seconds.

    ``"5s"``, ``"1m30s"``, ``"1.5h"``, ``"300ms"``, ``"-2s"``, ``"0"``.
    Units ns, us (µs, μs), ms, s, m, h; a unit is required except for a
    bare ``0``.  Raises ValueError with Go's message, e.g.
    ``time: missing unit in duration "5"``.
    """
    return _parse_duration_ns(text) / 1e9


# --------------------------------------------------------------------------
# Label selectors.  CoreDNS reads ``labels`` and ``namespace_labels`` with
# metav1.ParseToLabelSelector (labels.Parse, then only what a LabelSelector
# can hold) and sends LabelSelectorAsSelector(...).String() to the API
# server.  The labels.Parse part is kubernetai.pkg.selectors, the same parser
# the sandbox API server uses, so both sides agree on what a selector is;
# only the ParseToLabelSelector rules live here.

# ParseToLabelSelector turns requirements into a LabelSelector, which has
# no way to say '!=', 'gt' or 'lt'.
_UNSUPPORTED_OPERATORS = {
    selectors.Operator.NOT_EQUALS: '"!=" is not a valid label selector operator',
    selectors.Operator.GREATER_THAN: '"gt" isn\'t supported in label selectors',
    selectors.Operator.LESS_THAN: '"lt" isn\'t supported in label selectors',
}
_EQUALITY_OPERATORS = frozenset({selectors.Operator.EQUALS, selectors.Operator.DOUBLE_EQUALS})
_NIL_KEY_PATH = "unable to parse requirement: <nil>: "
_KEY_PATH = "unable to parse requirement: key: "


def _selector_message(error: selectors.SelectorError) -> str:
    """The parser's message, with a bad key attributed to field "key".

    labels.Parse validates the key under a nil field path ("<nil>: Invalid
    value: ..."); this option has always reported it as "key: ...", the
    path labels.NewRequirement uses, and its messages are kept stable.
    """
    message = str(error)
    if message.startswith(_NIL_KEY_PATH):
        return _KEY_PATH + message[len(_NIL_KEY_PATH) :]
    return message


def _parse_selector(text: str) -> tuple[str, list[str]]:
    """ParseToLabelSelector then LabelSelectorAsSelector(...).String().

    Returns the canonical selector string sent to the API server and notes
    about requirements that CoreDNS silently drops (a repeated ``key=value``
    keeps only the last one, since it goes through a map).
    """
    try:
        parsed = selectors.parse_label_selector(text)
    except selectors.SelectorError as e:
        raise ValueError(f'couldn\'t parse the selector string "{text}": {_selector_message(e)}') from None
    # parse_label_selector sorts by key, keeping text order within a key, so
    # the last k=v of a key is the one the MatchLabels map ends up with.
    match_labels: dict[str, str] = {}
    expressions: list[selectors.Requirement] = []
    notes: list[str] = []
    for r in parsed.requirements:
        if r.operator in _UNSUPPORTED_OPERATORS:
            raise ValueError(_UNSUPPORTED_OPERATORS[r.operator])
        if r.operator not in _EQUALITY_OPERATORS:
            expressions.append(r)
            continue
        value = r.values[0]
        if r.key in match_labels and match_labels[r.key] != value:
            notes.append(f"'{r.key}={match_labels[r.key]}' is replaced by '{r.key}={value}' (only the last value of a key is kept)")
        match_labels[r.key] = value
    # LabelSelectorAsSelector: map entries first, then expressions, sorted by
    # key; '==' comes back as '='.
    ordered = [selectors.Requirement(k, selectors.Operator.EQUALS, (v,)) for k, v in match_labels.items()]
    ordered.extend(expressions)
    ordered.sort(key=lambda r: r.key)
    return str(selectors.LabelSelector(tuple(ordered))), notes


def parse_label_selector(text: str) -> str:
    """A Kubernetes label selector as CoreDNS reads it, in canonical form.

    Set-based and equality syntax (``a=b``, ``a==b``, ``a in (x,y)``,
    ``a notin (x)``, ``a``, ``!a``); like CoreDNS (which goes through
    ``metav1.ParseToLabelSelector``) ``!=``, ``>`` and ``<`` are refused.
    The result is what ``labels.Selector.String()`` prints: requirements
    sorted by key, set values sorted, ``==`` written ``=``; ``""`` for an
    empty selector.  Raises ValueError with apimachinery's message.
    """
    return _parse_selector(text)[0]


# --------------------------------------------------------------------------
# Parsing a stanza

# Namespace names are RFC 1123 labels.
_DNS1123_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


_LDH_LABEL_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?", re.ASCII)


def _bad_host(host: str, *, bracketed: bool) -> str | None:
    """Why ``host`` cannot be dialled (Go's net: an IP literal, or a name
    its resolver accepts: ASCII letters, digits, ``-`` and ``_`` in labels
    of 1 to 63, not all digits), or None."""
    if not host:
        return "no host"
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} in brackets is not an IPv6 address"
        return None
    try:
        ipaddress.IPv4Address(host)
        return None
    except ValueError:
        pass
    for char in host:
        if not char.isascii() or not char.isprintable():
            return f"the host holds {corefile.describe_char(char)}: write the host name in ASCII (its IDNA form)"
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if len(name) > 253 or not all(len(label) <= 63 and _LDH_LABEL_RE.fullmatch(label) for label in labels):
        return f"{host!r} is not a host name"
    if all(label.isdigit() for label in labels):
        return f"{host!r} is neither an IP address nor a host name"
    return None


_MAX_WARNING_CHARS = 1000
# A startup_timeout longer than this gets a warning (it is accepted).
_LONG_STARTUP_TIMEOUT = 3600.0


def _human_duration(seconds: float) -> str:
    """``"about 292 years"``, ``"about 36 hours"``: a long wait in words."""
    if seconds >= 2 * 365 * 86400:
        return f"about {seconds / (365.25 * 86400):,.0f} years"
    if seconds >= 2 * 86400:
        return f"about {seconds / 86400:,.0f} days"
    return f"about {seconds / 3600:,.0f} hours"


def _arg_err(last: str) -> str:
    # caddy Dispenser.ArgErr
    return f"Wrong argument count or unexpected line ending after '{last}'"


class _StanzaParser:
    def __init__(self, directive: Directive, server_zones: Sequence[object]) -> None:
        self.d = directive
        self.name = directive.name
        self.server_zones = self._server_zones(server_zones)
        self.warnings: list[str] = []
        self.lines: list[tuple[str, int]] = []
        self.first_seen: dict[str, int] = {}
        self.values: dict[str, object] = {}
        self.namespaces: set[str] = set()

    # -- messages -------------------------------------------------------

    def error(self, line: int, message: str, token: str | None) -> CorefileError:
        return CorefileError(self.d.filename, line, f"{self.name}: {message}", token)

    def opt_error(self, opt: Directive, message: str, token: str | None = None) -> CorefileError:
        return self.error(opt.line, message, opt.name if token is None else token)

    def arg_error(self, opt: Directive, i: int, message: str) -> CorefileError:
        line = opt.arg_lines[i] if i < len(opt.arg_lines) else opt.line
        return self.error(line, message, opt.args[i])

    def warn(self, line: int, message: str) -> None:
        # Printed by `check` and logged: escaped and bounded like an error.
        text = corefile.printable(f"{self.d.filename}:{line}: {self.name}: {message}")
        self.warnings.append(text if len(text) <= _MAX_WARNING_CHARS else text[:_MAX_WARNING_CHARS] + "...")

    def argcount(self, opt: Directive) -> CorefileError:
        last = opt.args[-1] if opt.args else opt.name
        return self.opt_error(opt, _arg_err(last), last)

    def extra_args(self, opt: Directive, used: int) -> None:
        if len(opt.args) > used:
            extra = " ".join(opt.args[used:])
            self.warn(opt.line, f"'{opt.name}': extra arguments ignored (as CoreDNS does): {extra}")

    # -- zones ------------------------------------------------------------

    @staticmethod
    def _server_zones(zones: Sequence[object]) -> list[str]:
        out: list[str] = []
        for z in zones:
            if isinstance(z, corefile.ZoneAddress):
                names = [z.zone]
            else:
                names = [za.zone for za in corefile.normalize_zone(str(z))]
            for n in names:
                if n not in out:
                    out.append(n)
        return out

    def zone_args(self, where: Directive, start: int = 0, what: str = "zone") -> list[str]:
        """Normalise zone arguments (plugin.Host.NormalizeExact): lower-cased
        FQDNs, CIDRs expanded to reverse zones, scheme and port dropped.

        CoreDNS silently drops an argument it cannot normalise; that can
        only be a mistake (the stanza would not serve what was written),
        so it is an error here.
        """
        out: list[str] = []
        for i in range(start, len(where.args)):
            arg = where.args[i]
            if arg == "":
                raise self.arg_error(where, i, f"empty {what} argument (an environment variable that is not set?)")
            try:
                addrs = corefile.normalize_zone(arg)
            except ValueError as e:
                raise self.arg_error(where, i, f"invalid {what} {arg!r}: {e}") from None
            for za in addrs:
                if za.zone not in out:
                    out.append(za.zone)
        return out

    # -- the stanza ---------------------------------------------------------

    def parse(self) -> StanzaConfig:
        d = self.d
        if d.args:
            zones = self.zone_args(d)
        else:
            # plugin.OriginsFromArgsOrServerBlock: the server block's zones.
            zones = list(self.server_zones)
        if not zones or all(_is_reverse(z) for z in zones):
            raise self.error(d.line, "non-reverse zone name must be used", d.name)
        # CoreDNS does not require stanza zones to be inside the server
        # block's zones (OriginsFromArgsOrServerBlock checks nothing); but
        # a zone with nothing in common with them can never be queried here.
        outside = [
            z for z in zones
            if self.server_zones and not any(_is_subdomain(s, z) or _is_subdomain(z, s) for s in self.server_zones)
        ]
        if outside:
            self.warn(
                d.line,
                f"{'zone' if len(outside) == 1 else 'zones'} {' '.join(outside)} outside this server block's "
                f"zones ({' '.join(self.server_zones)}): queries for {'it' if len(outside) == 1 else 'them'} "
                "never reach this stanza",
            )

        for opt in d.block:
            handler = _HANDLERS.get(opt.name)
            if handler is None:
                raise self.opt_error(opt, f"unknown property '{opt.name}'")
            if opt.block:
                raise self.opt_error(opt, f"'{opt.name}' takes no block: unexpected '{{'", "{")
            if opt.name in self.first_seen and opt.name != "namespaces":
                self.warn(
                    opt.line,
                    f"'{opt.name}' is given again (first at line {self.first_seen[opt.name]}); the last one is used",
                )
            self.first_seen.setdefault(opt.name, opt.line)
            self.lines.append((opt.name, opt.line))
            handler(self, opt)

        v = self.values
        where = dict(self.lines)  # last line of each option

        if self.namespaces and "namespace_labels" in v:
            later = max(("namespaces", "namespace_labels"), key=lambda k: where[k])
            raise self.error(where[later], "namespaces and namespace_labels cannot both be set", later)

        multicluster: list[str] = v.get("multicluster", [])  # type: ignore[assignment]
        for mz in multicluster:
            if mz not in zones:
                # setup.go: slices.Contains(k8s.Zones, multiclusterZone), an
                # exact match (a subzone of a stanza zone is refused too).
                raise self.error(
                    where["multicluster"],
                    f"is not authoritative for the multicluster zone {mz} (authoritative zones: [{' '.join(zones)}])",
                    mz,
                )

        if v.get("zonal") and v.get("noendpoints"):
            later = max(("zonal", "noendpoints"), key=lambda k: where[k])
            raise self.error(where[later], "zonal requires the endpoint cache; remove noendpoints", later)

        # A fallthrough zone outside the stanza's zones has no effect, but
        # the stock coredns/deployment Corefile has one ("fallthrough
        # in-addr.arpa ip6.arpa" with IPv4-only reverse zones), so no warning.
        fall: Fall = v.get("fallthrough", Fall())  # type: ignore[assignment]

        tls = v.get("tls")
        kubeconfig = v.get("kubeconfig")
        endpoint = None
        raw_endpoint = v.get("endpoint")
        if raw_endpoint is not None:
            endpoint = self.endpoint_url(raw_endpoint, tls is not None)  # type: ignore[arg-type]
        if kubeconfig is not None and (raw_endpoint is not None or tls is not None):
            ignored = " and ".join(n for n in ("endpoint", "tls") if n in v)
            self.warn(where["kubeconfig"], f"{ignored} ignored: kubeconfig is set and takes precedence")
        elif tls is not None and raw_endpoint is None:
            self.warn(where["tls"], "tls is ignored without endpoint (connecting in-cluster)")
        elif tls is not None and endpoint is not None and endpoint.startswith("http://"):
            self.warn(where["tls"], f"tls has no effect on a plain-HTTP endpoint ({endpoint})")

        digest = None
        if kubeconfig is not None:
            try:
                digest = hashlib.sha256(corefile.read_regular_file(kubeconfig[0])).hexdigest()  # type: ignore[index]
            except (OSError, ValueError):
                digest = None  # reported by kube_client_config

        return StanzaConfig(
            zones=tuple(zones),
            endpoint=endpoint,
            tls=tls,  # type: ignore[arg-type]
            kubeconfig=kubeconfig,  # type: ignore[arg-type]
            apiserver_qps=v.get("apiserver_qps"),  # type: ignore[arg-type]
            apiserver_burst=v.get("apiserver_burst"),  # type: ignore[arg-type]
            apiserver_max_inflight=v.get("apiserver_max_inflight"),  # type: ignore[arg-type]
            namespaces=frozenset(self.namespaces),
            namespace_labels=v.get("namespace_labels") or None,  # type: ignore[arg-type]
            labels=v.get("labels") or None,  # type: ignore[arg-type]
            pods=v.get("pods", "disabled"),  # type: ignore[arg-type]
            endpoint_pod_names=bool(v.get("endpoint_pod_names")),
            ttl=v.get("ttl", DEFAULT_TTL),  # type: ignore[arg-type]
            noendpoints=bool(v.get("noendpoints")),
            fall=fall,
            ignore_empty_service=bool(v.get("ignore_empty_service")),
            multicluster_zones=tuple(multicluster),
            zonal=bool(v.get("zonal")),
            startup_timeout=v.get("startup_timeout", DEFAULT_STARTUP_TIMEOUT),  # type: ignore[arg-type]
            filename=d.filename,
            line=d.line,
            warnings=tuple(self.warnings),
            kubeconfig_digest=digest,
            option_lines=tuple(self.lines),
        )

    def endpoint_url(self, raw: tuple[str, int, str], tls: bool) -> str:
        """The API server URL as client-go reads ``endpoint`` (DefaultServerURL), checked.

        A URL without scheme or host (``host:port``, ``host``) is a shorthand:
        client-go puts ``https://`` before it when TLS is configured, else
        ``http://``, and then refuses one with a path.  CoreDNS checks nothing
        more; a URL it would fail on only when connecting (no host, a host
        that is no host name, port 0, an unknown scheme) is refused here, as
        is a user name or password in it (it would be logged), and the
        shorthand with neither ``tls`` nor port (``endpoint nan`` means
        ``http://nan:80``: plain HTTP on port 80, not where an API server is).
        """
        url, line, token = raw

        def bad(why: str) -> CorefileError:
            return self.error(line, f"invalid endpoint URL {token!r}: {why}", token)

        try:
            parts = urlsplit(url)
            shorthand = not (parts.scheme and parts.netloc)
            if shorthand:
                url = ("https://" if tls else "http://") + url
                parts = urlsplit(url)
        except ValueError as e:  # e.g. brackets around something that is no IPv6 address
            raise bad(str(e)) from None
        if shorthand:
            if parts.path not in ("", "/"):
                raise bad("not a URL, nor a HOST:PORT pair (as client-go reads it)")
        if parts.scheme.lower() not in ("http", "https"):
            raise bad("scheme must be http or https")
        if "@" in parts.netloc:
            raise bad("a user name or password in the URL is not supported (use kubeconfig)")
        if parts.query or parts.fragment:
            raise bad("a query or fragment is not allowed")
        try:
            port = parts.port
        except ValueError as e:
            raise bad(str(e)) from None
        if port == 0:
            raise bad("port 0")
        host = parts.hostname or ""
        why = _bad_host(host, bracketed="[" in parts.netloc)
        if why:
            raise bad(why)
        if shorthand and port is None and not tls:
            raise bad(f"without a scheme, tls or a port, client-go reads it as http://{host}:80 "
                      f"(plain HTTP on port 80), which is not where an API server listens: write "
                      f"the URL in full, e.g. https://{host}:6443")
        return url.rstrip("/")

    # -- options (setup.go ParseStanza, in its order) ------------------------

    def opt_endpoint_pod_names(self, opt: Directive) -> None:
        if opt.args:
            raise self.argcount(opt)
        self.values["endpoint_pod_names"] = True

    def opt_pods(self, opt: Directive) -> None:
        if len(opt.args) != 1:
            raise self.argcount(opt)
        mode = opt.args[0]
        if mode not in POD_MODES:
            raise self.arg_error(opt, 0, f"wrong value for pods: {mode},  must be one of: disabled, verified, insecure")
        self.values["pods"] = mode

    def opt_namespaces(self, opt: Directive) -> None:
        if not opt.args:
            raise self.argcount(opt)
        for ns in opt.args:
            # CoreDNS takes any string; one that cannot be a namespace name
            # (an RFC 1123 label) never matches anything.
            if not (len(ns) <= 63 and _DNS1123_LABEL_RE.fullmatch(ns)):
                self.warn(opt.line, f"namespace {ns!r} is not a valid namespace name (RFC 1123 label): it matches nothing")
            self.namespaces.add(ns)

    def opt_endpoint(self, opt: Directive) -> None:
        if not opt.args:
            raise self.argcount(opt)
        if len(opt.args) > 1:
            self.warn(
                opt.line,
                f"Multiple endpoints have been deprecated, only the first specified endpoint '{opt.args[0]}' is used",
            )
        if opt.args[0] == "":
            raise self.arg_error(opt, 0, "empty endpoint URL (an environment variable that is not set?)")
        self.values["endpoint"] = (opt.args[0], opt.arg_lines[0] if opt.arg_lines else opt.line, opt.args[0])

    def opt_tls(self, opt: Directive) -> None:
        if len(opt.args) != 3:
            raise self.argcount(opt)
        for i, a in enumerate(opt.args):
            if a == "":
                raise self.arg_error(opt, i, f"empty {('CERT', 'KEY', 'CACERT')[i]} file name")
        self.values["tls"] = tuple(opt.args)

    def _selector(self, opt: Directive, what: str) -> str:
        if not opt.args:
            raise self.argcount(opt)
        text = " ".join(opt.args)
        try:
            canonical, notes = _parse_selector(text)
        except ValueError as e:
            raise self.opt_error(opt, f"unable to parse {what} selector value: '{text}': {e}", text) from None
        for note in notes:
            self.warn(opt.line, f"{opt.name}: {note}")
        return canonical

    def opt_labels(self, opt: Directive) -> None:
        self.values["labels"] = self._selector(opt, "label")

    def opt_namespace_labels(self, opt: Directive) -> None:
        self.values["namespace_labels"] = self._selector(opt, "namespace_label")

    def opt_fallthrough(self, opt: Directive) -> None:
        # fall.F.SetZonesFromArgs: no arguments means the root zone.
        self.values["fallthrough"] = Fall(tuple(self.zone_args(opt, what="fallthrough zone")) if opt.args else (".",))

    def opt_ttl(self, opt: Directive) -> None:
        if not opt.args:
            raise self.argcount(opt)
        try:
            t = _go_atoi(opt.args[0])
        except ValueError as e:
            raise self.arg_error(opt, 0, f"invalid ttl {_go_quote(opt.args[0])}: {e}") from None
        if t < 0 or t > MAX_TTL:
            raise self.arg_error(opt, 0, f"ttl must be in range [0, {MAX_TTL}]: {t}")
        self.extra_args(opt, 1)
        self.values["ttl"] = t

    def opt_noendpoints(self, opt: Directive) -> None:
        if opt.args:
            raise self.argcount(opt)
        self.values["noendpoints"] = True

    def opt_zonal(self, opt: Directive) -> None:
        if opt.args:
            raise self.argcount(opt)
        self.values["zonal"] = True

    def opt_ignore(self, opt: Directive) -> None:
        if not opt.args:
            # CoreDNS accepts a bare "ignore" and does nothing.
            self.warn(opt.line, "'ignore' without a value does nothing (did you mean 'ignore empty_service'?)")
            return
        if opt.args[0] != "empty_service":
            raise self.arg_error(opt, 0, f"unable to parse ignore value: '{opt.args[0]}'")
        self.extra_args(opt, 1)
        self.values["ignore_empty_service"] = True

    def opt_kubeconfig(self, opt: Directive) -> None:
        if len(opt.args) not in (1, 2):
            raise self.argcount(opt)
        if opt.args[0] == "":
            raise self.arg_error(opt, 0, "empty kubeconfig file name (an environment variable that is not set?)")
        context = opt.args[1] if len(opt.args) == 2 else None
        if context == "":
            # clientcmd treats an empty CurrentContext override as "not set".
            context = None
        self.values["kubeconfig"] = (opt.args[0], context)

    def opt_multicluster(self, opt: Directive) -> None:
        # OriginsFromArgsOrServerBlock(args, []): no arguments, no zones.
        self.values["multicluster"] = self.zone_args(opt, what="multicluster zone")

    def opt_startup_timeout(self, opt: Directive) -> None:
        if not opt.args:
            raise self.argcount(opt)
        arg = opt.args[0]
        try:
            seconds = parse_duration(arg)
        except ValueError as e:
            raise self.arg_error(opt, 0, f"failed to parse startup_timeout: {arg}, {e}") from None
        if seconds < 0:
            # CoreDNS panics at startup on a negative (or zero) timeout
            # (time.NewTicker); zero here means "do not wait for the sync".
            raise self.arg_error(opt, 0, f"startup_timeout must not be negative: {arg}")
        if seconds > _LONG_STARTUP_TIMEOUT:
            # Any Go duration works (up to 2562047h47m16.854775807s), in
            # CoreDNS as here: the server waits that long for the first sync
            # before it answers at all; worth saying when it means forever.
            self.warn(opt.line, f"startup_timeout {arg}: until this stanza has synced, the server answers "
                                f"no query for up to {_human_duration(seconds)} (CoreDNS waits as long)")
        self.extra_args(opt, 1)
        self.values["startup_timeout"] = seconds

    def opt_apiserver_qps(self, opt: Directive) -> None:
        if len(opt.args) != 1:
            raise self.argcount(opt)
        arg = opt.args[0]
        try:
            qps = _go_parse_float32(arg)
        except ValueError as e:
            raise self.arg_error(opt, 0, f"invalid apiserver_qps {_go_quote(arg)}: {e}") from None
        if math.isnan(qps):
            # CoreDNS would silently fall back to the default for NaN.
            raise self.arg_error(opt, 0, f"invalid apiserver_qps {_go_quote(arg)}: not a number")
        if qps < 0:
            raise self.arg_error(opt, 0, "apiserver_qps must be >= 0")
        self.values["apiserver_qps"] = qps

    def _nonneg_int(self, opt: Directive) -> int:
        if len(opt.args) != 1:
            raise self.argcount(opt)
        arg = opt.args[0]
        try:
            n = _go_atoi(arg)
        except ValueError as e:
            raise self.arg_error(opt, 0, f"invalid {opt.name} {_go_quote(arg)}: {e}") from None
        if n < 0:
            raise self.arg_error(opt, 0, f"{opt.name} must be >= 0")
        return n

    def opt_apiserver_burst(self, opt: Directive) -> None:
        self.values["apiserver_burst"] = self._nonneg_int(opt)

    def opt_apiserver_max_inflight(self, opt: Directive) -> None:
        self.values["apiserver_max_inflight"] = self._nonneg_int(opt)


_HANDLERS: dict[str, Callable[[_StanzaParser, Directive], None]] = {
    "endpoint_pod_names": _StanzaParser.opt_endpoint_pod_names,
    "pods": _StanzaParser.opt_pods,
    "namespaces": _StanzaParser.opt_namespaces,
    "endpoint": _StanzaParser.opt_endpoint,
    "tls": _StanzaParser.opt_tls,
    "labels": _StanzaParser.opt_labels,
    "namespace_labels": _StanzaParser.opt_namespace_labels,
    "fallthrough": _StanzaParser.opt_fallthrough,
    "ttl": _StanzaParser.opt_ttl,
    "noendpoints": _StanzaParser.opt_noendpoints,
    "zonal": _StanzaParser.opt_zonal,
    "ignore": _StanzaParser.opt_ignore,
    "kubeconfig": _StanzaParser.opt_kubeconfig,
    "multicluster": _StanzaParser.opt_multicluster,
    "startup_timeout": _StanzaParser.opt_startup_timeout,
    "apiserver_qps": _StanzaParser.opt_apiserver_qps,
    "apiserver_burst": _StanzaParser.opt_apiserver_burst,
    "apiserver_max_inflight": _StanzaParser.opt_apiserver_max_inflight,
}


#: Every option a stanza takes, for documentation checks.
OPTION_NAMES: tuple[str, ...] = tuple(sorted(_HANDLERS))


def parse_stanza(directive: Directive, server_zones: Sequence[str]) -> StanzaConfig:
    """Check one ``kubernetai`` (or ``kubernetes``) directive and its block.

    ``server_zones`` are the zones of the enclosing server block (strings
    such as ``"cluster.local."``, or :class:`~kubernetai.corefile.parser.
    ZoneAddress` objects); they are the stanza's zones when it names none.
    Raises :class:`~kubernetai.corefile.parser.CorefileError` located at the
    offending line, its ``token`` the offending argument (or option name).

    The only I/O: a ``kubeconfig`` file is read (if it can be) to record
    its digest for :meth:`StanzaConfig.fingerprint`; whether the files
    named by ``kubeconfig`` and ``tls`` are usable is checked by
    :func:`kube_client_config`.
    """
    return _StanzaParser(directive, server_zones).parse()


# --------------------------------------------------------------------------
# The client connection


def kube_client_config(
    config: StanzaConfig,
    *,
    environ: dict[str, str] | None = None,
    incluster_token_file: str | None = None,
    incluster_ca_file: str | None = None,
):
    """A ``kubernetes.client.Configuration`` for this stanza's cluster.

    As CoreDNS's ``getClientConfig`` chooses:

    * ``kubeconfig FILE [CONTEXT]``: ``kubernetes.config.load_kube_config``
      with that file and context (the file's current-context without one),
      ``persist_config=False`` so the file is never written back.
      ``endpoint`` and ``tls`` are then ignored.  Relative paths inside the
      kubeconfig are relative to the kubeconfig; ``FILE`` itself, like the
      ``tls`` files, is relative to the working directory (as in CoreDNS).
      Tokens from exec/auth-provider plugins are refreshed by the client's
      ``refresh_api_key_hook``.
    * ``endpoint URL`` (+ ``tls CERT KEY CACERT``): that host, the client
      certificate and key, and the CA to verify the server with (without
      ``tls``, the system trust store).  Only the first URL is used.
    * otherwise in-cluster: the service account token and CA under
      ``/var/run/secrets/kubernetes.io/serviceaccount`` and
      ``KUBERNETES_SERVICE_HOST``/``_PORT`` (``environ``,
      ``incluster_token_file`` and ``incluster_ca_file`` replace those, for
      tests).  The service account token is a bound token that the kubelet
      rotates (about hourly); the 37.0.2 loader (``InClusterConfigLoader``
      with ``try_refresh_token=True``) installs ``refresh_api_key_hook``,
      which ``Configuration.auth_settings()`` calls before every request
      made through ``ApiClient`` (including ``_preload_content=False``
      list and watch calls), and re-reads the token file when the copy in
      memory is more than one minute old.  client-go does the same (its
      cached file token source re-reads every minute).  Requests made
      without ``ApiClient`` (raw urllib3) do not get the token at all;
      a watch already open keeps the token it was opened with, which is
      fine: the API server authenticates a watch once, when it starts.

    Also sets ``keep_alive`` (TCP keepalive, as client-go dials), so a
    silently dead watch connection is eventually noticed.  Not set here
    (it is not a ``Configuration`` field): the User-Agent, which belongs on
    the ``ApiClient``; and request throttling, see
    :meth:`StanzaConfig.request_limiter`.

    Raises :class:`~kubernetai.corefile.parser.CorefileError` located at the
    option that cannot be used (a missing tls file, an unreadable or
    invalid kubeconfig, an unknown context) or at the stanza for
    in-cluster failures.
    """
    from kubernetes import client as kclient
    from kubernetes import config as kconfig
    from kubernetes.config import incluster_config

    cfg = kclient.Configuration()
    cfg.keep_alive = True

    def fail(option: str | None, message: str, token: str | None) -> CorefileError:
        line = config.option_line(option) if option else config.line
        return CorefileError(config.filename, line, f"kubernetai: {message}", token)

    if config.kubeconfig is not None:
        path, context = config.kubeconfig
        try:
            # Checked (regular file, size) before the client's loader reads it.
            corefile.read_regular_file(path)
        except FileNotFoundError:
            raise fail("kubeconfig", f"cannot read kubeconfig {path!r}: no such file", path) from None
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise fail("kubeconfig", f"cannot read kubeconfig {path!r}: {why}", path) from None
        try:
            kconfig.load_kube_config(
                config_file=path,
                context=context,
                client_configuration=cfg,
                persist_config=False,
            )
        except Exception as e:  # ConfigException, yaml errors, OSError, malformed entries
            where = f"kubeconfig {path!r}" + (f" context {context!r}" if context else "")
            raise fail("kubeconfig", f"cannot use {where}: {e}", context or path) from e
        return cfg

    if config.endpoint is not None:
        cfg.host = config.endpoint
        if config.tls is not None:
            cert, key, ca = config.tls
            for what, path in (("client certificate", cert), ("client key", key), ("certificate authority", ca)):
                # clientcmd refuses unreadable files when the config is built;
                # a FIFO or a device is refused too, as it would hang or
                # flood the TLS library that reads it later.
                try:
                    corefile.read_regular_file(path)
                except (OSError, ValueError) as e:
                    why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                    raise fail("tls", f"unable to read {what} {path!r}: {why}", path) from e
            cfg.cert_file = cert
            cfg.key_file = key
            cfg.ssl_ca_cert = ca
        return cfg

    env = os.environ if environ is None else environ
    if not env.get(incluster_config.SERVICE_HOST_ENV_NAME) or not env.get(incluster_config.SERVICE_PORT_ENV_NAME):
        raise fail(
            None,
            "unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be "
            "defined (no endpoint or kubeconfig is given, so the stanza connects in-cluster)",
            None,
        )
    loader = incluster_config.InClusterConfigLoader(
        token_filename=incluster_token_file or incluster_config.SERVICE_TOKEN_FILENAME,
        cert_filename=incluster_ca_file or incluster_config.SERVICE_CERT_FILENAME,
        try_refresh_token=True,
        environ=env,
    )
    try:
        loader.load_and_set(cfg)
    except Exception as e:  # ConfigException, OSError
        raise fail(None, f"unable to load in-cluster configuration: {e}", None) from e
    return cfg


def plain_http_credentials(config: StanzaConfig, client_config) -> str | None:
    """A warning if this connection sends credentials over plain HTTP, else None.

    Only a kubeconfig can pair an ``http://`` server with a bearer token
    (``token``, ``tokenFile``, an exec or auth-provider plugin) or a user
    name and password; the client sends them as they are, readable by
    anyone on the path.  (``endpoint`` carries no token, and in-cluster is
    always HTTPS.)
    """
    host = client_config.host or ""
    if not host.lower().startswith("http://"):
        return None
    header = next(iter(client_config.api_key.values()), "") if client_config.api_key else ""
    if header.startswith("Basic "):
        what = "a user name and password"
    elif header or client_config.refresh_api_key_hook is not None:
        what = "a bearer token"
    elif client_config.username or client_config.password:
        what = "a user name and password"
    else:
        return None
    option = "kubeconfig" if config.kubeconfig is not None else None
    line = config.option_line(option) if option else config.line
    return (f"{config.filename}:{line}: kubernetai: {what} would be sent to {host} over plain HTTP, "
            "unencrypted: use an https:// server")


# --------------------------------------------------------------------------
# Request throttling (client-go's rate limiter and CoreDNS's max-inflight
# round-tripper; the Python client has neither)


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

    def reserve(self) -> float:
        """Take a token now; return how long the caller must wait before
        using it (0 if one was available)."""
        if math.isinf(self.qps):
            return 0.0
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._last)
            self._last = now
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.qps)
            self._tokens -= 1.0
            if self._tokens >= 0:
                return 0.0
            return -self._tokens / self.qps

    def wait(self) -> float:
        """Block until the request may be sent; return the time waited
        (what client-go reports as rate_limiter_duration_seconds)."""
        delay = self.reserve()
        if delay > 0:
            self._sleep(delay)
        return delay

    @contextmanager
    def request(self, timeout: float | None = None) -> Iterator[float]:
        """Throttle one request: wait for a token, then for an in-flight
        slot (up to ``timeout`` seconds; TimeoutError after that).  Yields
        the time spent waiting for the token."""
        waited = self.wait()
        if self._slots is not None:
            if not self._slots.acquire(timeout=timeout):
                raise TimeoutError("too many API requests in flight")
        try:
            yield waited
        finally:
            if self._slots is not None:
                self._slots.release()
