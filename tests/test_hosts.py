"""hosts: a hosts file and inline entries before the kubernetai stanzas, as CoreDNS's plugin.

In-process servers built from Corefile text (real UDP/TCP sockets, dnspython), one with a
simulated cluster behind hosts; the directive's parse errors; the reload check's life
through a configuration reload.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest
from conftest import EXAMPLES, free_dns_port, wait_for
from twisted.internet import defer

from kubernetai.app.server import KubernetaiService, load_service
from kubernetai.app.supervisor import Supervisor
from kubernetai.core.registry import BlockBuilder, Registry
from kubernetai.corefile import CorefileError, parse
from kubernetai.pkg.reactor_thread import in_reactor
from kubernetai.plugins.hosts.source import ENTRIES, RELOAD_TIMESTAMP
from kubernetai.plugins.hosts.watcher import HostsWatcher
from kubernetai.sandbox.server import Sandbox

HOSTS = """\
# hosts in front of the cluster
10.1.1.1   web.shared.svc.cluster.local      # the cluster has it too (10.96.100.10)
10.2.2.2   only-a.example.org  Alias.Example.Org
fd00::2    only-aaaa.example.org
10.4.4.4   *.wild.example.org
10.4.4.5   exact.wild.example.org
10.5.5.5   elsewhere.example.net             # outside the zones: dropped
"""

COREFILE = """\
cluster.local example.org in-addr.arpa ip6.arpa {{
    bind 127.0.0.1
    hosts {hosts} cluster.local example.org in-addr.arpa ip6.arpa {{
        10.9.9.9 inline.example.org
        10.2.2.2 inline.example.org
        ttl 120
        reload 100ms
        fallthrough
    }}
    kubernetai cluster.local in-addr.arpa ip6.arpa {{
        endpoint {url}
    }}
}}
"""


def write(path: Path, text: str) -> None:
    """Replace the file in one step (a reader never sees it half-written)."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text)
    os.replace(temporary, path)


def start(corefile: Path) -> tuple[KubernetaiService, int]:
    service = load_service(str(corefile), port_override=0)

    def begin() -> defer.Deferred:
        service.startService()
        return service.listening
    ports = in_reactor(begin)
    return service, ports[0].getHost().port


def ask(port: int, name: str, rdtype: str = "A", *, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, "127.0.0.1", port=port, timeout=5)


def records(response: dns.message.Message) -> list[tuple[str, int, str]]:
    """(owner as sent, TTL, rdata) of every answer record, sorted."""
    return sorted((rrset.name.to_text(omit_final_dot=False), rrset.ttl, rr.to_text())
                  for rrset in response.answer for rr in rrset)


def watchers(service: KubernetaiService) -> list[HostsWatcher]:
    return [extra for extra in service.extras.values() if isinstance(extra, HostsWatcher)]


@pytest.fixture(scope="module")
def cluster(reactor_running: None) -> Iterator[Sandbox]:
    server = Sandbox(bookmark_interval=1.0, history_size=50)
    server.apply(EXAMPLES / "cluster.local")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def served(cluster: Sandbox, tmp_path: Path) -> Iterator[tuple[KubernetaiService, int, Path]]:
    hosts = tmp_path / "hosts"
    hosts.write_text(HOSTS)
    corefile = tmp_path / "Corefile"
    corefile.write_text(COREFILE.format(hosts=hosts, url=cluster.url))
    service, port = start(corefile)
    try:
        yield service, port, hosts
    finally:
        in_reactor(service.stopService)


# -- in front of a cluster ---------------------------------------------------------------


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_hosts_answers_before_the_cluster(served, tcp: bool) -> None:
    """A name both have: hosts (40 in plugin.cfg) is asked before kubernetai (46)."""
    _, port, _ = served
    reply = ask(port, "web.shared.svc.cluster.local", tcp=tcp)
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    assert not reply.flags & dns.flags.RA
    assert records(reply) == [("web.shared.svc.cluster.local.", 120, "10.1.1.1")]
    assert reply.authority == [] and reply.additional == []


def test_names_hosts_lacks_fall_through_to_the_cluster(served) -> None:
    _, port, _ = served
    reply = ask(port, "kube-dns.kube-system.svc.cluster.local")
    assert records(reply) == [("kube-dns.kube-system.svc.cluster.local.", 5, "10.96.0.10")]
    missing = ask(port, "nope.shared.svc.cluster.local")
    assert missing.rcode() == dns.rcode.NXDOMAIN and missing.flags & dns.flags.AA
    assert [rrset.rdtype for rrset in missing.authority] == [dns.rdatatype.SOA]


