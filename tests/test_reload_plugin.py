"""reload: the Corefile checked every INTERVAL ± JITTER/2 and reloaded when its digest
changes; health and ready listeners through reloads; coredns_reload_failed_total.

Through twistd (edits on disk, the log lines, listeners moving and surviving) and with a
Supervisor in this process (the counter, which directive governs)."""

from __future__ import annotations

import os
import random
import re
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import dns.exception
import pytest
from conftest import free_dns_port, wait_for
from test_e2e import answers, ask
from test_ready import Twistd, clusters, get, try_get, twistd  # noqa: F401 - fixtures
from twisted.internet import defer

from kubernetai.app.supervisor import RELOAD_FAILED, Supervisor, config_digest
from kubernetai.core.metrics import PROCESS
from kubernetai.core.registry import BlockBuilder, Registry
from kubernetai.corefile import CorefileError, parse, parse_file
from kubernetai.pkg.reactor_thread import in_reactor
from kubernetai.plugins.reload.service import VERSION_INFO, ReloadService
from kubernetai.plugins.reload.setup import period
from kubernetai.sandbox.server import Sandbox

SHA = re.compile(r"plugin/reload: Running configuration SHA512 = ([0-9a-f]{128})")


def corefile(clusters: dict[str, Sandbox], dns: int, *, ttl: int = 5, ready: int = 0,
             health: int = 0, reload: str = "reload 2s 1s", extra: str = "") -> str:
    lines = [f"a.local:{dns} b.local:{dns} {{", "    bind 127.0.0.1"]
    if reload:
        lines.append(f"    {reload}")
    if ready:
        lines.append(f"    ready 127.0.0.1:{ready}")
    if health:
        lines.append(f"    health 127.0.0.1:{health}")
    lines += [extra,
              f"    kubernetai a.local {{\n        endpoint {clusters['a'].url}\n    }}",
              f"    kubernetai b.local {{\n        endpoint {clusters['b'].url}\n"
              f"        ttl {ttl}\n    }}", "}", ""]
    return "\n".join(lines)


