"""Tests for kubernetai.core.registry: the entry-point registry and the pipeline order rule."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

import pytest
from twisted.names.common import ResolverBase

import kubernetai.corefile as corefile
from kubernetai.core.pipeline import Stage
from kubernetai.core.plugin import ORDER, position
from kubernetai.core.registry import GROUP, BlockBuilder, DirectivePlugin, Registry
from kubernetai.corefile import CorefileError, Directive
from kubernetai.plugins.bind.setup import BindDirective
from kubernetai.plugins.errors.handler import ErrorsHandler
from kubernetai.plugins.errors.setup import ErrorsDirective
from kubernetai.plugins.kubernetai.handler import StanzaResolver
from kubernetai.plugins.kubernetai.setup import KubernetaiDirective
from kubernetai.plugins.log.handler import LogHandler
from kubernetai.plugins.log.setup import LogDirective
from kubernetai.plugins.whoami.setup import WhoamiDirective

SHIPPED = {"bind": BindDirective, "errors": ErrorsDirective,
           "kubernetai": KubernetaiDirective, "log": LogDirective, "whoami": WhoamiDirective}

# The directives set up so far, as (name, first argument); see _record.
SETUPS: list[tuple[str, str | None]] = []


@pytest.fixture(autouse=True)
def _fresh_setups() -> None:
    SETUPS.clear()


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
    for resolver in builder.resolvers():
        if isinstance(resolver, StanzaResolver):
            out.append("kubernetai " + " ".join(resolver.cluster.config.zones))
        else:
            out.append(resolver.tag)
    return out


def _record(builder: BlockBuilder, directive: Directive) -> None:
    SETUPS.append((directive.name, directive.args[0] if directive.args else None))


class EchoPlugin:
    """A third-party directive (not in ORDER) placed right after kubernetai."""

    name = "echo"
    after = "kubernetai"
    once = False

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        _record(builder, directive)
        builder.add_resolver(Tagged("echo " + " ".join(directive.args)))


class EarlyPlugin:
    """A third-party directive before everything we ship, allowed once per block."""

    name = "early"
    after = "root"
    once = True

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        _record(builder, directive)
        builder.add_resolver(Tagged("early"))


class NowherePlugin:
    """A third-party directive CoreDNS does not know that does not say where it goes."""

    name = "nowhere"
    once = False

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        _record(builder, directive)


class AfterUnknownPlugin(NowherePlugin):
    """A third-party directive following a plugin that is not in ORDER either."""

    name = "lost"
    after = "no-such-plugin"


# An instance works as well as a class: the registry instantiates only classes.
ECHO_INSTANCE = EchoPlugin()


class NotAPlugin:
    """Loads fine but has no setup(): not a directive plugin."""

    name = "nope"
    once = False


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
    """The installed distribution registers bind, errors, kubernetai, log and whoami."""
    names = {p.name for p in shipped_points()}
    assert set(SHIPPED) <= names


def test_registry_discovers_installed_entry_points() -> None:
    """Registry() with no points reads the installed entry points, names sorted."""
    names = Registry().names()
    assert set(SHIPPED) <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_registry_loads_shipped_plugins(name: str) -> None:
    """Each shipped entry point loads to an instance of its directive class."""
    plugin = Registry().get(Directive(name, (), (), "Corefile", 1, ()))
    assert isinstance(plugin, SHIPPED[name])
    assert isinstance(plugin, DirectivePlugin)
    assert plugin.name == name


@pytest.mark.parametrize("name, once", [
    ("bind", False),
    ("errors", True),
    ("log", False),
    ("kubernetai", False),
    ("whoami", False),
])
def test_shipped_plugin_order_and_once(name: str, once: bool) -> None:
    """Shipped directives are placed by their name in ORDER (no `after`); errors is once."""
    plugin = SHIPPED[name]()
    assert plugin.name == name
    assert getattr(plugin, "after", None) is None
    assert position(name) == ORDER.index(name)
    assert plugin.once is once


def test_order_is_coredns_plugin_cfg_with_kubernetai_after_kubernetes() -> None:
    """ORDER is CoreDNS's plugin.cfg: bind, errors, log, cache, ..., kubernetes, then
    kubernetai (as the Go kubernetai is built), ..., forward, whoami."""
    assert len(ORDER) == len(set(ORDER))
    assert ORDER.index("kubernetai") == ORDER.index("kubernetes") + 1
    shipped = sorted(SHIPPED, key=position)
    assert shipped == ["bind", "errors", "log", "kubernetai", "whoami"]
    at = ORDER.index
    assert at("errors") < at("log") < at("cache") < at("kubernetai") < at("forward") \
        < at("whoami")


def test_position_of_a_directive_with_after() -> None:
    """A name not in ORDER goes just after the plugin its `after` names, before the next."""
    where = position("echo", after="kubernetai")
    assert position("kubernetai") < where < position(ORDER[ORDER.index("kubernetai") + 1])
    assert position("log", after="whoami") == position("log")  # a known name ignores it
    with pytest.raises(KeyError):
        position("echo")


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
        set_up(".:53 {\n    errors\n    dnssec\n}\n", filename="/etc/Corefile")
    error = info.value
    assert (error.filename, error.line, error.token) == ("/etc/Corefile", 3, "dnssec")
    assert str(error) == "/etc/Corefile:3: unknown directive 'dnssec'"


def test_unknown_directive_found_before_any_setup() -> None:
    """An unknown directive fails the block before any directive was set up."""
    builder = BlockBuilder(block_of(".:53 {\n    log\n    hosts\n}\n"), (".",))
    with pytest.raises(CorefileError, match="unknown directive 'hosts'"):
        spy_registry().set_up_block(builder.block, builder)
    assert SETUPS == []
    assert builder.stages == []


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
    (stage,) = builder.stages
    assert (stage.name, stage.position) == ("echo", position("echo", after="kubernetai"))


@pytest.mark.parametrize("attr, name", [("NowherePlugin", "nowhere"),
                                        ("AfterUnknownPlugin", "lost")])
def test_third_party_without_a_place_is_located(attr: str, name: str) -> None:
    """A directive not in ORDER whose `after` is missing or names no known plugin is a
    CorefileError at its line, before any directive is set up."""
    registry = Registry(points=[point("log", "SpyLog"), point(name, attr)])
    with pytest.raises(CorefileError) as info:
        set_up(f".:53 {{\n    log\n\n    {name}\n}}\n", registry)
    assert (info.value.line, info.value.token) == (4, name)
    assert info.value.message == (f"directive '{name}' does not say where it goes in the "
                                  "plugin order (an 'after' naming a known plugin)")
    assert SETUPS == []


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


# -- the pipeline order rule --------------------------------------------------------------


@pytest.mark.parametrize("text", [
    ".:53 {\n    log\n    errors\n}\n",
    ".:53 {\n    errors\n    log\n}\n",
])
def test_errors_set_up_before_log_whatever_the_order(text: str) -> None:
    """errors is set up, and acts, before log however the Corefile orders them."""
    builder = set_up(text, spy_registry())
    assert [name for name, _ in SETUPS] == ["errors", "log"]
    ordered = builder.ordered()
    assert [s.name for s in ordered] == ["errors", "log"]
    assert [type(s.handler) for s in ordered] == [ErrorsHandler, LogHandler]
    assert builder.pipeline().handlers == tuple(s.handler for s in ordered)


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
    assert SETUPS == [
        ("bind", "127.0.0.1"), ("errors", None), ("log", "a.local"), ("log", "b.local"),
        ("kubernetai", "b.local"), ("kubernetai", "a.local")]
    # bind contributes addresses, not a step; the rest act in the order they were set up.
    # Two `log` lines are one step with two rules, as in CoreDNS.
    assert [s.name for s in builder.ordered()] == ["errors", "log", "kubernetai",
                                                   "kubernetai"]


def test_bind_seen_by_stanzas_written_before_it() -> None:
    """bind is set up before kubernetai, so a stanza written above it gets its address."""
    builder = set_up(".:53 {\n    kubernetai cluster.local\n    bind 192.0.2.53\n}\n")
    (resolver,) = builder.resolvers()
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
    clusters = [entry.source for entry in builder.sources]
    assert clusters == [r.cluster for r in builder.resolvers()]
    assert [c.config.zones for c in clusters] == [("c.local.",), ("a.local.",), ("b.local.",)]
    # The block's one chain asks them in that order.
    assert builder.pipeline().chain.resolvers == builder.resolvers()


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
    builder = set_up(text, registry)
    assert tags(builder) == chain
    assert builder.pipeline().chain.resolvers == builder.resolvers()


def test_block_builder_resolvers_sort_by_position_then_corefile_index() -> None:
    """BlockBuilder.resolvers() sorts the stages by (position, index) and keeps resolvers."""
    builder = BlockBuilder(block_of(".:53 {\n}\n"), (".",))
    r = {tag: Tagged(tag) for tag in "abcd"}
    kubernetai, echo, bind = (position("kubernetai"), position("echo", "kubernetai"),
                              position("bind"))
    builder.stages += [Stage("kubernetai", kubernetai, 1, resolver=r["b"]),
                       Stage("echo", echo, 0, resolver=r["d"]),
                       Stage("kubernetai", kubernetai, 0, resolver=r["a"]),
                       Stage("log", position("log"), 5, handler=LogHandler((".",), "", frozenset(),
                                                                       print)),
                       Stage("bind", bind, 9, resolver=r["c"])]
    assert builder.resolvers() == [r["c"], r["a"], r["b"], r["d"]]
    assert [s.name for s in builder.ordered()] == ["bind", "log", "kubernetai", "kubernetai",
                                                   "echo"]


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