def test_inline_entries_after_the_file_and_case(served) -> None:
    """Inline lines are hosts lines; names match in any case and are answered as asked;
    file entries come before inline ones; aliases are names of their own."""
    _, port, _ = served
    assert records(ask(port, "INLINE.example.ORG")) == [
        ("INLINE.example.ORG.", 120, "10.2.2.2"), ("INLINE.example.ORG.", 120, "10.9.9.9")]
    assert records(ask(port, "alias.example.org")) == [("alias.example.org.", 120, "10.2.2.2")]


def test_ptr_from_the_file_then_the_cluster(served) -> None:
    _, port, _ = served
    reply = ask(port, dns.reversename.from_address("10.2.2.2").to_text(), "PTR")
    assert reply.flags & dns.flags.AA
    assert [rr for _, _, rr in records(reply)] == [
        "alias.example.org.", "inline.example.org.", "only-a.example.org."]
    ipv6 = ask(port, dns.reversename.from_address("fd00::2").to_text(), "PTR")
    assert [rr for _, _, rr in records(ipv6)] == ["only-aaaa.example.org."]
    # An address hosts does not have is the cluster's to answer.
    cluster = ask(port, dns.reversename.from_address("10.96.0.10").to_text(), "PTR")
    assert [rr for _, _, rr in records(cluster)] == ["kube-dns.kube-system.svc.cluster.local."]
    # Wildcards have no PTR; names outside the zones were dropped.
    for address in ("10.4.4.4", "10.5.5.5"):
        reply = ask(port, dns.reversename.from_address(address).to_text(), "PTR")
        assert reply.rcode() == dns.rcode.NXDOMAIN   # the cluster's answer


@pytest.mark.parametrize("name, rdtype", [("only-a.example.org", "AAAA"),
                                          ("only-aaaa.example.org", "A"),
                                          ("only-a.example.org", "MX"),
                                          ("web.shared.svc.cluster.local", "TXT")])
def test_nodata_for_a_name_without_that_type(served, name: str, rdtype: str) -> None:
    """NOERROR, AA, nothing in any section: hosts has no SOA (CoreDNS), and the name is not
    passed on (the cluster's TXT NODATA would carry its SOA)."""
    _, port, _ = served
    reply = ask(port, name, rdtype)
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    assert reply.answer == [] and reply.authority == [] and reply.additional == []


def test_wildcards_and_outside_names(served) -> None:
    _, port, _ = served
    assert records(ask(port, "any.wild.example.org")) == [("any.wild.example.org.", 120,
                                                          "10.4.4.4")]
    assert records(ask(port, "exact.wild.example.org")) == [("exact.wild.example.org.", 120,
                                                            "10.4.4.5")]
    # One label only, not the apex: these fall through, and past the last stanza's zones
    # nothing answers example.org.
    for name in ("wild.example.org", "two.labels.wild.example.org"):
        assert ask(port, name).rcode() == dns.rcode.SERVFAIL


def test_a_changed_file_is_served_and_the_memo_forgets_the_old(served) -> None:
    """The reload check re-reads a file whose time or size changed; answers kept by the
    answer memo (hosts's own, and a stanza's for a name hosts passed on) are dropped."""
    service, port, hosts = served
    name = "only-a.example.org"
    assert records(ask(port, name)) == [(f"{name}.", 120, "10.2.2.2")]
    hits = service.cache.hits
    assert records(ask(port, name)) == [(f"{name}.", 120, "10.2.2.2")]
    assert service.cache.hits == hits + 1                       # kept, and served again
    cluster_name = "kube-dns.kube-system.svc.cluster.local"
    assert records(ask(port, cluster_name))[0][2] == "10.96.0.10"
    assert records(ask(port, cluster_name))[0][2] == "10.96.0.10"  # kept as well

    write(hosts, HOSTS.replace("10.2.2.2 ", "10.2.2.22") + f"10.7.7.7 {cluster_name}\n")
    wait_for(lambda: records(ask(port, name)) == [(f"{name}.", 120, "10.2.2.22")],
             what="the new address")
    assert records(ask(port, cluster_name)) == [(f"{cluster_name}.", 120, "10.7.7.7")]
    reverse = dns.reversename.from_address("10.2.2.22").to_text()
    assert [rr for _, _, rr in records(ask(port, reverse, "PTR"))] == [
        "alias.example.org.", "only-a.example.org."]