def write(path: Path, text: str) -> None:
    """Replace the file in one step, as a ConfigMap update does (a check never reads it
    half-written)."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text)
    os.replace(temporary, path)


def b_ttl(port: int) -> int | None:
    """The TTL b answers with (None before the server listens)."""
    try:
        response = ask(port, "svc.ns.svc.b.local")
    except dns.exception.Timeout:
        return None
    if answers(response) != ["10.2.0.1"]:
        return None
    return response.answer[0].ttl


def shas(server: Twistd) -> list[str]:
    return SHA.findall(server.output())


# -- through twistd ------------------------------------------------------------------------


def test_an_edit_on_disk_is_served_and_a_broken_one_is_not(clusters, twistd):  # noqa: F811
    """`reload 2s 1s`: an edited Corefile is served within a few seconds, with a new SHA512
    line; a broken edit (a bad option) is logged and the old configuration keeps answering;
    one that does not parse is logged as such; mending it reloads."""
    dns, ready, health = free_dns_port(), free_dns_port(), free_dns_port()
    server = twistd(corefile(clusters, dns, ready=ready, health=health))
    server.wait(lambda: try_get(ready) == (200, "OK"), what="ready")
    first = server.wait(lambda: shas(server), what="the first SHA512 line")[0]
    assert first == config_digest(parse_file(server.corefile))
    server.wait(lambda: b_ttl(dns) == 5, what="answers")

    write(server.corefile, corefile(clusters, dns, ttl=42, ready=ready, health=health))
    server.wait(lambda: b_ttl(dns) == 42, what="the edit to be served", timeout=20)
    server.wait(lambda: len(shas(server)) == 2, what="a second SHA512 line")
    assert shas(server)[1] != first

    write(server.corefile, corefile(clusters, dns, ttl=99999, ready=ready, health=health))
    server.wait(lambda: "plugin/reload: Corefile changed but reload failed:" in server.output(),
                what="the failed reload", timeout=20)
    assert "ttl must be in range" in server.output()
    assert b_ttl(dns) == 42
    assert get(ready) == (200, "OK") and get(health, "/health") == (200, "OK")

    write(server.corefile, corefile(clusters, dns, ttl=7, ready=ready, health=health)
                               + "}\n")
    server.wait(lambda: "plugin/reload: Corefile parse failed:" in server.output(),
                what="the parse failure", timeout=20)
    assert b_ttl(dns) == 42

    write(server.corefile, corefile(clusters, dns, ttl=7, ready=ready, health=health))
    server.wait(lambda: b_ttl(dns) == 7, what="the mended file to be served", timeout=20)
    assert len(shas(server)) == 3
    assert server.output().count("Corefile changed but reload failed") == 1  # tried once


def test_an_import_edit_is_seen(clusters, twistd, tmp_path):  # noqa: F811
    """The digest covers imported files: editing only the import reloads."""
    dns = free_dns_port()
    options = tmp_path / "b-options"
    write(options, "ttl 5\n")
    text = corefile(clusters, dns).replace("        ttl 5\n", "        import b-options\n")
    server = twistd(text)
    server.wait(lambda: b_ttl(dns) == 5, what="answers")
    write(options, "ttl 33\n")
    server.wait(lambda: b_ttl(dns) == 33, what="the import edit to be served", timeout=20)


def test_listeners_move_and_survive(clusters, twistd):  # noqa: F811
    """A reload keeps health and ready listening; one that moves them opens the new address
    and closes the old; one that cannot bind the new address fails and leaves both where
    they were (CoreDNS would have closed them first)."""
    dns, ready, health = free_dns_port(), free_dns_port(), free_dns_port()
    server = twistd(corefile(clusters, dns, ready=ready, health=health))
    server.wait(lambda: try_get(ready) == (200, "OK"), what="ready")

    write(server.corefile, corefile(clusters, dns, ttl=11, ready=ready, health=health))
    server.wait(lambda: b_ttl(dns) == 11, what="a reload", timeout=20)
    assert get(ready) == (200, "OK") and get(health, "/health") == (200, "OK")

    ready2, health2 = free_dns_port(), free_dns_port()
    write(server.corefile, corefile(clusters, dns, ttl=12, ready=ready2, health=health2))
    server.wait(lambda: b_ttl(dns) == 12, what="the reload that moves them", timeout=20)
    assert get(ready2) == (200, "OK") and get(health2, "/health") == (200, "OK")
    assert try_get(ready) is None and try_get(health, "/health") is None

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        write(server.corefile, corefile(clusters, dns, ttl=13, ready=busy, health=health))
        server.wait(lambda: "Corefile changed but reload failed" in server.output(),
                    what="the failed reload", timeout=20)
        assert get(ready2) == (200, "OK") and get(health2, "/health") == (200, "OK")
        assert try_get(health, "/health") is None  # the new health was not left open
        assert b_ttl(dns) == 12


# -- in-process: the counter, which `reload` line governs ----------------------------------


@pytest.fixture
def supervised(clusters, tmp_path) -> Iterator[tuple[Supervisor, Path, int]]:  # noqa: F811
    path = tmp_path / "Corefile"
    port = free_dns_port()
    write(path, corefile(clusters, port))
    supervisor = in_reactor(Supervisor, str(path), read_timeout=5.0, status_interval=3600,
                            grace=0.1)
    in_reactor(supervisor.startService)

    def listening() -> defer.Deferred:
        done: defer.Deferred = defer.Deferred()
        supervisor.server.listening.addBoth(lambda result: (done.callback(result), result)[1])
        return done
    in_reactor(listening)
    try:
        yield supervisor, path, port
    finally:
        in_reactor(supervisor.stopService)


def checker(supervisor: Supervisor) -> ReloadService | None:
    return supervisor.server.extras.get(("reload",))


def failed() -> float:
    return RELOAD_FAILED.values.get((), 0)


def test_counts_failures_once_parsed_not_parse_errors(supervised, clusters):  # noqa: F811
    """coredns_reload_failed_total: +1 for a Corefile that parses but cannot be set up (once,
    not at every check), +0 for one that does not parse; SIGUSR1's reloads count the same."""
    supervisor, path, port = supervised
    running = supervisor.digest
    assert VERSION_INFO.values == {("sha512", running): 1}
    assert PROCESS.counter("coredns_reload_failed_total", "") is RELOAD_FAILED
    before = failed()

    write(path, corefile(clusters, port, ttl=99999))
    wait_for(lambda: failed() == before + 1, timeout=20, what="a counted failure")
    wait_for(lambda: in_reactor(supervisor.reload_possible), what="the reload to end")
    assert supervisor.tried_digest != running and supervisor.digest == running
    time.sleep(3)                             # checks of the same broken file:
    assert failed() == before + 1             # not tried again

    write(path, corefile(clusters, port) + "}\n")            # does not parse
    time.sleep(3)
    assert failed() == before + 1

    assert in_reactor(supervisor.reload) is False                # SIGUSR1: parse error
    assert failed() == before + 1
    write(path, corefile(clusters, port, ttl=99999))
    assert in_reactor(supervisor.reload) is False                # SIGUSR1: bad option
    assert failed() == before + 2
    assert supervisor.reload_failures == 2

    write(path, corefile(clusters, port, ttl=9))
    wait_for(lambda: supervisor.digest != running, timeout=20, what="the good edit")
    assert VERSION_INFO.values == {("sha512", supervisor.digest): 1}
    wait_for(lambda: b_ttl(port) == 9, what="answers of the new configuration")


