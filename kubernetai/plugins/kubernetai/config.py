"""One ``kubernetai`` stanza: its options, checked, as plain frozen data.

A Corefile may hold many ``kubernetai`` stanzas; each takes exactly the
options of CoreDNS 1.14's *kubernetes* plugin (``plugin/kubernetes/setup.go``
``ParseStanza``; the external kubernetai plugin calls that same function for
every stanza).  This module turns one parsed :class:`~kubernetai.corefile.
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

Every option is read the same way (:meth:`_StanzaParser.read_option`): its
entry in :data:`_OPTIONS` says how many arguments it takes and which step
turns them into a value; a step refuses with :class:`_Refusal`, which the
reader turns into the located error.  What the options mean elsewhere lives
next door: Go's number and duration syntax in :mod:`kubernetai.pkg.gosyntax`,
label selectors in :mod:`kubernetai.pkg.selectors`, ``fallthrough`` in
:mod:`kubernetai.pkg.fall`, the connection (``endpoint``, ``tls``,
``kubeconfig``) in :mod:`.apiclient` and the ``apiserver_*`` limits in
:mod:`.limiter`.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import kubernetai.corefile as corefile
from kubernetai.corefile import CorefileError, Directive
from kubernetai.pkg import gosyntax
from kubernetai.pkg.dnsname import in_zone, is_reverse, plain_dots
from kubernetai.pkg.fall import Fall
from kubernetai.pkg.selectors import parse_to_label_selector
from kubernetai.plugins.kubernetai.apiclient import server_url
from kubernetai.plugins.kubernetai.limiter import (
    CLIENT_GO_DEFAULT_BURST,
    CLIENT_GO_DEFAULT_QPS,
    RequestLimiter,
)

__all__ = [
    "DEFAULT_STARTUP_TIMEOUT",
    "DEFAULT_TTL",
    "OPTION_NAMES",
    "POD_MODES",
    "StanzaConfig",
    "parse_stanza",
]

DEFAULT_TTL = 5  # plugin/kubernetes/kubernetes.go defaultTTL
MAX_TTL = 3600  # setup.go: "ttl must be in range [0, 3600]"
DEFAULT_STARTUP_TIMEOUT = 5.0  # setup.go: k8s.startupTimeout = time.Second * 5
POD_MODES = ("disabled", "insecure", "verified")  # kubernetes.go podMode*


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
            if not is_reverse(z):
                return z
        return self.zones[0]

    @property
    def connection(self) -> str:
        """``"kubeconfig"``, ``"endpoint"`` or ``"in-cluster"``: which one
        :func:`.apiclient.kube_client_config` uses (kubernetes.go ``getClientConfig``)."""
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
            conn: tuple = ("kubeconfig", self.kubeconfig[0], self.kubeconfig[1],
                           self.kubeconfig_digest)
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
# Parsing a stanza

# Namespace names are RFC 1123 labels.
_DNS1123_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

_MAX_WARNING_CHARS = 1000
# A startup_timeout longer than this gets a warning (it is accepted).
_LONG_STARTUP_TIMEOUT = 3600.0
_TLS_FILES = ("CERT", "KEY", "CACERT")


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


class _Refusal(Exception):
    """An option step's refusal, located by :meth:`_StanzaParser.read_option`.

    ``arg`` is the index of the argument it is about: the error is then at that
    argument's line, with the argument as its token.  With ``arg`` None it is at
    the option's line, with ``token`` (the option's name if None).
    """

    def __init__(self, message: str, arg: int | None = 0, token: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.arg = arg
        self.token = token


# An option step's result when it has nothing to store (a bare `ignore`).
_NOTHING = object()


@dataclass(frozen=True, slots=True)
class _Option:
    """How one option is read.

    ``min_args``..``max_args`` (None: no upper bound) is how many arguments it
    takes; any other count is caddy's argument-count error.  ``step`` turns the
    arguments into the value stored under the option's name.  ``uses`` is how
    many arguments the step reads when more are allowed and ignored (CoreDNS
    ignores them; a warning says so).  A ``repeatable`` option adds to what an
    earlier line of it gave instead of replacing it, without a warning.
    """

    step: Callable[[_StanzaParser, Directive], object]
    min_args: int = 0
    max_args: int | None = None
    uses: int | None = None
    repeatable: bool = False


class _StanzaParser:
    """One stanza's parse: the values read so far, the warnings, and where each option was.

    Kept as state (not passed around) because the checks between options, made once all
    are read, need the lines of the options involved to locate their errors.
    """

    def __init__(self, directive: Directive, server_zones: Sequence[object]) -> None:
        self.d = directive
        self.name = directive.name
        self.server_zones = self._server_zones(server_zones)
        self.warnings: list[str] = []
        self.lines: list[tuple[str, int]] = []
        self.first_seen: dict[str, int] = {}
        self.values: dict[str, object] = {}

    # -- messages -------------------------------------------------------

    def error(self, line: int, message: str, token: str | None) -> CorefileError:
        """The one place a located error is made: file, line, this directive's name, token."""
        return CorefileError(self.d.filename, line, f"{self.name}: {message}", token)

    def refused(self, where: Directive, refusal: _Refusal) -> CorefileError:
        """``refusal`` located in ``where`` (an option, or the stanza's own line)."""
        if refusal.arg is None:
            token = where.name if refusal.token is None else refusal.token
            return self.error(where.line, refusal.message, token)
        i = refusal.arg
        line = where.arg_lines[i] if i < len(where.arg_lines) else where.line
        return self.error(line, refusal.message, where.args[i])

    def warn(self, line: int, message: str) -> None:
        # Printed by `check` and logged: escaped and bounded like an error.
        text = corefile.printable(f"{self.d.filename}:{line}: {self.name}: {message}")
        self.warnings.append(
            text if len(text) <= _MAX_WARNING_CHARS else text[:_MAX_WARNING_CHARS] + "...")

    # -- zones ------------------------------------------------------------

    @staticmethod
    def _server_zones(zones: Sequence[object]) -> list[str]:
        out: list[str] = []
        for z in zones:
            if isinstance(z, corefile.ZoneAddress):
                names = [z.zone]
            else:
                names = [za.zone for za in corefile.parse_key(str(z))]
            for n in names:
                if n not in out:
                    out.append(n)
        return out

    @staticmethod
    def zone_args(where: Directive, what: str = "zone") -> list[str]:
        """Normalise zone arguments (plugin.Host.NormalizeExact): lower-cased
        FQDNs, CIDRs expanded to reverse zones, scheme and port dropped.

        CoreDNS silently drops an argument it cannot normalise; that can
        only be a mistake (the stanza would not serve what was written),
        so it is refused here.
        """
        out: list[str] = []
        for i, arg in enumerate(where.args):
            if arg == "":
                raise _Refusal(
                    f"empty {what} argument (an environment variable that is not set?)", i)
            try:
                addrs = corefile.parse_key(arg)
            except ValueError as e:
                raise _Refusal(f"invalid {what} {arg!r}: {e}", i) from None
            for za in addrs:
                if za.zone not in out:
                    out.append(za.zone)
        return out

    # -- the stanza ---------------------------------------------------------

    def parse(self) -> StanzaConfig:
        d = self.d
        if d.args:
            try:
                zones = self.zone_args(d)
            except _Refusal as refusal:
                raise self.refused(d, refusal) from None
        else:
            # plugin.OriginsFromArgsOrServerBlock: the server block's zones.
            zones = list(self.server_zones)
        if not zones or all(is_reverse(z) for z in zones):
            raise self.error(d.line, "non-reverse zone name must be used", d.name)
        self.warn_outside(zones)
        for opt in d.block:
            self.read_option(opt)
        return self.build(zones)

    def warn_outside(self, zones: list[str]) -> None:
        """CoreDNS does not require stanza zones to be inside the server
        block's zones (OriginsFromArgsOrServerBlock checks nothing); but a
        zone with nothing in common with them can never be queried here."""

        def related(a: str, b: str) -> bool:
            a, b = plain_dots(a), plain_dots(b)  # Corefile zones are in presentation form
            return in_zone(a, b) or in_zone(b, a)

        server = self.server_zones
        outside = [z for z in zones if server and not any(related(s, z) for s in server)]
        if outside:
            self.warn(
                self.d.line,
                f"{'zone' if len(outside) == 1 else 'zones'} {' '.join(outside)} "
                f"outside this server block's zones ({' '.join(self.server_zones)}): "
                f"queries for {'it' if len(outside) == 1 else 'them'} never reach this stanza",
            )

    def read_option(self, opt: Directive) -> None:
        """Check one option line and store its value under its name.

        The steps every option shares: a known name, no block, a note when it
        is repeated, the argument count, its own step (whose :class:`_Refusal`
        becomes the located error), then a note about ignored arguments.
        """
        spec = _OPTIONS.get(opt.name)
        if spec is None:
            raise self.error(opt.line, f"unknown property '{opt.name}'", opt.name)
        if opt.block:
            raise self.error(opt.line, f"'{opt.name}' takes no block: unexpected '{{'", "{")
        if opt.name in self.first_seen and not spec.repeatable:
            self.warn(
                opt.line,
                f"'{opt.name}' is given again (first at line {self.first_seen[opt.name]}); "
                "the last one is used",
            )
        self.first_seen.setdefault(opt.name, opt.line)
        self.lines.append((opt.name, opt.line))
        n = len(opt.args)
        if n < spec.min_args or (spec.max_args is not None and n > spec.max_args):
            last = opt.args[-1] if opt.args else opt.name
            raise self.error(opt.line, _arg_err(last), last)
        try:
            value = spec.step(self, opt)
        except _Refusal as refusal:
            raise self.refused(opt, refusal) from None
        if spec.uses is not None and n > spec.uses:
            extra = " ".join(opt.args[spec.uses:])
            self.warn(opt.line, f"'{opt.name}': extra arguments ignored (as CoreDNS does): {extra}")
        if value is not _NOTHING:
            self.values[opt.name] = value

    def build(self, zones: list[str]) -> StanzaConfig:
        """The checks between options, then the :class:`StanzaConfig`."""
        d = self.d
        v = self.values
        where = dict(self.lines)  # last line of each option
        namespaces: frozenset[str] = v.get("namespaces", frozenset())  # type: ignore[assignment]

        if namespaces and "namespace_labels" in v:
            later = max(("namespaces", "namespace_labels"), key=lambda k: where[k])
            raise self.error(where[later], "namespaces and namespace_labels cannot both be set",
                             later)

        multicluster: list[str] = v.get("multicluster", [])  # type: ignore[assignment]
        for mz in multicluster:
            if mz not in zones:
                # setup.go: slices.Contains(k8s.Zones, multiclusterZone), an
                # exact match (a subzone of a stanza zone is refused too).
                raise self.error(
                    where["multicluster"],
                    f"is not authoritative for the multicluster zone {mz} "
                    f"(authoritative zones: [{' '.join(zones)}])",
                    mz,
                )

        if v.get("zonal") and v.get("noendpoints"):
            later = max(("zonal", "noendpoints"), key=lambda k: where[k])
            raise self.error(where[later], "zonal requires the endpoint cache; remove noendpoints",
                             later)

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
            self.warn(where["kubeconfig"],
                      f"{ignored} ignored: kubeconfig is set and takes precedence")
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
            namespaces=namespaces,
            namespace_labels=v.get("namespace_labels") or None,  # type: ignore[arg-type]
            labels=v.get("labels") or None,  # type: ignore[arg-type]
            pods=v.get("pods", "disabled"),  # type: ignore[arg-type]
            endpoint_pod_names=bool(v.get("endpoint_pod_names")),
            ttl=v.get("ttl", DEFAULT_TTL),  # type: ignore[arg-type]
            noendpoints=bool(v.get("noendpoints")),
            fall=fall,
            ignore_empty_service=bool(v.get("ignore")),
            multicluster_zones=tuple(multicluster),
            zonal=bool(v.get("zonal")),
            startup_timeout=v.get("startup_timeout", DEFAULT_STARTUP_TIMEOUT),  # type: ignore[arg-type]
            filename=d.filename,
            line=d.line,
            warnings=tuple(self.warnings),
            kubeconfig_digest=digest,
            option_lines=tuple(self.lines),
        )

    def endpoint_url(self, raw: tuple[str, int], tls: bool) -> str:
        """The ``endpoint`` URL, completed and checked by :func:`.apiclient.server_url`."""
        url, line = raw
        try:
            return server_url(url, tls)
        except ValueError as e:
            raise self.error(line, f"invalid endpoint URL {url!r}: {e}", url) from None

    # -- option steps (setup.go ParseStanza, in its order) --------------------
    # Each gets an option whose argument count is already checked and returns
    # its value, or raises _Refusal.

    def opt_flag(self, opt: Directive) -> object:
        """``endpoint_pod_names``, ``noendpoints``, ``zonal``: no arguments."""
        return True

    def opt_pods(self, opt: Directive) -> object:
        mode = opt.args[0]
        if mode not in POD_MODES:
            raise _Refusal(f"wrong value for pods: {mode},  "
                           "must be one of: disabled, verified, insecure")
        return mode

    def opt_namespaces(self, opt: Directive) -> object:
        for ns in opt.args:
            # CoreDNS takes any string; one that cannot be a namespace name
            # (an RFC 1123 label) never matches anything.
            if not (len(ns) <= 63 and _DNS1123_LABEL_RE.fullmatch(ns)):
                self.warn(opt.line, f"namespace {ns!r} is not a valid namespace name "
                                    "(RFC 1123 label): it matches nothing")
        earlier: frozenset[str] = self.values.get("namespaces", frozenset())  # type: ignore[assignment]
        return earlier | frozenset(opt.args)

    def opt_endpoint(self, opt: Directive) -> object:
        if len(opt.args) > 1:
            self.warn(
                opt.line,
                "Multiple endpoints have been deprecated, "
                f"only the first specified endpoint '{opt.args[0]}' is used",
            )
        if opt.args[0] == "":
            raise _Refusal("empty endpoint URL (an environment variable that is not set?)")
        # Checked once tls is known (the shorthand's scheme depends on it).
        return (opt.args[0], opt.arg_lines[0] if opt.arg_lines else opt.line)

    def opt_tls(self, opt: Directive) -> object:
        for i, a in enumerate(opt.args):
            if a == "":
                raise _Refusal(f"empty {_TLS_FILES[i]} file name", i)
        return tuple(opt.args)

    def _selector(self, opt: Directive, what: str) -> str:
        text = " ".join(opt.args)
        try:
            canonical, notes = parse_to_label_selector(text)
        except ValueError as e:
            message = f"unable to parse {what} selector value: '{text}': {e}"
            raise _Refusal(message, None, text) from None
        for note in notes:
            self.warn(opt.line, f"{opt.name}: {note}")
        return canonical

    def opt_labels(self, opt: Directive) -> object:
        return self._selector(opt, "label")

    def opt_namespace_labels(self, opt: Directive) -> object:
        return self._selector(opt, "namespace_label")

    def opt_fallthrough(self, opt: Directive) -> object:
        # fall.F.SetZonesFromArgs: no arguments means the root zone.
        return Fall(tuple(self.zone_args(opt, what="fallthrough zone")) if opt.args else (".",))

    def opt_ttl(self, opt: Directive) -> object:
        t = self._go_number(opt, gosyntax.atoi)
        if t < 0 or t > MAX_TTL:
            raise _Refusal(f"ttl must be in range [0, {MAX_TTL}]: {t}")
        return t

    def opt_ignore(self, opt: Directive) -> object:
        if not opt.args:
            # CoreDNS accepts a bare "ignore" and does nothing.
            self.warn(opt.line, "'ignore' without a value does nothing "
                                "(did you mean 'ignore empty_service'?)")
            return _NOTHING
        if opt.args[0] != "empty_service":
            raise _Refusal(f"unable to parse ignore value: '{opt.args[0]}'")
        return True

    def opt_kubeconfig(self, opt: Directive) -> object:
        if opt.args[0] == "":
            raise _Refusal("empty kubeconfig file name (an environment variable that is not set?)")
        context = opt.args[1] if len(opt.args) == 2 else None
        if context == "":
            # clientcmd treats an empty CurrentContext override as "not set".
            context = None
        return (opt.args[0], context)

    def opt_multicluster(self, opt: Directive) -> object:
        # OriginsFromArgsOrServerBlock(args, []): no arguments, no zones.
        return self.zone_args(opt, what="multicluster zone")

    def opt_startup_timeout(self, opt: Directive) -> object:
        arg = opt.args[0]
        try:
            seconds = gosyntax.parse_duration(arg)
        except ValueError as e:
            raise _Refusal(f"failed to parse startup_timeout: {arg}, {e}") from None
        if seconds < 0:
            # CoreDNS panics at startup on a negative (or zero) timeout
            # (time.NewTicker); zero here means "do not wait for the sync".
            raise _Refusal(f"startup_timeout must not be negative: {arg}")
        if seconds > _LONG_STARTUP_TIMEOUT:
            # Any Go duration works (up to 2562047h47m16.854775807s), in
            # CoreDNS as here: the server waits that long for the first sync
            # before it answers at all; worth saying when it means forever.
            self.warn(opt.line, f"startup_timeout {arg}: until this stanza has synced, "
                                "the server answers no query for up to "
                                f"{_human_duration(seconds)} (CoreDNS waits as long)")
        return seconds

    def opt_apiserver_qps(self, opt: Directive) -> object:
        qps = self._go_number(opt, gosyntax.parse_float32)
        if math.isnan(qps):
            # CoreDNS would silently fall back to the default for NaN.
            raise _Refusal(f"invalid apiserver_qps {gosyntax.quote(opt.args[0])}: not a number")
        if qps < 0:
            raise _Refusal("apiserver_qps must be >= 0")
        return qps

    def opt_nonneg_int(self, opt: Directive) -> object:
        """``apiserver_burst``, ``apiserver_max_inflight``: an int >= 0."""
        n = self._go_number(opt, gosyntax.atoi)
        if n < 0:
            raise _Refusal(f"{opt.name} must be >= 0")
        return n

    @staticmethod
    def _go_number(opt: Directive, parse: Callable[[str], float]) -> float:
        """The first argument read by Go's strconv (``parse``), refused with Go's message."""
        arg = opt.args[0]
        try:
            return parse(arg)
        except ValueError as e:
            raise _Refusal(f"invalid {opt.name} {gosyntax.quote(arg)}: {e}") from None