def test_a_deleted_file_keeps_its_entries(served) -> None:
    """As CoreDNS: a file that cannot be read changes nothing until it is back."""
    service, port, hosts = served
    (watcher,) = watchers(service)
    hosts.unlink()
    checks = watcher.checks
    wait_for(lambda: watcher.checks >= checks + 3, what="three checks")
    assert records(ask(port, "only-a.example.org"))[0][2] == "10.2.2.2"
    assert records(ask(port, "inline.example.org"))[0][2] == "10.2.2.2"
    write(hosts, "10.8.8.8 only-a.example.org\n")
    wait_for(lambda: records(ask(port, "only-a.example.org")) ==
             [("only-a.example.org.", 120, "10.8.8.8")], what="the file back")


def test_metrics(served) -> None:
    _, _, hosts = served
    # CoreDNS's Map.Len: every address of every name, every name of every address. The
    # file: A of web, only-a, alias, exact.wild (4), AAAA (1), *.wild (1), names of its
    # addresses (5); inline: inline's two A and the names of its two addresses (4).
    assert ENTRIES.values[(str(hosts),)] == 11 + 4
    assert RELOAD_TIMESTAMP.values[()] == pytest.approx(hosts.stat().st_mtime_ns / 1e9)


# -- without a cluster ---------------------------------------------------------------------


@pytest.fixture
def alone(tmp_path: Path, reactor_running: None):
    """Start a server of one block from Corefile text; stop it afterwards."""
    running: list[KubernetaiService] = []

    def serve(text: str) -> int:
        corefile = tmp_path / "Corefile"
        corefile.write_text(text)
        service, port = start(corefile)
        running.append(service)
        return port
    yield serve
    for service in running:
        in_reactor(service.stopService)


def test_defaults_no_fallthrough_and_no_next(alone, tmp_path: Path) -> None:
    """TTL 3600; an unknown name in the zones is SERVFAIL without AA (no SOA for an
    NXDOMAIN); a name outside the zones and an unknown PTR go on to the next plugin, and
    there is none."""
    hosts = tmp_path / "hosts"
    hosts.write_text("10.3.3.3 a.example.net\n")
    port = alone(f". {{\n    bind 127.0.0.1\n    hosts {hosts} example.net\n}}\n")
    assert records(ask(port, "a.example.net")) == [("a.example.net.", 3600, "10.3.3.3")]
    assert records(ask(port, "3.3.3.10.in-addr.arpa", "PTR")) == [
        ("3.3.3.10.in-addr.arpa.", 3600, "a.example.net.")]
    for name, rdtype in (("b.example.net", "A"), ("a.example.com", "A"),
                         ("4.3.3.10.in-addr.arpa", "PTR")):
        reply = ask(port, name, rdtype)
        assert reply.rcode() == dns.rcode.SERVFAIL and not reply.flags & dns.flags.AA
        assert reply.answer == reply.authority == []


def test_no_reverse_and_fallthrough_unsupported(alone) -> None:
    port = alone(". {\n    bind 127.0.0.1\n    hosts /nonexistent/hosts {\n"
                 "        10.3.3.3 a.example.net\n        no_reverse\n"
                 "        fallthrough\n        fallthrough_unsupported\n    }\n    whoami\n}\n")
    assert records(ask(port, "a.example.net")) == [("a.example.net.", 3600, "10.3.3.3")]
    # No PTR: passed on, to whoami (which answers any name with the client's address).
    ptr = ask(port, "3.3.3.10.in-addr.arpa", "PTR")
    assert ptr.answer == [] and [r.rdtype for r in ptr.additional] == [dns.rdatatype.A,
                                                                          dns.rdatatype.SRV]
    txt = ask(port, "a.example.net", "TXT")                 # unsupported type: passed on
    assert [r.rdtype for r in txt.additional] == [dns.rdatatype.A, dns.rdatatype.SRV]
    nodata = ask(port, "a.example.net", "AAAA")             # a type hosts answers: NODATA
    assert nodata.flags & dns.flags.AA and nodata.answer == nodata.additional == []


