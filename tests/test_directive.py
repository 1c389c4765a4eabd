"""Tests for kubernetai.core.registry: the entry-point registry and the chain order rule."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

import pytest
from twisted.names.common import ResolverBase

from kubernetai.corefile import parser as corefile
from kubernetai.corefile.parser import CorefileError, Directive
from kubernetai.core.registry import GROUP, BlockBuilder, DirectivePlugin, Registry
from kubernetai.plugins.bind.setup import BindDirective
from kubernetai.plugins.errors.setup import ErrorsDirective
from kubernetai.plugins.kubernetai.setup import KubernetaiDirective
from kubernetai.plugins.log.setup import LogDirective
from kubernetai.plugins.kubernetai.handler import StanzaResolver

SHIPPED = {"bind": BindDirective, "errors": ErrorsDirective,
           "kubernetai": KubernetaiDirective, "log": LogDirective}


# -- helpers ------------------------------------------------------------------------------


def block_of(text: str, filename: str = "Corefile") -> corefile.ServerBlock:
    (block,) = corefile.parse(text, filename)
    return block


def set_up(text: str, registry: Registry | None = None,
           filename: str = "Corefile") -> BlockBuilder:
    block = block_of(text, filename)
    zones = tuple(dict.fromkeys(key.zone for key in block.keys))
    return (registry or Registry()).set_up_block(block, BlockBuilder(block, zones))


def point(name: str, attr: str) -> EntryPoint:
    """An entry point to an object of this module, as a third-party package would declare."""
    return EntryPoint(name, f"{__name__}:{attr}", GROUP)


def shipped_points() -> list[EntryPoint]:
    return list(entry_points(group=GROUP))


class Tagged(ResolverBase):
    """A resolver that only says which plugin put it in the chain."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag


def tags(builder: BlockBuilder) -> list[str]:
    out = []
    for resolver in builder.chain():
        if isinstance(resolver, StanzaResolver):
            out.append("kubernetai " + " ".join(resolver.cluster.config.zones))
        else:
            out.append(resolver.tag)
    return out


def _record(builder: BlockBuilder, directive: Directive) -> None:
    builder.state.setdefault("setups", []).append(
        (directive.name, directive.args[0] if directive.args else None))


class EchoPlugin:
    """A third-party directive after kubernetai (its order is larger than 44.5)."""

    name = "echo"
    order = 50
    once = False

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        _record(builder, directive)
        builder.resolvers.append((self.order, len(builder.resolvers), Tagged(
            "echo " + " ".join(directive.args))))


class EarlyPlugin:
    """A third-party directive before everything we ship, allowed once per block."""

    name = "early"
    order = 1
    once = True

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        _record(builder, directive)
        builder.resolvers.append((self.order, 0, Tagged("early")))


# An instance works as well as a class: the registry instantiates only classes.
ECHO_INSTANCE = EchoPlugin()


class NotAPlugin:
    """Loads fine but has no setup(): not a directive plugin."""

    name = "nope"
    order = 1


class SpyErrors(ErrorsDirective):
    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        _record(builder, directive)
        super().setup(directive, builder)


class SpyLog(LogDirective):
    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        _record(builder, directive)
        super().setup(directive, builder)


class SpyBind(BindDirective):
    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        _record(builder, directive)
        super().setup(directive, builder)


class SpyKubernetai(KubernetaiDirective):
    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        _record(builder, directive)
        super().setup(directive, builder)


def spy_registry(*extra: EntryPoint) -> Registry:
    return Registry(points=[point("errors", "SpyErrors"), point("log", "SpyLog"),
                            point("bind", "SpyBind"), point("kubernetai", "SpyKubernetai"),
                            *extra])


# -- discovery --------------------------------------------------------------------------


def test_installed_entry_points_name_the_shipped_directives() -> None:
    """The installed distribution registers bind, errors, kubernetai and log in the group."""
    names = {p.name for p in shipped_points()}
    assert {"bind", "errors", "kubernetai", "log"} <= names


def test_registry_discovers_installed_entry_points() -> None:
    """Registry() with no points reads the installed entry points, names sorted."""
    names = Registry().names()
    assert {"bind", "errors", "kubernetai", "log"} <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_registry_loads_shipped_plugins(name: str) -> None:
    """Each shipped entry point loads to an instance of its directive class."""
    plugin = Registry().get(Directive(name, (), (), "Corefile", 1, ()))
    assert isinstance(plugin, SHIPPED[name])
    assert isinstance(plugin, DirectivePlugin)
    assert plugin.name == name


@pytest.mark.parametrize("name, order, once", [
    ("bind", 13, False),
    ("errors", 20, True),
    ("log", 21, False),
    ("kubernetai", 44.5, False),
])
def test_shipped_plugin_order_and_once(name: str, order: float, once: bool) -> None:
    """Orders follow CoreDNS's plugin.cfg (kubernetai right after kubernetes); errors is once."""
    plugin = SHIPPED[name]()
    assert (plugin.order, plugin.once) == (order, once)


