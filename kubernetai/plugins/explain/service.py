"""`GET /explain`: the process service that answers it, on the other plugins' listeners.

``explain`` has no listener of its own: while it runs, ``/explain`` is one of the paths
every HTTP listener of the process serves (:func:`kubernetai.core.http.add_route`), so it
is asked on the address of ``health``, ``ready`` or ``prometheus``. The running server is
handed over through ``serving(kubernetai_service)``, at start and after each reload; a
question is routed as the DNS server routes it (port, then the longest matching zone),
and only a block that names ``explain`` or ``debug`` is explained (403 otherwise).

Query string: ``name`` (required), ``type`` (default ``A``), ``port`` (the DNS port; by
default the one whose blocks serve the name), ``format`` (``json``, the default, or
``text``: what ``kubernetai explain`` prints).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from kubernetai.core.codec import type_name
from kubernetai.core.http import add_route, remove_route
from kubernetai.pkg.dnsname import presentation_dotted
from kubernetai.plugins.explain.report import render_text
from kubernetai.plugins.explain.trace import (
    QuestionError,
    explain_block,
    parse_type,
    question_request,
)

__all__ = ["ExplainService", "ENABLING", "EXPLAIN_TIMEOUT"]

log = Logger()

#: The directives that make a server block explainable.
ENABLING = frozenset({"debug", "explain"})
#: The plugins whose HTTP listeners serve /explain too (their process services' keys).
LISTENERS = frozenset({"health", "ready", "prometheus"})
#: Seconds an explanation may take (an ExternalName chased through a slow plugin).
EXPLAIN_TIMEOUT = 10.0


class _Refusal(Exception):
    """An HTTP error answer: its status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ExplainService(service.Service):
    """Serves ``/explain`` while it runs; one per process (``key``), kept across reloads."""

    key = ("explain",)

    def __init__(self) -> None:
        self.server: Any = None          # the KubernetaiService, once serving() is called
        self.leaf = _ExplainResource(self)

    def adopt(self, newer: "ExplainService") -> None:
        """A reload kept ``explain``: nothing to take over (which blocks may be explained
        is read from the running configuration at each question)."""

    def serving(self, kubernetai_service: Any) -> None:
        self.server = kubernetai_service
        listeners = [key for key in getattr(kubernetai_service, "extras", {})
                     if isinstance(key, tuple) and key and key[0] in LISTENERS]
        if not listeners:
            log.warn("plugin/explain: no health, ready or prometheus in the Corefile: "
                     "/explain is served on none of their listeners")

    def startService(self) -> None:
        super().startService()
        add_route(b"/explain", self.leaf)
        log.info("plugin/explain: /explain served on the health, ready and prometheus "
                 "listeners")

    def stopService(self) -> Any:
        remove_route(b"/explain", self.leaf)
        return super().stopService()

    # -- answering a question -------------------------------------------------------------

    def explain(self, name: str | None, qtype_text: str | None, port_text: str | None,
                peer: tuple[str, int]) -> defer.Deferred[dict[str, Any]]:
        """The explanation of ``name``/``type``, or a failure with a :class:`_Refusal`."""
        running = self.server
        if running is None:
            raise _Refusal(503, "the DNS server is not serving yet")
        if not name:
            raise _Refusal(400, "missing the name to explain: /explain?name=NAME[&type=TYPE]")
        try:
            qtype = parse_type(qtype_text or "A")
            request = question_request(name, qtype, peer)
        except QuestionError as error:
            raise _Refusal(400, str(error)) from None
        plan, factory = self._port(running, request, port_text)
        # The name as sent: the answer cache keys on it, case and all.
        question = {"name": presentation_dotted(request.qname) if request.qname else ".",
                    "type": type_name(qtype), "class": "IN"}
        entry = factory.router.entry(request.lname, request.qtype)
        if entry is None:
            return defer.succeed(_refused(question, plan.port))
        zone, pipeline = entry
        block = _block_of(running, plan, pipeline, zone)
        where = _where(block, plan.port, zone)
        where["listen"] = str(plan)  # the server of that address: dns://127.0.0.1:53
        if block is None or not _enabled(block):
            raise _Refusal(403, f"explain is off in the server block {where['keys']} "
                                f"({where['block']}): add `explain` (or `debug`) to it to "
                                "explain its queries")
        asked = explain_block(pipeline, request, zone, factory.router)
        asked.addTimeout(EXPLAIN_TIMEOUT, running.reactor)

        def complete(found: dict[str, Any]) -> dict[str, Any]:
            return {"question": question, "server": where, **found}
        return asked.addCallback(complete)

    def _port(self, running: Any, request: Any, port_text: str | None) -> tuple[Any, Any]:
        """The listen group (a port's address, with its blocks) and its server: on the port
        asked for, else the one whose blocks serve the name (an explainable block first)."""
        ports = running.servers()
        if not ports:
            raise _Refusal(503, "the DNS server has no ports")
        if port_text:
            if not port_text.isdigit():
                raise _Refusal(400, f"not a port: {port_text!r}")
            on_port = [(plan, factory) for plan, factory in ports
                       if plan.port == int(port_text)]
            if not on_port:
                served = ", ".join(sorted({str(plan.port) for plan, _ in ports}))
                raise _Refusal(404, f"no server block listens on port {port_text} "
                                    f"(ports: {served})")
            ports = on_port  # several listen addresses (bind): routed among them below
        routed = []
        for plan, factory in ports:
            entry = factory.router.entry(request.lname, request.qtype)
            if entry is not None:
                block = _block_of(running, plan, entry[1], entry[0])
                if block is not None and _enabled(block):
                    return plan, factory
                routed.append((plan, factory))
        return (routed or ports)[0]