# -- the directive -------------------------------------------------------------------------


def set_up(text: str) -> BlockBuilder:
    (block,) = parse(text, "Corefile")
    zones = tuple(dict.fromkeys(key.zone for key in block.keys))
    return Registry().set_up_block(block, BlockBuilder(block, zones))


def test_options_and_zones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "relative").write_text("10.0.0.1 a.example.org\n10.0.0.2 b.other.org\n")
    builder = set_up("example.org other.org {\n    hosts relative example.org 10.0.0.0/8 {\n"
                     "        ttl 60 extra\n        reload 0\n        fallthrough other.org\n"
                     "    }\n}\n")
    (resolver,) = builder.resolvers()
    (watcher,) = builder.process_services
    assert resolver.source.path == str(tmp_path / "relative")   # from the working directory
    assert resolver.source.zones == ("example.org.", "10.in-addr.arpa.")
    assert set(resolver.source.file.name4) == {"a.example.org."}
    assert resolver.ttl == 60 and watcher.interval == 0
    assert resolver.fall.zones == ("other.org.",)
    assert builder.warnings == ["Corefile:3: hosts: ttl takes one value; 'extra' and what "
                                "follows are ignored (as CoreDNS ignores them)"]
    default = set_up("example.org {\n    hosts\n}\n")
    (resolver,) = default.resolvers()
    assert resolver.source.path == "/etc/hosts" and resolver.source.zones == ("example.org.",)
    assert default.process_services[0].interval == 5.0 and resolver.ttl == 3600


def test_missing_file_and_directory_are_warnings(tmp_path: Path) -> None:
    builder = set_up(f"example.org {{\n    hosts {tmp_path}/none\n}}\n")
    assert builder.warnings == [f"Corefile:2: hosts: File does not exist: {tmp_path}/none"]
    builder = set_up(f"example.org {{\n    hosts {tmp_path}\n}}\n")
    assert builder.warnings == [f'Corefile:2: hosts: Hosts file "{tmp_path}" is a directory']


@pytest.mark.parametrize("body, line, token, message", [
    ("hosts {\n ttl\n}", 3, "ttl", "ttl needs a time in second"),
    ("hosts {\n ttl 1m\n}", 3, "1m", "ttl needs a number of second"),
    ("hosts {\n ttl 0\n}", 3, "0", "ttl provided is invalid"),
    ("hosts {\n ttl 65536\n}", 3, "65536", "ttl provided is invalid"),
    ("hosts {\n reload\n}", 3, "reload", "reload needs a duration (zero seconds to disable)"),
    ("hosts {\n reload 1s 2s\n}", 3, "2s", "reload needs a duration (zero seconds to "
                                          "disable)"),
    ("hosts {\n reload 5\n}", 3, "5", "invalid duration for reload '5'"),
    ("hosts {\n reload -1s\n}", 3, "-1s", "invalid negative duration for reload '-1s'"),
    ("hosts {\n fallthrough\n 10.0.0.1 a.example.org\n}", 4, "10.0.0.1",
     "unknown property '10.0.0.1'"),
    ("hosts {\n fallthrough_unsupported\n}", 3, "fallthrough_unsupported",
     "fallthrough_unsupported requires fallthrough"),
    ("hosts {\n fallthrough\n fallthrough_unsupported x\n}", 4, "x",
     "Wrong argument count or unexpected line ending after 'x'"),
    ("hosts {\n no_reverse 10.0.0.1\n}", 3, "10.0.0.1",
     "Wrong argument count or unexpected line ending after 'no_reverse'"),
    ("hosts /etc/hosts example.org a..b", 2, "a..b", "invalid zone 'a..b'"),
    ("hosts {\n fallthrough a..b\n}", 3, "a..b", "invalid zone 'a..b'"),
    ("hosts\n hosts", 3, "hosts", "this plugin can only be used once per Server Block"),
])
def test_errors_name_file_line_and_token(body: str, line: int, token: str,
                                         message: str) -> None:
    with pytest.raises(CorefileError) as info:
        set_up("example.org {\n" + body + "\n}\n")
    error = info.value
    assert (error.filename, error.line, error.token) == ("Corefile", line, token)
    assert message in error.message
    assert error.message.startswith(("hosts: ", "this plugin"))