def test_the_running_configuration_governs(supervised, clusters):  # noqa: F811
    """A changed interval takes effect; removing `reload` stops the checks (the next edit is
    not loaded) and clears the version metric; a failed reload keeps the old check."""
    supervisor, path, port = supervised
    first = checker(supervisor)
    assert first is not None and 1.5 <= first.period < 2.5

    write(path, corefile(clusters, port, ttl=6, reload="reload 4s"))
    wait_for(lambda: b_ttl(port) == 6, timeout=20, what="the new configuration")
    kept = checker(supervisor)
    assert kept is first and 3.0 <= kept.period < 5.0  # jitter capped at 2s: ±1s

    write(path, corefile(clusters, port, ttl=7, reload="reload 4s")
                    .replace("reload 4s", "reload 4s garbage 1s"))
    in_reactor(lambda: kept.check())
    wait_for(lambda: in_reactor(supervisor.reload_possible) and supervisor.tried_digest
             == config_digest(parse_file(path)), timeout=20, what="the failed reload")
    assert checker(supervisor) is kept and 3.0 <= kept.period < 5.0

    write(path, corefile(clusters, port, ttl=8, reload=""))
    in_reactor(lambda: kept.check())
    wait_for(lambda: b_ttl(port) == 8, timeout=20, what="the configuration without reload")
    assert checker(supervisor) is None and not kept.running
    assert VERSION_INFO.values == {}
    running = supervisor.digest
    write(path, corefile(clusters, port, ttl=9, reload=""))
    for _ in range(12):  # three periods of the check that was removed
        time.sleep(0.5)
        assert b_ttl(port) == 8
    assert supervisor.digest == running


def test_stopping_refuses_reloads(supervised, clusters):  # noqa: F811
    supervisor, path, port = supervised
    assert in_reactor(supervisor.reload_possible)
    supervisor._stopping = True
    try:
        assert not in_reactor(supervisor.reload_possible)
        assert in_reactor(supervisor.reload) is False
    finally:
        supervisor._stopping = False


# -- the digest and the directive ----------------------------------------------------------


def test_digest_follows_what_the_corefile_says(tmp_path: Path) -> None:
    """Changes with a directive, an import's content, a line moved; not with a comment
    edited within a line (as CoreDNS's digest of its parsed Corefile)."""
    (tmp_path / "extra").write_text("log\n")
    path = tmp_path / "Corefile"

    def digest(text: str) -> str:
        write(path, text)
        return config_digest(parse_file(path))
    base = digest("example.org {\n    whoami # answers\n    import extra\n}\n")
    assert digest("example.org {\n    whoami # says who\n    import extra\n}\n") == base
    assert digest("example.org {\n    whoami\n    import extra\n    errors\n}\n") != base
    assert digest("\nexample.org {\n    whoami\n    import extra\n}\n") != base
    (tmp_path / "extra").write_text("errors\n")
    assert digest("example.org {\n    whoami # answers\n    import extra\n}\n") != base


def _set_up(text: str) -> BlockBuilder:
    (block,) = parse(text, "Corefile")
    return Registry().set_up_block(block, BlockBuilder(block, ("example.org.",)))


@pytest.mark.parametrize("args, interval, jitter", [
    ("", 30.0, 15.0), ("10s", 10.0, 5.0), ("10s 2s", 10.0, 2.0), ("2s 0s", 2.0, 0.0),
    ("1m 1m", 60.0, 30.0), ("2s 1s", 2.0, 1.0),
])
def test_directive_defaults_and_jitter_cap(args: str, interval: float, jitter: float) -> None:
    (check,) = _set_up(f"example.org {{\n    reload {args}\n}}\n").process_services
    assert (check.interval, check.jitter) == (interval, jitter)
    assert interval - jitter / 2 <= check.period < interval + jitter / 2 or \
        check.period == interval