_P = _StanzaParser
_OPTIONS: dict[str, _Option] = {
    "endpoint_pod_names": _Option(_P.opt_flag, max_args=0),
    "pods": _Option(_P.opt_pods, 1, 1),
    "namespaces": _Option(_P.opt_namespaces, 1, repeatable=True),
    "endpoint": _Option(_P.opt_endpoint, 1),
    "tls": _Option(_P.opt_tls, 3, 3),
    "labels": _Option(_P.opt_labels, 1),
    "namespace_labels": _Option(_P.opt_namespace_labels, 1),
    "fallthrough": _Option(_P.opt_fallthrough),
    "ttl": _Option(_P.opt_ttl, 1, uses=1),
    "noendpoints": _Option(_P.opt_flag, max_args=0),
    "zonal": _Option(_P.opt_flag, max_args=0),
    "ignore": _Option(_P.opt_ignore, uses=1),
    "kubeconfig": _Option(_P.opt_kubeconfig, 1, 2),
    "multicluster": _Option(_P.opt_multicluster),
    "startup_timeout": _Option(_P.opt_startup_timeout, 1, uses=1),
    "apiserver_qps": _Option(_P.opt_apiserver_qps, 1, 1),
    "apiserver_burst": _Option(_P.opt_nonneg_int, 1, 1),
    "apiserver_max_inflight": _Option(_P.opt_nonneg_int, 1, 1),
}
del _P


#: Every option a stanza takes, for documentation checks.
OPTION_NAMES: tuple[str, ...] = tuple(sorted(_OPTIONS))


def parse_stanza(directive: Directive, server_zones: Sequence[str]) -> StanzaConfig:
    """Check one ``kubernetai`` (or ``kubernetes``) directive and its block.

    ``server_zones`` are the zones of the enclosing server block (strings
    such as ``"cluster.local."``, or :class:`~kubernetai.corefile.
    ZoneAddress` objects); they are the stanza's zones when it names none.
    Raises :class:`~kubernetai.corefile.CorefileError` located at the
    offending line, its ``token`` the offending argument (or option name).

    The only I/O: a ``kubeconfig`` file is read (if it can be) to record
    its digest for :meth:`StanzaConfig.fingerprint`; whether the files
    named by ``kubeconfig`` and ``tls`` are usable is checked by
    :func:`.apiclient.kube_client_config`.
    """
    return _StanzaParser(directive, server_zones).parse()