def test_a_file_that_cannot_be_looked_at_is_an_error(tmp_path: Path) -> None:
    """Anything but "does not exist" (here: a path through a regular file)."""
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(CorefileError) as info:
        set_up(f"example.org {{\n    hosts {plain}/hosts\n}}\n")
    assert (info.value.line, info.value.token) == (2, f"{plain}/hosts")
    assert info.value.message == (f"hosts: unable to access hosts file '{plain}/hosts': "
                                  f"stat {plain}/hosts: not a directory")


# -- the reload check's life ---------------------------------------------------------------


def test_the_check_stops_with_its_configuration(tmp_path: Path, reactor_running: None) -> None:
    """A reload starts the new configuration's check and stops the old one; stopping the
    server stops the check that runs."""
    hosts = tmp_path / "hosts"
    hosts.write_text("10.3.3.3 a.example.net\n")
    corefile = tmp_path / "Corefile"
    dns_port = free_dns_port()

    def text(ttl: int) -> str:
        return (f"example.net:{dns_port} {{\n    bind 127.0.0.1\n    hosts {hosts} {{\n"
                f"        ttl {ttl}\n        reload 50ms\n    }}\n}}\n")
    write(corefile, text(10))
    supervisor: Any = in_reactor(Supervisor, str(corefile), read_timeout=5.0,
                                 status_interval=3600, grace=0.1)
    in_reactor(supervisor.startService)
    try:
        wait_for(lambda: supervisor.server.listening.called, what="listening")
        (first,) = watchers(supervisor.server)
        assert first.running and records(ask(dns_port, "a.example.net"))[0][1] == 10
        write(corefile, text(20))
        assert in_reactor(supervisor.reload) is True
        (second,) = watchers(supervisor.server)
        assert second is not first and second.running and not first.running
        assert records(ask(dns_port, "a.example.net"))[0][1] == 20
        checks = first.checks
        time.sleep(0.3)
        assert first.checks <= checks + 1            # one in flight at the switch, at most
        assert second.checks > 0
    finally:
        in_reactor(supervisor.stopService)
    assert not second.running
    checks = second.checks
    time.sleep(0.3)
    assert second.checks <= checks + 1


# -- the file format -----------------------------------------------------------------------

GO_HOSTS = b"""255.255.255.255\tbroadcasthost
127.0.0.2\todin
127.0.0.3\todin  # inline comment
::2             odin
127.1.1.1\tthor
# aliases
127.1.1.2\tullr ullrhost
fe80::1%lo0\tlocalhost\r
fe80:0000:0000:0000:0000:0000:0000:0002%lo0\tLocalHost
::ffff:10.0.0.7 mapped
# Bogus entries that must be ignored.
123.123.123\tloki
010.1.1.1 octal
321.321.321.321
"""


def test_the_file_format_as_go_reads_it() -> None:
    """Go's net/hosts.go cases (CoreDNS's hostsfile tests), and the 64 KiB line limit."""
    from kubernetai.plugins.hosts.hostsfile import address_from_reverse, parse_hosts
    from kubernetai.plugins.hosts.source import combine

    hosts = parse_hosts(GO_HOSTS + b"10.0.0.8 " + b"x" * 70000 + b"\n10.0.0.9 after\n", (".",))
    table = combine(hosts, parse_hosts(b"", (".",)))
    assert table.names["odin."] == (["127.0.0.2", "127.0.0.3"], ["::2"])
    assert table.names["ullrhost."] == (["127.1.1.2"], [])
    assert table.names["localhost."] == ([], ["fe80::1", "fe80::2"])
    assert table.names["mapped."] == (["10.0.0.7"], [])
    assert not {"loki.", "octal.", "after."} & set(table.names)
    assert table.addr["127.1.1.2"] == ["ullr.", "ullrhost."]
    assert address_from_reverse("2.0.0.127.in-addr.arpa.") == "127.0.0.2"
    assert address_from_reverse(dns.reversename.from_address("fe80::2").to_text()) == "fe80::2"
    assert address_from_reverse(
        dns.reversename.from_address("::ffff:10.0.0.7").to_text()) == "10.0.0.7"
    for bad in ("1.2.3.in-addr.arpa.", "a.b.c.d.in-addr.arpa.", "1.0.ip6.arpa.", "x.org."):
        assert address_from_reverse(bad) is None
    assert len(hosts) == 10 + 10     # Map.Len: 10 addresses of names, 10 names of addresses
