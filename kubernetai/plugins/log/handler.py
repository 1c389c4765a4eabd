"""The `log` step: one line per query, in CoreDNS's format, written once the reply is sent.

    [INFO] 127.0.0.1:40311 - 41424 "A IN example.org. udp 40 false 512" NOERROR qr,aa,rd 68 0.0002s

Operators feed these lines to existing parsers, so the placeholders and their spelling are
CoreDNS's (`{common}`, `{combined}`, `{remote}`, `{port}`, `{>id}`, `{type}`, `{class}`,
`{name}`, `{proto}`, `{size}`, `{>do}`, `{>bufsize}`, `{rcode}`, `{>rflags}`, `{rsize}`,
`{duration}`, `{>opcode}`), as are the `class` filters (success, denial, error, all).
Like CoreDNS's recorder around the ResponseWriter, the step watches what is written
(`Request.observe`), so answers from the cache and errors are logged too.
"""

from __future__ import annotations

import re
import time
from typing import Callable

from twisted.names import dns

from kubernetai.core.codec import MAX_TCP_SIZE, RCODE_NAMES, type_name
from kubernetai.core.plugin import Next, Result
from kubernetai.core.request import Request
from kubernetai.pkg.dnsname import in_zone

COMMON = ('{remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" '
          '{rcode} {>rflags} {rsize} {duration}')
COMBINED = COMMON + ' "{>opcode}"'
CLASSES = ("all", "success", "denial", "error")
_PLACEHOLDER = re.compile(r"\{>?[a-z]+\}")
_CLASS_NAMES = {1: "IN", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}
_FLAGS = (("qr", 0x8000), ("aa", 0x0400), ("tc", 0x0200), ("rd", 0x0100),
          ("ra", 0x0080), ("z", 0x0040), ("ad", 0x0020), ("cd", 0x0010))


class QueryLog:
    """What the `log` line says about one answered query."""

    __slots__ = ("remote", "port", "id", "qtype", "qclass", "name", "proto", "size",
                 "do", "bufsize", "rcode", "flags", "rsize", "duration", "answers")

    def __init__(self, remote: str, port: int, req: Request, wire: bytes, duration: float):
        self.remote = remote
        self.port = port
        self.id = req.id
        self.qtype = req.qtype
        self.qclass = req.qclass
        self.name = req.fqdn()
        self.proto = "udp" if req.udp else "tcp"
        self.size = req.size
        self.do = req.do
        self.bufsize = req.limit if req.udp else MAX_TCP_SIZE
        self.rcode = wire[3] & 0xF
        self.flags = (wire[2] << 8) | wire[3]
        self.rsize = len(wire)
        self.duration = duration
        self.answers = (wire[6] << 8) | wire[7]

    def rflags(self) -> str:
        """Response flags as CoreDNS's ``{>rflags}``: ``qr,aa,tc,rd,ra,z,ad,cd``."""
        return ",".join(name for name, bit in _FLAGS if self.flags & bit)

    def common(self) -> str:
        """The CoreDNS ``{common}`` log format."""
        return (f'{_rfc3986(self.remote)}:{self.port} - {self.id} "{type_name(self.qtype)} '
                f'{_CLASS_NAMES.get(self.qclass, f"CLASS{self.qclass}")} {self.name} '
                f'{self.proto} {self.size} {str(self.do).lower()} {self.bufsize}" '
                f'{RCODE_NAMES.get(self.rcode, str(self.rcode))} {self.rflags()} '
                f'{self.rsize} {_duration(self.duration)}')


def _rfc3986(host: str) -> str:
    """An address as CoreDNS's `{remote}` writes it: IPv6 in brackets."""
    return f"[{host}]" if ":" in host else host


def _duration(seconds: float) -> str:
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def _values(record: QueryLog) -> dict[str, str]:
    return {
        "{remote}": _rfc3986(record.remote),
        "{port}": str(record.port),
        "{>id}": str(record.id),
        "{type}": type_name(record.qtype),
        "{class}": "IN" if record.qclass == dns.IN else f"CLASS{record.qclass}",
        "{name}": record.name,
        "{proto}": record.proto,
        "{size}": str(record.size),
        "{>do}": str(record.do).lower(),
        "{>bufsize}": str(record.bufsize),
        "{rcode}": RCODE_NAMES.get(record.rcode, str(record.rcode)),
        "{>rflags}": record.rflags(),
        "{rsize}": str(record.rsize),
        "{duration}": _duration(record.duration),
        "{>opcode}": "0",  # CoreDNS prints the opcode as a number; only QUERY is answered
    }


def format_record(fmt: str, record: QueryLog) -> str:
    if fmt == COMMON:
        return record.common()
    values = _values(record)
    text = fmt.replace("{combined}", COMBINED).replace("{common}", COMMON)
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(0), m.group(0)), text)


def response_class(record: QueryLog) -> str:
    if record.rcode == dns.ENAME or (record.rcode == dns.OK and not record.answers):
        return "denial"
    if record.rcode == dns.OK:
        return "success"
    return "error"


class LogHandler:
    """One `log` directive: the names it covers, its format and classes, where it writes."""

    name = "log"

    def __init__(self, names: tuple[str, ...], fmt: str, classes: frozenset[str],
                 write: Callable[[str], None]) -> None:
        self.names = names
        self.fmt = fmt
        self.classes = classes
        self.write = write
        self._everything = names == (".",)

    def serve(self, request: Request, next: Next) -> Result:
        if self._everything or any(in_zone(request.fqdn(), name) for name in self.names):
            request.observe(self.sent)
        return next(request)

    def sent(self, request: Request, wire: bytes) -> None:
        host, port = request.peer()
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]  # an IPv4 client of a dual-stack socket, printed as Go prints it
        record = QueryLog(host, port, request, wire, time.perf_counter() - request.started)
        if "all" not in self.classes and response_class(record) not in self.classes:
            return
        self.write("[INFO] " + format_record(self.fmt, record))