def test_registry_loads_each_plugin_once() -> None:
    """The same plugin object serves every use of a directive name."""
    registry = Registry()
    first = registry.get(Directive("log", (), (), "Corefile", 1, ()))
    again = registry.get(Directive("log", ("example.org",), (), "Corefile", 7, (7,)))
    assert first is again


# -- errors -------------------------------------------------------------------------------


def test_unknown_directive_names_file_line_and_token() -> None:
    """A directive with no entry point is a CorefileError at its line, the name as token."""
    with pytest.raises(CorefileError) as info:
        set_up(".:53 {\n    errors\n    cache 30\n}\n", filename="/etc/Corefile")
    error = info.value
    assert (error.filename, error.line, error.token) == ("/etc/Corefile", 3, "cache")
    assert str(error) == "/etc/Corefile:3: unknown directive 'cache'"


def test_unknown_directive_found_before_any_setup() -> None:
    """An unknown directive fails the block before any directive was set up."""
    builder = BlockBuilder(block_of(".:53 {\n    log\n    whoami\n}\n"), (".",))
    with pytest.raises(CorefileError, match="unknown directive 'whoami'"):
        spy_registry().set_up_block(builder.block, builder)
    assert "setups" not in builder.state


@pytest.mark.parametrize("text, line", [
    (".:53 {\n    errors\n    errors\n}\n", 3),
    (".:53 {\n    errors\n    log\n    kubernetai cluster.local\n    errors {\n"
     "        stacktrace\n    }\n}\n", 5),
])
def test_errors_twice_in_a_block(text: str, line: int) -> None:
    """errors is allowed once per server block: the second one is the error, as in CoreDNS."""
    with pytest.raises(CorefileError) as info:
        set_up(text)
    assert info.value.line == line
    assert info.value.token == "errors"
    assert info.value.message == ("this plugin can only be used once per Server Block: "
                                  "'errors'")


def test_errors_once_per_block_not_per_file() -> None:
    """The once rule is per block: errors in two blocks is fine."""
    blocks = corefile.parse("a.local {\n    errors\n}\nb.local {\n    errors\n}\n")
    registry = Registry()
    for block in blocks:
        registry.set_up_block(block, BlockBuilder(block, (block.keys[0].zone,)))


@pytest.mark.parametrize("name", ["log", "bind", "kubernetai"])
def test_repeatable_directives(name: str) -> None:
    """log, bind and kubernetai may be written several times in one block."""
    args = {"log": "", "bind": " 127.0.0.1", "kubernetai": " cluster.local"}[name]
    set_up(f".:53 {{\n    {name}{args}\n    {name}{args}\n}}\n")


def test_third_party_once_rule() -> None:
    """A plugin declaring once=True is refused a second time, at the second line."""
    registry = Registry(points=[point("early", "EarlyPlugin")])
    with pytest.raises(CorefileError) as info:
        set_up(".:53 {\n    early\n    early\n}\n", registry)
    assert (info.value.line, info.value.token) == (3, "early")


def test_plugin_failing_to_load_is_located() -> None:
    """An entry point whose module cannot be imported is a CorefileError at the directive."""
    registry = Registry(points=[EntryPoint("broken", "tests_no_such_module:Plugin", GROUP)])
    with pytest.raises(CorefileError) as info:
        set_up(".:53 {\n    broken\n}\n", registry)
    assert (info.value.line, info.value.token) == (2, "broken")
    assert info.value.message.startswith("directive 'broken' failed to load: ")
    assert "tests_no_such_module" in info.value.message


def test_plugin_that_is_not_a_directive() -> None:
    """An entry point loading something without setup() is refused, naming the entry point."""
    registry = Registry(points=[point("nope", "NotAPlugin")])
    with pytest.raises(CorefileError) as info:
        set_up(".:53 {\n\n    nope\n}\n", registry)
    assert (info.value.line, info.value.token) == (3, "nope")
    assert info.value.message == (f"entry point 'nope' ({__name__}:NotAPlugin) is not a "
                                  "directive plugin")


# -- third-party plugins ------------------------------------------------------------------


def test_third_party_plugin_from_entry_point() -> None:
    """A plugin given as an EntryPoint is listed, loaded and set up like a shipped one."""
    registry = Registry(points=[*shipped_points(), point("echo", "EchoPlugin")])
    assert "echo" in registry.names()
    builder = set_up(".:53 {\n    echo hello\n}\n", registry)
    assert tags(builder) == ["echo hello"]


def test_third_party_plugin_instance() -> None:
    """An entry point may load to a plugin instance rather than a class."""
    registry = Registry(points=[point("echo", "ECHO_INSTANCE")])
    assert registry.get(Directive("echo", (), (), "Corefile", 1, ())) is ECHO_INSTANCE


