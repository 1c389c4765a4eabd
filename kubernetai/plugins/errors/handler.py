"""The `errors` step: writes each plugin error of a reply in CoreDNS's format.

CoreDNS prints `[ERROR] plugin/errors: <rcode> <qname> <qtype>: <error>` on standard output;
operators grep for exactly that, so the format is kept. It sits near the front of the
pipeline, so it sees the errors of every plugin after it; the line is written before the
reply goes out.
"""

from __future__ import annotations

from typing import Callable

from kubernetai.core.codec import type_name
from kubernetai.core.plugin import Next, Result
from kubernetai.core.request import Reply, Request


class ErrorsHandler:
    name = "errors"

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write

    def serve(self, request: Request, next: Next) -> Result:
        reply = next(request)
        if isinstance(reply, Reply):
            return self._report(reply, request)
        return reply.addCallback(self._report, request)

    def _report(self, reply: Reply, request: Request) -> Reply:
        if reply.error and not reply.reported:
            self.write(f"[ERROR] plugin/errors: {reply.rcode} {request.fqdn()} "
                       f"{type_name(request.qtype)}: {reply.error}")
            reply.reported = True
        return reply
