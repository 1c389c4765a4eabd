"""`forward FROM TO... { ... }`: the directive (see README.md and config.py)."""

from __future__ import annotations

from typing import Any

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import CorefileError, Directive
from kubernetai.plugins.forward.config import PREFIX, ForwardConfig, parse_forward, relative_to
from kubernetai.plugins.forward.handler import ForwardHandler
from kubernetai.plugins.forward.policy import POLICIES
from kubernetai.plugins.forward.proxy import Proxy
from kubernetai.plugins.forward.service import ForwardLifetime
from kubernetai.plugins.forward.tlsconfig import TLSSetupError, client_tls

__all__ = ["ForwardDirective", "build_handler"]


def _zone_bytes(zone: str) -> bytes:
    return b"" if zone == "." else zone.rstrip(".").encode("ascii", "backslashreplace")


def build_handler(config: ForwardConfig, reactor: Any = None,
                  root: str | None = None) -> ForwardHandler:
    """The step (and its upstreams) a configuration describes. TLSSetupError for a `tls`
    file that cannot be used."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor
        reactor = global_reactor
    tls_args = tuple(relative_to(a, root) for a in (config.tls or ()))
    proxies = []
    for upstream in config.upstreams:
        tls = None
        if upstream.transport == "tls":
            name = config.tls_servername or upstream.servername
            tls = client_tls(tls_args, name, upstream.host)
        proxies.append(Proxy(
            reactor, upstream.host, upstream.port, upstream.label, tls=tls,
            expire=config.expire, max_age=config.max_age, max_idle=config.max_idle_conns,
            source=config.source_address, read_timeout=config.read_timeout,
            hc_interval=config.hc_interval, hc_recursion=config.hc_recursion,
            hc_domain=config.hc_domain.encode("ascii", "replace"),
            force_tcp=config.force_tcp))
    return ForwardHandler(
        _zone_bytes(config.from_zone), proxies, POLICIES[config.policy](),
        ignored=[_zone_bytes(zone) for zone in config.ignored], max_fails=config.max_fails,
        force_tcp=config.force_tcp, prefer_udp=config.prefer_udp,
        max_concurrent=config.max_concurrent, concurrent_text=config.max_concurrent_text,
        next_rcodes=config.next_rcodes, next_on_nodata=config.next_on_nodata,
        failover_rcodes=config.failover_rcodes, failfast=config.failfast,
        max_connect_attempts=config.max_connect_attempts, reactor=reactor)


class ForwardDirective:
    name = "forward"
    once = False  # several `forward`s in a block are tried in Corefile order

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        config = parse_forward(directive)
        root = next((d.args[0] for d in builder.block.directives
                     if d.name == "root" and d.args), None)
        try:
            handler = build_handler(config, root=root)
        except TLSSetupError as error:
            tls_line = next((o for o in directive.block if o.name == "tls"), directive)
            raise CorefileError(directive.filename, tls_line.line, PREFIX + str(error),
                                tls_line.name) from None
        # `next RCODE` passes a query on only to another `forward`: the one set up just
        # before this (same place in the plugin order, Corefile order) precedes it.
        for stage in reversed(builder.stages):
            if stage.name == "forward" and isinstance(stage.handler, ForwardHandler):
                stage.handler.next_is_forward = True
                break
        builder.add_handler(handler)
        builder.add_process_service(ForwardLifetime(handler))
        where = f"{directive.filename}:{directive.line}: forward"
        if config.resolver:
            builder.warnings.append(f"{where}: 'resolver' is ignored: TO must be an IP "
                                    "address or a file here")
