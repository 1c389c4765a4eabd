"""CoreDNS's log format: its placeholders, parsed once into a template and value getters.

A format is read the way CoreDNS's ``plugin/pkg/replacer`` reads it: find a ``}``, go back
to the nearest ``{`` before it; a known placeholder becomes a value, ``{/LABEL}`` a metadata
value (``-`` when unknown), and anything else stays as written, braces included
(``{foo}`` prints ``{foo}``). The result is a ``str.format`` template plus one getter per
placeholder, so a line costs one call per placeholder and one ``format``.

Values are CoreDNS's: ``{name}`` lower case in presentation form (``\\DDD`` escapes, so a
query cannot forge a line), ``{remote}``/``{local}`` with IPv6 in brackets, ``{>bufsize}``
512 at least (65535 over TCP), ``{duration}`` in seconds with as many digits as needed,
``{>rflags}`` the response's flags in the order ``qr,aa,tc,rd,ra,z,ad,cd``. One difference:
``{rsize}`` is the size of the response as sent, names compressed; CoreDNS counts the
message before its writer compresses it, so its figure is larger when names repeat.
"""

from __future__ import annotations

from typing import Any, Callable

from kubernetai.core.codec import type_name
from kubernetai.core.request import Request
from kubernetai.plugins.log.classify import classify, typify

__all__ = ["COMMON", "COMBINED", "DEFAULT", "EMPTY", "Entry", "LABELS", "compile_format",
           "parse_format"]

#: What CoreDNS prints for a value it does not have.
EMPTY = "-"
COMMON = ('{remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" '
          '{rcode} {>rflags} {rsize} {duration}')
COMBINED = COMMON + ' "{>opcode}"'
DEFAULT = COMMON

_MIN_UDP, _MAX_TCP = 512, 65535
# miekg/dns RcodeToString for the 4 header bits (11-15 are unassigned: printed as numbers).
_RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN",
           "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE", "11", "12", "13", "14", "15")
_CLASSES = {1: "IN", 2: "CS", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}
_FLAGS = (("qr", 0x8000), ("aa", 0x0400), ("tc", 0x0200), ("rd", 0x0100),
          ("ra", 0x0080), ("z", 0x0040), ("ad", 0x0020), ("cd", 0x0010))
_FLAG_TEXT: dict[int, str] = {}  # the 16 header bits -> their text, filled on demand


class Entry:
    """One answered query as the placeholders read it; costly values computed once, when
    a placeholder or the class filter first asks."""

    __slots__ = ("req", "wire", "end", "_peer", "_type")

    def __init__(self, req: Request, wire: bytes, end: float) -> None:
        self.req = req
        self.wire = wire
        self.end = end
        self._peer: tuple[str, int] | None = None
        self._type: str | None = None

    def peer(self) -> tuple[str, int]:
        peer = self._peer
        if peer is None:
            host, port = self.req.peer()
            peer = self._peer = (_unmapped(host), port)
        return peer

    def response_type(self) -> str:
        """CoreDNS's ``response.Typify`` of what was sent (NOERROR, NODATA, ...)."""
        kind = self._type
        if kind is None:
            kind = self._type = typify(self.wire, self.req.qtype)
        return kind

    def response_class(self) -> str:
        """CoreDNS's ``response.Classify``: success, denial or error."""
        return classify(self.response_type())


