"""Tests for the shipped directives bind and kubernetai, and the log line writer.

errors and log have their own: tests/test_errors_plugin.py, tests/test_log_plugin.py.
"""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest

import kubernetai.corefile as corefile
from kubernetai.core.plugin import position
from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import CorefileError
from kubernetai.pkg.logwriter import LineWriter
from kubernetai.plugins.bind.setup import BindDirective
from kubernetai.plugins.errors.setup import ErrorsDirective
from kubernetai.plugins.kubernetai.controller import Cluster
from kubernetai.plugins.kubernetai.handler import StanzaResolver
from kubernetai.plugins.kubernetai.setup import KubernetaiDirective
from kubernetai.plugins.log.setup import LogDirective

PLUGINS = {"bind": BindDirective(), "errors": ErrorsDirective(), "log": LogDirective(),
           "kubernetai": KubernetaiDirective()}


# -- helpers ------------------------------------------------------------------------------


def builder_for(body: str, keys: str = ".") -> BlockBuilder:
    """Set up every line of ``keys { body }`` with the shipped plugins, in plugin order.

    Line 2 of the Corefile is the first line of ``body``.
    """
    (block,) = corefile.parse(f"{keys} {{\n{body}\n}}\n", "Corefile")
    builder = BlockBuilder(block, tuple(dict.fromkeys(k.zone for k in block.keys)))
    plugins = sorted(((position(d.name), i, d) for i, d in enumerate(block.directives)),
                     key=lambda item: item[:2])
    for _, index, directive in plugins:
        builder.directive, builder.index = directive, index
        PLUGINS[directive.name].setup(directive, builder)
    builder.directive = None
    return builder


def handlers_of(builder: BlockBuilder, kind: type) -> list[Any]:
    """The block's pipeline handlers of one kind, in pipeline order."""
    return [s.handler for s in builder.ordered() if isinstance(s.handler, kind)]


def error_of(body: str) -> CorefileError:
    with pytest.raises(CorefileError) as info:
        builder_for(body)
    return info.value


# -- bind ---------------------------------------------------------------------------------


@pytest.mark.parametrize("body, addresses", [
    ("bind 127.0.0.1", ["127.0.0.1"]),
    ("bind 127.0.0.1 ::1", ["127.0.0.1", "::1"]),
    ("bind 0:0:0::1", ["::1"]),
    ("bind 10.0.0.1\nbind 10.0.0.2 10.0.0.1", ["10.0.0.1", "10.0.0.2"]),
    ("bind 0.0.0.0", ["0.0.0.0"]),
])
def test_bind_addresses(body: str, addresses: list[str]) -> None:
    """bind lines add up their addresses, canonical and without duplicates."""
    assert builder_for(body).bind_addresses == addresses


def test_no_bind_means_no_addresses() -> None:
    """Without bind the block has no addresses of its own (the server listens everywhere)."""
    assert builder_for("errors").bind_addresses == []


@pytest.mark.parametrize("body, line, token, message", [
    ("bind", 2, "bind", "Wrong argument count or unexpected line ending after 'bind'"),
    ("bind 127.0.0.1 localhost", 2, "localhost",
     "bind: not a valid IP address or interface name: 'localhost'"),
    ("bind 10.0.0.0/8", 2, "10.0.0.0/8",
     "bind: not a valid IP address or interface name: '10.0.0.0/8'"),
    ("bind 127.0.0.1 {\n    only 127.0.0.2\n}", 3, "only", "bind: invalid option 'only'"),
])
def test_bind_errors(body: str, line: int, token: str, message: str) -> None:
    """bind refuses what it cannot listen on, at the offending line and token."""
    error = error_of(body)
    assert (error.line, error.token, error.message) == (line, token, message)


# -- the line writer ------------------------------------------------------------------


def test_line_writer_never_blocks_and_counts_drops() -> None:
    """A full queue drops lines instead of blocking the caller, and says how many."""
    class Stuck(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.release = threading.Event()

        def write(self, text: str) -> int:
            self.release.wait(10)
            return super().write(text)
    stream = Stuck()
    writer = LineWriter(stream, capacity=2)
    for i in range(10):
        writer(f"line {i}")  # returns at once although the stream is stuck
    assert writer.dropped >= 7
    stream.release.set()
    writer.flush()
    assert "log line(s) dropped: output too slow" in stream.getvalue()


# -- kubernetai ---------------------------------------------------------------------------


def test_kubernetai_contributes_cluster_and_resolver() -> None:
    """A stanza adds its Cluster as a data source and its StanzaResolver to the chain."""
    builder = builder_for("kubernetai {\n    ttl 30\n}", keys="cluster.local")
    (entry,) = builder.sources
    cluster = entry.source
    assert isinstance(cluster, Cluster)
    (resolver,) = builder.resolvers()
    assert isinstance(resolver, StanzaResolver)
    assert resolver.cluster is cluster
    assert cluster.config.zones == ("cluster.local.",)  # the server block's zones
    assert resolver.options.ttl == 30
    assert not cluster.running
    assert [(s.name, s.position) for s in builder.stages] == [("kubernetai",
                                                                position("kubernetai"))]


def test_kubernetai_source_rebinds_its_resolver() -> None:
    """A reload hands the stanza an equal cluster that is already running: the resolver
    then answers from that one."""
    builder = builder_for("kubernetai", keys="cluster.local")
    (entry,) = builder.sources
    (resolver,) = builder.resolvers()
    running = Cluster(entry.source.config)
    entry.rebind(running)
    assert resolver.cluster is running


def test_kubernetai_ns_addresses_from_bind() -> None:
    """The stanza's NS records use the block's bind addresses."""
    builder = builder_for("kubernetai cluster.local\nbind 192.0.2.53 2001:db8::53")
    (resolver,) = builder.resolvers()
    assert resolver.options.ns_addresses == ("192.0.2.53", "2001:db8::53")


def test_kubernetai_warnings_collected() -> None:
    """A stanza zone outside the server block's zones is a warning on the builder."""
    builder = builder_for("kubernetai other.local", keys="cluster.local")
    (warning,) = builder.warnings
    assert warning.startswith("Corefile:2: kubernetai: zone other.local. outside this server "
                              "block's zones (cluster.local.)")