def test_jitter_is_drawn_in_half_its_width_each_way() -> None:
    rng = random.Random(7)
    drawn = [period(30_000_000_000, 15_000_000_000, rng) for _ in range(2000)]
    assert min(drawn) >= 22.5 and max(drawn) < 37.5
    assert min(drawn) < 23 and max(drawn) > 37  # the whole width is used
    assert period(30_000_000_000, 0) == 30.0


@pytest.mark.parametrize("args, token, message", [
    ("1s", "1s", "reload: interval value must be greater or equal to 2s"),
    ("2s 500ms", "500ms", "reload: jitter value must be 0 or greater or equal to 1s"),
    ("5", "5", 'reload: time: missing unit in duration "5"'),
    ("10s x", "x", 'reload: time: invalid duration "x"'),
    ("10s 2s 3s", "3s", "Wrong argument count or unexpected line ending after '3s'"),
])
def test_directive_errors(args: str, token: str, message: str) -> None:
    with pytest.raises(CorefileError) as info:
        _set_up(f"example.org {{\n    reload {args}\n}}\n")
    assert (info.value.line, info.value.token) == (2, token)
    assert message in str(info.value)


def test_once_per_block_and_no_block() -> None:
    with pytest.raises(CorefileError, match="only be used once"):
        _set_up("example.org {\n    reload\n    reload 10s\n}\n")
    with pytest.raises(CorefileError, match="takes no block"):
        _set_up("example.org {\n    reload {\n        jitter 1s\n    }\n}\n")


def test_an_embedded_server_says_nothing_reloads_it(reactor_running: None) -> None:
    """Without the supervisor (an embedding application) the check never runs, and says so."""
    from twisted.logger import globalLogPublisher
    seen: list[Any] = []
    globalLogPublisher.addObserver(seen.append)
    check = ReloadService(2.0, 1.0, 2.0)
    try:
        in_reactor(check.startService)
        wait_for(lambda: any("nothing can reload" in str(e.get("log_format", ""))
                             for e in seen), timeout=5)
    finally:
        globalLogPublisher.removeObserver(seen.append)
        in_reactor(check.stopService)


def test_a_listener_moves_onto_a_port_another_one_leaves(supervised, clusters):  # noqa: F811
    """health moves to the port ready held and ready to another, in one reload: the new
    listeners open while the old ones still listen (as CoreDNS, with SO_REUSEPORT), so the
    reload succeeds, and each path then answers on its new port only."""
    supervisor, path, port = supervised
    first, second = free_dns_port(), free_dns_port()
    write(path, corefile(clusters, port, ready=first, health=second))
    assert in_reactor(supervisor.reload) is True
    assert get(first, "/ready")[0] == 200 and get(second, "/health") == (200, "OK")
    third = free_dns_port()
    write(path, corefile(clusters, port, ready=third, health=first))
    before = failed()
    assert in_reactor(supervisor.reload) is True
    assert failed() == before
    wait_for(lambda: try_get(second, "/health") is None, what="the old health port to close")
    wait_for(lambda: (try_get(first, "/ready") or (0, ""))[0] == 404,
             what="the old ready listener to leave the port")
    assert get(first, "/health") == (200, "OK")
    assert get(third, "/ready")[0] == 200


def test_a_kept_stanza_is_named_where_it_is_written_now(supervised, clusters):  # noqa: F811
    """A line added above the stanzas keeps them running (same options), and they are
    named by their new lines from the switch on: metrics' `stanza` label as `/ready`'s."""
    supervisor, path, port = supervised

    def synced_names() -> set[str]:
        def read() -> set[str]:
            found = [m for m in PROCESS if m.name == "kubernetai_synced"]
            return {labels[0] for metric in found for labels in metric.values}
        return in_reactor(read)
    before = synced_names()
    assert before and all(name.startswith("Corefile:") for name in before)
    write(path, corefile(clusters, port, extra="    whoami\n"))  # one line more
    running = set(supervisor.clusters)
    assert in_reactor(supervisor.reload) is True
    assert set(supervisor.clusters) == running          # kept warm, not restarted
    after = synced_names()
    moved = {f"Corefile:{int(name.split()[0].split(':')[1]) + 1} {name.split(' ', 1)[1]}"
             for name in before}
    assert after == moved
    assert {f"{c.config.line}" for c in supervisor.clusters} == \
        {name.split()[0].split(":")[1] for name in after}