def _block_of(running: Any, plan: Any, pipeline: Any, zone: bytes) -> Any:
    """The block plan whose pipeline the router chose (the same object the server runs)."""
    for block in plan.blocks:
        if block.pipeline(running.cache) is pipeline:
            return block
    return None


def _enabled(block: Any) -> bool:
    return any(d.name in ENABLING for d in block.builder.block.directives)


def _where(block: Any, port: int, zone: bytes) -> dict[str, Any]:
    zone_text = presentation_dotted(zone) if zone else "."
    if block is None:
        return {"port": port, "zone": zone_text, "keys": "?", "block": "?"}
    written = block.builder.block
    keys = " ".join(f"{key.zone}:{key.port}" for key in written.keys)
    return {"port": port, "zone": zone_text, "keys": keys,
            "block": f"{written.filename}:{written.line}"}


def _refused(question: dict[str, Any], port: int) -> dict[str, Any]:
    return {"question": question, "server": {"port": port, "zone": None, "keys": None,
                                             "block": None},
            "steps": [], "answered_by": None, "rcode": "REFUSED", "authoritative": False,
            "answer": [], "authority": [], "additional": [], "error": None, "chases": [],
            "why": f"no server block on port {port} serves this name",
            "cache": {"in_cache": False, "state": "no-block", "hit": False}}


class _ExplainResource(resource.Resource):
    """The ``/explain`` path: JSON by default, ``format=text`` for a person."""

    isLeaf = True

    def __init__(self, owner: ExplainService) -> None:
        super().__init__()
        self.owner = owner

    def render_GET(self, request: Any) -> Any:  # noqa: N802 - twisted.web's name
        def arg(key: str) -> str | None:
            values = request.args.get(key.encode())
            return values[0].decode("utf-8", "replace") if values else None

        text = arg("format") == "text"
        client = request.getClientAddress()
        peer = (getattr(client, "host", "127.0.0.1"), getattr(client, "port", 0))
        try:
            asked = self.owner.explain(arg("name"), arg("type"), arg("port"), peer)
        except _Refusal as refusal:
            return _body(request, refusal.status, {"error": refusal.message}, text)
        except Exception as error:  # noqa: BLE001 - a bug: say so, keep the listener
            log.failure("plugin/explain: cannot explain", Failure())
            return _body(request, 500, {"error": f"cannot explain: {error!r}"}, text)
        finished = request.notifyFinish()
        gone: list[bool] = []
        finished.addErrback(lambda _: gone.append(True))

        def answer(found: dict[str, Any]) -> None:
            if not gone:
                request.write(_body(request, 200, found, text))
                request.finish()

        def failed(failure: Failure) -> None:
            if failure.check(defer.TimeoutError, defer.CancelledError):
                status, message = 504, f"no answer within {EXPLAIN_TIMEOUT:g}s"
            else:
                log.failure("plugin/explain: cannot explain", failure)
                status, message = 500, f"cannot explain: {failure.getErrorMessage()}"
            if not gone:
                request.write(_body(request, status, {"error": message}, text))
                request.finish()

        asked.addCallbacks(answer, failed)
        return server.NOT_DONE_YET


def _body(request: Any, status: int, content: dict[str, Any], text: bool) -> bytes:
    request.setResponseCode(status)
    if text:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        body = content["error"] + "\n" if "error" in content and len(content) == 1 \
            else render_text(content)
        return body.encode("utf-8")
    request.setHeader(b"content-type", b"application/json")
    return (json.dumps(content, indent=1) + "\n").encode("utf-8")