def _unmapped(host: str) -> str:
    """An IPv4 client of a dual-stack socket (``::ffff:a.b.c.d``) as Go prints it."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def _rfc3986(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _duration(seconds: float) -> str:
    """Go's ``strconv.FormatFloat(d.Seconds(), 'f', -1, 64)`` for a nanosecond duration:
    fixed notation, no trailing zeros."""
    if seconds <= 0:
        return "0s"
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def _flags(bits: int) -> str:
    text = _FLAG_TEXT.get(bits)
    if text is None:
        text = _FLAG_TEXT[bits] = ",".join(name for name, bit in _FLAGS if bits & bit)
    return text


def _local(entry: Entry) -> str:
    """The server address the query came in on (CoreDNS: the listener's for UDP, so
    ``[::]`` for a wildcard; the connection's for TCP)."""
    proto = entry.req.proto
    transport = getattr(proto, "transport", None)
    if transport is None:  # the stock-protocol adapter
        transport = getattr(getattr(proto, "proto", None), "transport", None)
    try:
        host = transport.getHost().host  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - no transport to ask: CoreDNS's empty value
        return EMPTY
    return _rfc3986(_unmapped(host))


def _bufsize(entry: Entry) -> str:
    req = entry.req
    if not req.udp:
        return "65535"
    opt = req.opt  # the response's OPT: its class field is the client's (clamped) size
    if not opt:
        return "512"
    return str(max((opt[3] << 8) | opt[4], _MIN_UDP))


def _class(entry: Entry) -> str:
    qclass = entry.req.qclass
    return _CLASSES.get(qclass) or f"CLASS{qclass}"


Getter = Callable[[Entry], str]

#: CoreDNS's placeholders (``replacer.labels``) and how each is read.
LABELS: dict[str, Getter] = {
    "{type}": lambda e: type_name(e.req.qtype),
    "{name}": lambda e: e.req.fqdn(),
    "{class}": _class,
    "{proto}": lambda e: "udp" if e.req.udp else "tcp",
    "{size}": lambda e: str(e.req.size),
    "{remote}": lambda e: _rfc3986(e.peer()[0]),
    "{port}": lambda e: str(e.peer()[1]),
    "{local}": _local,
    "{>id}": lambda e: str(e.req.id),
    "{>opcode}": lambda e: str((e.wire[2] >> 3) & 0xF),
    "{>do}": lambda e: "true" if e.req.do else "false",
    "{>bufsize}": _bufsize,
    "{rcode}": lambda e: _RCODES[e.wire[3] & 0xF],
    "{rsize}": lambda e: str(len(e.wire)),
    "{duration}": lambda e: _duration(e.end - e.req.started),
    "{>rflags}": lambda e: _flags((e.wire[2] << 8) | e.wire[3]),
}

#: Metadata this server has (``{/log/type}``, ``{/log/class}``, set by CoreDNS's log).
METADATA: dict[str, Getter] = {
    "log/type": Entry.response_type,
    "log/class": Entry.response_class,
}

LITERAL, LABEL, META = "literal", "label", "metadata"


def parse_format(fmt: str) -> list[tuple[str, str]]:
    """The format's parts in order, as ``(kind, value)``: kind is ``literal`` (text as is),
    ``label`` (a placeholder, braces included) or ``metadata`` (the label between ``{/``
    and ``}``). Adjacent literals are joined."""
    parts: list[tuple[str, str]] = []

    def literal(text: str) -> None:
        if parts and parts[-1][0] == LITERAL:
            parts[-1] = (LITERAL, parts[-1][1] + text)
        elif text:
            parts.append((LITERAL, text))

    rest = fmt
    while True:
        close = rest.find("}")
        if close < 0:
            break
        open_ = rest.rfind("{", 0, close)
        token = rest[open_:close + 1] if open_ >= 0 else ""
        if token in LABELS:
            literal(rest[:open_])
            parts.append((LABEL, token))
        elif token.startswith("{/"):
            literal(rest[:open_])
            parts.append((META, token[2:-1]))
        else:  # no "{" before it, or not a placeholder: all of it is text
            literal(rest[:close + 1])
        rest = rest[close + 1:]
    literal(rest)
    return parts


def _common(e: Entry) -> str:
    """The Common Log Format in one expression: the default, so the cheapest (the same
    text as the placeholders spelled out; a test holds them together)."""
    req, wire = e.req, e.wire
    host, port = e.peer()
    qclass = req.qclass
    return (f'{_rfc3986(host)}:{port} - {req.id} "{type_name(req.qtype)} '
            f'{_CLASSES.get(qclass) or f"CLASS{qclass}"} {req.fqdn()} '
            f'{"udp" if req.udp else "tcp"} {req.size} {"true" if req.do else "false"} '
            f'{_bufsize(e)}" {_RCODES[wire[3] & 0xF]} {_flags((wire[2] << 8) | wire[3])} '
            f"{len(wire)} {_duration(e.end - req.started)}")


def _combined(e: Entry) -> str:
    return f'{_common(e)} "{(e.wire[2] >> 3) & 0xF}"'


def compile_format(fmt: str, *, generic: bool = False) -> Callable[[Entry], str]:
    """A function writing ``fmt`` for one entry (``generic``: never a hand-written one)."""
    if not generic and fmt in (COMMON, COMBINED):
        return _common if fmt == COMMON else _combined
    template: list[str] = []
    getters: list[Getter] = []
    for kind, value in parse_format(fmt):
        if kind == LITERAL:
            template.append(value.replace("{", "{{").replace("}", "}}"))
            continue
        template.append("{}")
        getters.append(LABELS[value] if kind == LABEL else METADATA.get(value, _empty))
    text = "".join(template)
    if not getters:
        constant = text.format()
        return lambda entry: constant
    render = text.format
    bound = tuple(getters)

    def line(entry: Entry) -> str:
        return render(*[get(entry) for get in bound])
    return line


def _empty(entry: Any) -> str:
    return EMPTY
