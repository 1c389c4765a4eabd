"""The `log` step: one line per query, in CoreDNS's format, written once the reply is sent.

    [INFO] 127.0.0.1:40311 - 41424 "A IN example.org. udp 40 false 512" NOERROR qr,aa,rd 68 0.0002s

One step serves every `log` line of a server block, as CoreDNS's one Logger holds one rule
per name: a query is logged by the first rule whose name holds it (Corefile order), and
only if that rule's classes take the response; no later rule is tried, so two `log` lines
never log a query twice. Like CoreDNS's recorder around the ResponseWriter, the step asks
to see what is sent (``Request.observe``), so answers from the cache and errors are logged
too. Formats are compiled once (:mod:`kubernetai.plugins.log.format`).
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

from kubernetai.core.plugin import Next, Result
from kubernetai.core.request import Request
from kubernetai.pkg.dnsname import ascii_lower, fqdn, in_zone, plain_dots
from kubernetai.pkg.logwriter import STDOUT
from kubernetai.plugins.log.classify import CLASSES
from kubernetai.plugins.log.format import COMBINED, COMMON, DEFAULT, Entry, compile_format

__all__ = ["LogHandler", "LogRule", "COMMON", "COMBINED", "DEFAULT", "CLASSES", "scope_of"]


def scope_of(name: str) -> str:
    """A rule's name as it is compared: lower case, fully qualified, escaped dots kept
    inside their label (``dns.Fqdn``, compared case-insensitively as miekg does)."""
    return fqdn(plain_dots(ascii_lower(name)))


class LogRule:
    """One name of a `log` line: its scope, format and classes."""

    __slots__ = ("scope", "fmt", "classes", "everything", "render", "owner")

    def __init__(self, owner: "LogHandler", name: str, fmt: str,
                 classes: frozenset[str]) -> None:
        self.owner = owner
        self.scope = scope_of(name)
        self.everything = self.scope == "."
        self.fmt = fmt
        # No class given means all (CoreDNS adds "all" then); "all" with others is all.
        self.classes = None if not classes or "all" in classes else classes
        self.render = compile_format(fmt)

    def sent(self, request: Request, wire: bytes) -> None:
        """The response has been sent: write its line if its class is wanted."""
        owner = self.owner
        entry = Entry(request, wire, owner.now())
        classes = self.classes
        if classes is not None and entry.response_class() not in classes:
            return
        owner.write("[INFO] " + self.render(entry))


class LogHandler:
    """Every `log` line of one server block: the rules in order, and where lines go.

    ``LogHandler(names, fmt, classes, write)`` holds the rules of one `log` line;
    :meth:`add` appends those of the next. ``write`` takes a whole line; ``now`` is the
    clock ``{duration}`` is measured with (the server stamps ``request.started`` with
    ``time.perf_counter``).
    """

    name = "log"

    def __init__(self, names: Iterable[str] = (".",), fmt: str = DEFAULT,
                 classes: frozenset[str] = frozenset({"all"}),
                 write: Callable[[str], None] = STDOUT, *,
                 now: Callable[[], float] = time.perf_counter) -> None:
        self.write = write
        self.now = now
        self.rules: list[LogRule] = []
        self.add(names, fmt, classes)

    def add(self, names: Iterable[str], fmt: str, classes: frozenset[str]) -> None:
        """The rules of one more `log` line: one per name, sharing its format and classes."""
        for name in names:
            self.rules.append(LogRule(self, name, fmt, classes))

    def serve(self, request: Request, next: Next) -> Result:
        rule = self.rule_for(request)
        if rule is not None:
            request.observe(rule.sent)
        return next(request)

    def rule_for(self, request: Request) -> LogRule | None:
        """The first rule whose name holds the query's (CoreDNS's ``plugin.Name.Matches``)."""
        name = None
        for rule in self.rules:
            if rule.everything:
                return rule
            if name is None:
                name = plain_dots(request.fqdn())
            if in_zone(name, rule.scope):
                return rule
        return None
