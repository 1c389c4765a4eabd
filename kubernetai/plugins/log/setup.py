"""`log [NAMES...] [FORMAT]`: one line per query, in CoreDNS's default format.

    [INFO] 127.0.0.1:40311 - 41424 "A IN example.org. udp 40 false 512" NOERROR qr,aa,rd 68 0.000186745s

Operators feed these lines to existing parsers, so the placeholders and their spelling are
CoreDNS's (`{common}`, `{combined}`, `{remote}`, `{port}`, `{>id}`, `{type}`, `{class}`,
`{name}`, `{proto}`, `{size}`, `{>do}`, `{>bufsize}`, `{rcode}`, `{>rflags}`, `{rsize}`,
`{duration}`, `{>opcode}`), as are the `class` filters (success, denial, error, all).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from twisted.names import dns

from kubernetai.corefile.parser import CorefileError, Directive
from kubernetai.core.registry import BlockBuilder
from kubernetai.core.dnsserver import RCODE_NAMES, QueryLog, type_name
from kubernetai.pkg.logwriter import STDOUT

COMMON = ('{remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" '
          '{rcode} {>rflags} {rsize} {duration}')
COMBINED = COMMON + ' "{>opcode}"'
CLASSES = ("all", "success", "denial", "error")
_PLACEHOLDER = re.compile(r"\{>?[a-z]+\}")


def _values(record: QueryLog) -> dict[str, str]:
    common = record.common()  # the server formats CoreDNS's {common} fields once
    remote, _, rest = common.partition(" - ")
    return {
        "{remote}": remote.rsplit(":", 1)[0],
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
        "{duration}": f"{record.duration:.9f}".rstrip("0").rstrip(".") + "s",
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


@dataclass(frozen=True, slots=True)
class QueryLogger:
    names: tuple[str, ...]
    fmt: str
    classes: frozenset[str]
    write: Callable[[str], None] | None = None  # default: stdout, from a writer thread

    def __call__(self, record: QueryLog) -> None:
        if self.names != (".",):
            qname = record.name
            if not any(qname == n or qname.endswith("." + n) or n == "." for n in self.names):
                return
        if "all" not in self.classes and response_class(record) not in self.classes:
            return
        (self.write or STDOUT)("[INFO] " + format_record(self.fmt, record))


class LogDirective:
    name = "log"
    order = 21
    once = False

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        args = list(directive.args)
        fmt = COMMON
        if args and "{" in args[-1]:
            fmt = args.pop()
        names = tuple(a.lower().rstrip(".") + "." if a != "." else "." for a in args) or (".",)
        classes: set[str] = set()
        for option in directive.block:
            if option.name != "class":
                raise CorefileError(option.filename, option.line,
                                    f"log: unknown property '{option.name}'", option.name)
            if not option.args:
                raise CorefileError(option.filename, option.line,
                                    "log: class needs at least one argument", option.name)
            for value, line in zip(option.args, option.arg_lines):
                if value not in CLASSES:
                    raise CorefileError(option.filename, line,
                                        f"log: unknown class '{value}'", value)
                classes.add(value)
        builder.query_loggers.append(QueryLogger(names, fmt, frozenset(classes or {"all"})))
