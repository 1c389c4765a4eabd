#!/usr/bin/env python3
"""A tiny Twisted web service that resolves cluster names with kubernetai embedded.

    python examples/embed.py --endpoint http://127.0.0.1:6443 [--zone cluster.local] [--port 8080]
    curl 'http://127.0.0.1:8080/resolve?name=web.shared.svc.cluster.local'

The KubernetaiResolver is chained in front of the system's resolver (names outside the
cluster zone fall through to it), and it is a service of the application: its informers
start and stop with the web server.
"""

from __future__ import annotations

import argparse
import json
import sys

from twisted.application import internet, service
from twisted.internet import defer, reactor
from twisted.names import client, dns, resolve
from twisted.web import resource, server

from kubernetai import KubernetaiResolver, StanzaOptions


class Resolve(resource.Resource):
    isLeaf = True

    def __init__(self, resolver: resolve.ResolverChain) -> None:
        super().__init__()
        self.resolver = resolver

    def render_GET(self, request: server.Request) -> object:
        name = request.args.get(b"name", [b""])[0]

        def found(result: tuple) -> None:
            answers = [
                {"name": rr.name.name.decode(), "type": dns.QUERY_TYPES.get(rr.type, rr.type),
                 "ttl": rr.ttl, "data": rr.payload.dottedQuad() if rr.type == dns.A
                 else str(rr.payload.name) if rr.type == dns.CNAME else repr(rr.payload)}
                for rr in result[0]]
            self._send(request, 200, {"name": name.decode(), "answers": answers})

        def failed(failure: object) -> None:
            self._send(request, 404, {"name": name.decode(),
                                      "error": failure.getErrorMessage()})  # type: ignore[attr-defined]
        self.resolver.lookupAddress(name).addCallbacks(found, failed)
        return server.NOT_DONE_YET

    @staticmethod
    def _send(request: server.Request, code: int, body: dict) -> None:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        request.write(json.dumps(body).encode())
        request.finish()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", help="the Kubernetes API server URL")
    parser.add_argument("--kubeconfig", help="or a kubeconfig file")
    parser.add_argument("--zone", default="cluster.local")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (0: any free one)")
    args = parser.parse_args()

    kubernetai = KubernetaiResolver.from_stanzas(StanzaOptions(
        zones=[args.zone], endpoint=args.endpoint, kubeconfig=args.kubeconfig))
    chain = resolve.ResolverChain([kubernetai, client.Resolver(resolv="/etc/resolv.conf")])

    application = service.Application("kubernetai-embed")
    kubernetai.setServiceParent(application)
    web = internet.TCPServer(args.port, server.Site(Resolve(chain)), interface="127.0.0.1")
    web.setServiceParent(application)

    top = service.IService(application)

    @defer.inlineCallbacks
    def start() -> object:
        top.startService()
        synced = yield kubernetai.wait_synced()
        port = web._port.getHost().port  # the port actually bound
        print(f"http://127.0.0.1:{port}/resolve?name=... (clusters synced: {synced})", flush=True)

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
