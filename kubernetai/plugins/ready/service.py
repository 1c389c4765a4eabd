"""The `/ready` endpoint: an HTTP listener the process keeps across reloads.

A Deployment's readiness probe asks it whether this replica should get traffic. It asks
each plugin that can be not ready, in every server block that has `ready` on this address
(each `kubernetai` stanza on its own), and answers ``200 OK``, or ``503`` with the names of
the plugins that are not, sorted and comma-joined, as CoreDNS's ready plugin does.

The plugins are read through the blocks' ``readiness`` lists themselves, not copies:
`ready` is set up before `kubernetai` in a block, so the stanzas join the list after this
service was made. With ``monitor until-ready`` (the default) a plugin that has once said
it is ready is not asked again until the next configuration; with ``continuously`` it is
asked on every request.

From the moment the process is asked to stop (SIGTERM, while health's lameduck keeps DNS
answering) it answers ``503 Shutting down``, so the replica leaves the Service's endpoints
before it stops answering.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web import resource

from kubernetai.core.http import listen_http, split_address
from kubernetai.pkg.gosyntax import quote

log = Logger()

Readiness = list[tuple[str, Callable[[], bool]]]


class ReadyService(service.Service):
    """One `/ready` listener. ``key`` identifies it across reloads (its address)."""

    def __init__(self, address: str, continuously: bool, readiness: Readiness,
                 reactor: Any = None) -> None:
        self.address = address
        self.host, self.port = split_address(address)  # ValueError for a bad address
        self.continuously = continuously
        # The readiness lists of the blocks this listener reports on (references).
        self.lists: list[Readiness] = [readiness]
        self.reported: set[str] = set()  # ready once, not asked again (until-ready)
        self.shutting_down = False
        self.reactor = reactor
        self.listening: list[IListeningPort] = []

    @property
    def key(self) -> tuple[str, str]:
        return ("ready", self.address)

    def absorb(self, other: ReadyService) -> None:
        """Another block has `ready` on this address: report on its plugins too. One block
        asking for ``monitor continuously`` makes the listener monitor continuously."""
        self.lists.extend(other.lists)
        self.continuously = self.continuously or other.continuously

    def adopt(self, newer: ReadyService) -> None:
        """A reload kept this listener: report on the new configuration's plugins, each
        asked again until it is ready (CoreDNS starts its list afresh on a reload)."""
        self.lists = newer.lists
        self.continuously = newer.continuously
        self.reported = set()

    def stopping(self) -> None:
        """The process was asked to stop (the supervisor calls this at SIGTERM, before
        health's lameduck): answer 503 from now on."""
        self.shutting_down = True

    def not_ready(self) -> list[str]:
        """The names of the plugins that are not ready, sorted; [] when all are.

        A name given by several blocks (a stanza in a snippet imported twice) is ready when
        each of them is.
        """
        state: dict[str, bool] = {}
        for readiness in self.lists:
            for name, is_ready in readiness:
                if name in self.reported or state.get(name) is False:
                    continue
                state[name] = _ask(name, is_ready)
        if not self.continuously:
            self.reported.update(name for name, ok in state.items() if ok)
        return sorted(name for name, ok in state.items() if not ok)

    def startService(self) -> None:
        if self.reactor is None:
            from twisted.internet import reactor
            self.reactor = reactor
        self.listening = [listen_http(self.reactor, self.address, {b"/ready": _Ready(self)})]
        super().startService()
        bound = self.listening[0].getHost()
        log.info("plugin/ready: serving /ready on {host}:{port}", host=bound.host,
                 port=bound.port)

    def stopService(self) -> defer.Deferred[Any]:
        super().stopService()
        ports, self.listening = self.listening, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])


def _ask(name: str, is_ready: Callable[[], bool]) -> bool:
    """A plugin's answer; one that raises is not ready (and the error is logged)."""
    try:
        return bool(is_ready())
    except Exception:  # noqa: BLE001 - a broken plugin must not break the probe
        log.failure("plugin/ready: asking {name} whether it is ready failed", name=name)
        return False


class _Ready(resource.Resource):
    """GET (any method, as Go's mux) /ready."""

    isLeaf = True

    def __init__(self, ready: ReadyService) -> None:
        super().__init__()
        self.ready = ready

    def render(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        if self.ready.shutting_down:
            request.setResponseCode(503)
            return b"Shutting down"
        names = self.ready.not_ready()
        if not names:
            return b"OK"
        listed = ",".join(names)
        log.info("plugin/ready: Plugins not ready: {names}", names=quote(listed))
        request.setResponseCode(503)
        return listed.encode("utf-8", "backslashreplace")