def test_registry_with_only_given_points_knows_nothing_else() -> None:
    """Registry(points=...) replaces discovery: the shipped names are then unknown."""
    registry = Registry(points=[point("echo", "EchoPlugin")])
    assert registry.names() == ["echo"]
    with pytest.raises(CorefileError, match="unknown directive 'log'"):
        set_up(".:53 {\n    log\n}\n", registry)


# -- the chain order rule -----------------------------------------------------------------


@pytest.mark.parametrize("text", [
    ".:53 {\n    log\n    errors\n}\n",
    ".:53 {\n    errors\n    log\n}\n",
])
def test_errors_set_up_before_log_whatever_the_order(text: str) -> None:
    """errors (20) is set up before log (21) however the Corefile orders them."""
    builder = set_up(text, spy_registry())
    assert [name for name, _ in builder.state["setups"]] == ["errors", "log"]
    assert len(builder.error_loggers) == 1
    assert len(builder.query_loggers) == 1


def test_setup_order_of_every_shipped_directive() -> None:
    """Setup runs in plugin order (bind, errors, log, kubernetai), Corefile order within one."""
    builder = set_up(".:53 {\n"
                     "    kubernetai b.local\n"
                     "    log a.local\n"
                     "    kubernetai a.local\n"
                     "    bind 127.0.0.1\n"
                     "    errors\n"
                     "    log b.local\n"
                     "}\n", spy_registry())
    assert builder.state["setups"] == [
        ("bind", "127.0.0.1"), ("errors", None), ("log", "a.local"), ("log", "b.local"),
        ("kubernetai", "b.local"), ("kubernetai", "a.local")]


def test_bind_seen_by_stanzas_written_before_it() -> None:
    """bind is set up before kubernetai, so a stanza written above it gets its address."""
    builder = set_up(".:53 {\n    kubernetai cluster.local\n    bind 192.0.2.53\n}\n")
    (resolver,) = builder.chain()
    assert isinstance(resolver, StanzaResolver)
    assert resolver.options.ns_addresses == ("192.0.2.53",)


def test_stanzas_keep_corefile_order() -> None:
    """Several kubernetai stanzas chain in the order written, which is the fallthrough order."""
    builder = set_up(".:53 {\n"
                     "    kubernetai c.local {\n        fallthrough\n    }\n"
                     "    errors\n"
                     "    kubernetai a.local {\n        fallthrough\n    }\n"
                     "    kubernetai b.local\n"
                     "}\n")
    assert tags(builder) == ["kubernetai c.local.", "kubernetai a.local.", "kubernetai b.local."]
    assert builder.state["kubernetai"] == builder.chain()
    assert [c.config.zones for c in builder.services] == [("c.local.",), ("a.local.",),
                                                         ("b.local.",)]


@pytest.mark.parametrize("text, chain", [
    pytest.param(".:53 {\n    echo one\n    kubernetai cluster.local\n    echo two\n}\n",
                 ["kubernetai cluster.local.", "echo one", "echo two"], id="after-kubernetai"),
    pytest.param(".:53 {\n    kubernetai cluster.local\n    early\n}\n",
                 ["early", "kubernetai cluster.local."], id="before-kubernetai"),
    pytest.param(".:53 {\n    echo x\n    kubernetai b.local\n    early\n"
                 "    kubernetai a.local\n}\n",
                 ["early", "kubernetai b.local.", "kubernetai a.local.", "echo x"], id="mixed"),
])
def test_chain_follows_plugin_order(text: str, chain: list[str]) -> None:
    """The resolver chain is sorted by plugin order, not by where lines are written."""
    registry = Registry(points=[*shipped_points(), point("echo", "EchoPlugin"),
                                point("early", "EarlyPlugin")])
    assert tags(set_up(text, registry)) == chain


def test_block_builder_chain_sorts_by_order_then_position() -> None:
    """BlockBuilder.chain() sorts (order, position) pairs and drops them."""
    builder = BlockBuilder(block_of(".:53 {\n}\n"), (".",))
    r = {tag: Tagged(tag) for tag in "abcd"}
    builder.resolvers += [(44.5, 1, r["b"]), (50, 0, r["d"]), (44.5, 0, r["a"]), (13, 9, r["c"])]
    assert builder.chain() == [r["c"], r["a"], r["b"], r["d"]]


def test_stanza_warnings_reach_the_builder() -> None:
    """A stanza's warnings (here a repeated option) are collected on the builder."""
    builder = set_up(".:53 {\n    kubernetai cluster.local {\n        ttl 10\n        ttl 20\n"
                     "    }\n}\n")
    assert builder.warnings == [
        "Corefile:4: kubernetai: 'ttl' is given again (first at line 3); the last one is used"]


def test_stanza_error_propagates_located() -> None:
    """An invalid stanza option fails the block with the stanza parser's located error."""
    with pytest.raises(CorefileError) as info:
        set_up(".:53 {\n    kubernetai cluster.local {\n        ttl 4000\n    }\n}\n")
    assert info.value.line == 3
    assert "ttl must be in range [0, 3600]" in info.value.message
