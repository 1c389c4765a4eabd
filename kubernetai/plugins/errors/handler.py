"""The `errors` step: writes the plugin errors of replies, and recovers from plugin bugs.

CoreDNS prints ``[ERROR] plugin/errors: <rcode> <qname> <qtype>: <error>`` on standard
output; operators grep for exactly that, so the format is kept. The step sits near the
front of the pipeline and wraps every plugin after it:

* a reply carrying a plugin error is marked reported (the server does not log it again)
  and its line is written once the reply is sent, as CoreDNS writes it after the plugins
  after it (so a `log` line of the same query comes first); errors matching a
  `consolidate` pattern are counted instead (:mod:`kubernetai.plugins.errors.consolidate`);
* an exception from a plugin after it (CoreDNS's panic) is answered SERVFAIL and written
  as CoreDNS's server writes a recovered panic,
  ``[ERROR] Recovered from panic in server: "dns://:53" ZeroDivisionError: ...``, followed
  by the traceback with ``stacktrace``; it counts in ``coredns_panics_total``.

Error texts are written with control characters escaped, so no plugin error, however it
was built, can forge a line.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from twisted.python.failure import Failure

from kubernetai.core.codec import SERVFAIL, type_name
from kubernetai.core.metrics import PROCESS
from kubernetai.core.plugin import Next, Result
from kubernetai.core.request import Reply, Request
from kubernetai.plugins.errors.consolidate import LEVELS, Consolidator, Pattern

__all__ = ["ErrorsHandler", "printable"]

PANICS = PROCESS.counter("coredns_panics_total", "A metrics that counts the number of panics.")


class ErrorsHandler:
    """One block's `errors`: where lines go, its `consolidate` patterns, `stacktrace`.

    ``debug``: `[DEBUG]` lines are written (the block has `debug`; they are also written
    while the writer's own ``debug`` is on).
    ``bound``: the block has `bind` addresses (a recovered panic names the address).
    ``clock``: the reactor for consolidation periods (the global one by default).
    """

    name = "errors"
    # A cache hit has no error to write and raises nothing: the server may answer it early,
    # in front of this step (core.plugin.EARLY_TRANSPARENT).
    early_transparent = True

    def __init__(self, write: Callable[[str], None], patterns: list[Pattern] | None = None,
                 *, stacktrace: bool = False, debug: bool = False, bound: bool = False,
                 clock: Any = None) -> None:
        self.write = write
        self.stacktrace = stacktrace
        self.debug = debug
        self.bound = bound
        self.consolidator = Consolidator(list(patterns or ()), self._emit, clock)

    # -- the step ---------------------------------------------------------------------------

    def serve(self, request: Request, next: Next) -> Result:
        try:
            reply = next(request)
        except Exception:
            return self._recovered(Failure(), request)
        if isinstance(reply, Reply):
            return self._report(reply, request)
        return reply.addCallbacks(self._report, self._recovered, callbackArgs=(request,),
                                  errbackArgs=(request,))

    def _report(self, reply: Reply, request: Request) -> Reply:
        error = reply.error
        if error and not reply.reported:
            reply.reported = True
            level = "error"
            consolidator = self.consolidator
            if consolidator.patterns:
                pattern = consolidator.match(error)
                if pattern is not None:
                    if consolidator.count(pattern):
                        return reply
                    level = pattern.level
            prefix = self._prefix(level)
            if prefix is not None:
                line = (f"{prefix}plugin/errors: {reply.rcode} {request.fqdn()} "
                        f"{type_name(request.qtype)}: {printable(error)}")
                request.observe(partial(self._sent, line))
        return reply

    def _sent(self, line: str, request: Request, wire: bytes) -> None:
        self.write(line)

    def _recovered(self, failure: Failure, request: Request) -> Reply:
        """A plugin after this one raised: SERVFAIL, and the line CoreDNS's server writes."""
        PANICS.inc()
        exc = failure.value
        what = type(exc).__name__
        if str(exc):
            what = f"{what}: {exc}"
        line = (f'[ERROR] Recovered from panic in server: "{self._address(request)}" '
                f"{printable(what)}")
        if self.stacktrace:
            # Each line indented: an exception message holding a newline cannot make a
            # line of the traceback look like a log line of its own.
            trace = failure.getTraceback().rstrip("\n")
            line += "\n" + "\n".join("\t" + printable(part) for part in trace.split("\n"))
        self.write(line)
        return Reply(SERVFAIL)

    # -- lines ------------------------------------------------------------------------------

    def _prefix(self, level: str) -> str | None:
        # CoreDNS writes [DEBUG] lines only in debug mode: this block's `debug`, or the
        # process's (the writer's ``debug``, as the server's own [DEBUG] lines).
        if level == "debug" and not (self.debug or getattr(self.write, "debug", False)):
            return None
        return LEVELS[level]

    def _emit(self, level: str, text: str) -> None:
        prefix = self._prefix(level)
        if prefix is not None:
            self.write(prefix + text)

    def _address(self, request: Request) -> str:
        """The server as CoreDNS's ``Server.Addr``: ``dns://HOST:PORT``, HOST empty for a
        block without `bind` (one listener on every address)."""
        proto = request.proto
        label = getattr(proto, "metrics", ("",))[0]  # the listener's, set by the server
        if label:
            return str(label)
        transport = getattr(proto, "transport", None)
        if transport is None:
            transport = getattr(getattr(proto, "proto", None), "transport", None)
        try:
            local = transport.getHost()  # type: ignore[union-attr]
            host, port = local.host, local.port
        except Exception:  # noqa: BLE001 - no transport to ask
            return "dns://"
        if not self.bound:
            host = ""
        elif host.startswith("::ffff:") and "." in host:
            host = host[7:]
        if ":" in host:
            host = f"[{host}]"
        return f"dns://{host}:{port}"

    def stop(self) -> None:
        """The configuration is being replaced or the process stops (see ``Lifetime``)."""
        self.consolidator.stop()


def printable(text: str) -> str:
    """``text`` as one line of printable ASCII: anything else escaped (``\\n``, ``\\x1b``,
    ``\\xe9``)."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode("ascii")
                   for c in text)
