"""`autopath`'s directive and its walk over the search path, in process (the end-to-end
test through twistd and two simulated clusters is tests/test_autopath.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dns.message
import dns.rdatatype
import pytest
from twisted.internet import defer
from twisted.names import dns as tdns

from kubernetai.core.codec import NOERROR, NXDOMAIN, SERVFAIL, parse_request, render_reply
from kubernetai.core.registry import BlockBuilder, Registry
from kubernetai.core.request import Reply, Request
from kubernetai.corefile import CorefileError, parse
from kubernetai.pkg.resolvconf import search_list
from kubernetai.plugins.autopath.handler import AutopathHandler

PATH = ["default.svc.cluster.local.", "svc.cluster.local.", "cluster.local.", "corp.", ""]


class Proto:
    metrics = ("dns://:53",)

    def peer(self, addr: Any) -> Any:
        return addr


def request(name: str, rdtype: str = "A") -> Request:
    parsed = parse_request(dns.message.make_query(name, rdtype).to_wire(), True)
    assert isinstance(parsed, Request)
    parsed.proto, parsed.addr = Proto(), ("10.0.0.7", 5353)
    parsed.answered = None
    parsed.observers = None
    return parsed


def a_record(name: bytes, ttl: int = 5) -> tdns.RRHeader:
    return tdns.RRHeader(name, tdns.A, tdns.IN, ttl, tdns.Record_A("10.96.0.1", ttl), auth=True)


class Source:
    """A stanza's stand-in: a fixed search path for one client address."""

    def __init__(self, path: list[str] | None, client: str = "10.0.0.7") -> None:
        self.path, self.client = path, client

    def autopath(self, req: Request) -> list[str] | None:
        return self.path if req.peer()[0] == self.client else None


def walker(found: dict[bytes, Reply], asked: list[bytes], later: bool = False) -> Any:
    def next(req: Request) -> Any:
        asked.append(req.qname)
        reply = found.get(req.lname, Reply(NXDOMAIN, True))
        return defer.succeed(reply) if later else reply
    return next


def handler(*sources: Source, zones: tuple[str, ...] = (".",)) -> AutopathHandler:
    made = AutopathHandler(zones, [], "kubernetai")
    made.sources = sources
    return made


@pytest.mark.parametrize("later", [False, True], ids=["now", "deferred"])
def test_walks_the_path_and_puts_a_cname_in_front(later: bool) -> None:
    asked: list[bytes] = []
    found = {b"web.other.svc.cluster.local":
             Reply(NOERROR, True, [a_record(b"web.other.svc.cluster.local", 7)])}
    req = request("Web.Other.default.svc.cluster.local")
    result = handler(Source(PATH)).serve(req, walker(found, asked, later))
    if later:
        result = result.result
    assert asked == [b"Web.Other.default.svc.cluster.local", b"Web.Other.svc.cluster.local"]
    cname, record = result.answers
    assert (cname.name.name, cname.type, cname.ttl) == (b"Web.Other.default.svc.cluster.local",
                                                         tdns.CNAME, 7)
    assert cname.payload.name.name == b"web.other.svc.cluster.local"
    assert record.name.name == b"web.other.svc.cluster.local"
    wire = dns.message.from_wire(render_reply(req, result))
    assert wire.question[0].name.to_text() == "Web.Other.default.svc.cluster.local."


def test_first_name_found_is_the_reply_itself() -> None:
    found = {b"web.default.svc.cluster.local":
             Reply(NOERROR, True, [a_record(b"web.default.svc.cluster.local")])}
    reply = found[b"web.default.svc.cluster.local"]
    req = request("web.default.svc.cluster.local")
    asked: list[bytes] = []
    assert handler(Source(PATH)).serve(req, walker(found, asked)) is reply
    assert asked == [b"web.default.svc.cluster.local"]


def test_nothing_found_gives_the_first_reply_and_the_bare_name_is_last() -> None:
    asked: list[bytes] = []
    first = Reply(NXDOMAIN, True)
    found = {b"x.default.svc.cluster.local": first}
    result = handler(Source(PATH)).serve(request("x.default.svc.cluster.local"),
                                         walker(found, asked))
    assert result is first
    assert asked == [b"x.default.svc.cluster.local", b"x.svc.cluster.local",
                     b"x.cluster.local", b"x.corp", b"x"]


def test_nodata_is_an_answer_and_an_unwritten_error_is_passed() -> None:
    asked: list[bytes] = []
    found = {b"x.svc.cluster.local": Reply(SERVFAIL),             # returned, not written
             b"x.cluster.local": Reply(NOERROR, True, [], [a_record(b"cluster.local")])}
    result = handler(Source(PATH)).serve(request("x.default.svc.cluster.local"),
                                         walker(found, asked))
    assert asked[-1] == b"x.cluster.local"
    assert result.rcode == NOERROR and result.answers == []        # NODATA: no CNAME


def test_a_plugin_error_ends_the_walk() -> None:
    asked: list[bytes] = []
    failed = Reply(SERVFAIL, error="plugin/kubernetai: no next plugin found")
    found = {b"x.svc.cluster.local": failed}
    result = handler(Source(PATH)).serve(request("x.default.svc.cluster.local"),
                                         walker(found, asked))
    assert result is failed and len(asked) == 2


def test_the_first_search_domain_itself_overshoots() -> None:
    result = handler(Source(PATH)).serve(request("default.svc.cluster.local"),
                                         walker({}, []))
    assert result.rcode == SERVFAIL
    assert result.error == ("trimzone: overshot qname: default.svc.cluster.local.for zone "
                            "default.svc.cluster.local.")


def test_left_alone_outside_zones_path_or_first_domain() -> None:
    asked: list[bytes] = []
    plain = handler(Source(PATH))
    for name in ("web.svc.cluster.local", "web.default.svc.cluster.localx"):
        plain.serve(request(name), walker({}, asked))
    handler(Source(PATH, client="10.9.9.9")).serve(request("w.default.svc.cluster.local"),
                                                   walker({}, asked))
    handler(Source(PATH), zones=("example.org.",)).serve(
        request("w.default.svc.cluster.local"), walker({}, asked))
    assert asked == [b"web.svc.cluster.local", b"web.default.svc.cluster.localx",
                     b"w.default.svc.cluster.local", b"w.default.svc.cluster.local"]


def test_the_first_source_that_knows_the_client_decides() -> None:
    other = ["team-b.svc.cluster.local.", "svc.cluster.local.", "cluster.local.", ""]
    made = handler(Source(None), Source(other))
    assert made.search_path(request("w.team-b.svc.cluster.local")) == other
    assert handler(Source(None), Source(None)).search_path(
        request("w.team-b.svc.cluster.local")) is None


def test_early_hit_stands_only_when_autopath_would_send_it_unchanged() -> None:
    made = handler(Source(PATH))
    req = request("web.default.svc.cluster.local")
    positive = render_reply(req, Reply(NOERROR, True, [a_record(b"web.default.svc.cluster.local")]))
    negative = render_reply(req, Reply(NXDOMAIN, True))
    chain = render_reply(req, Reply(NOERROR, True, [
        tdns.RRHeader(b"web.default.svc.cluster.local", tdns.CNAME, tdns.IN, 5,
                      tdns.Record_CNAME(b"x.example.org", 5)), a_record(b"x.example.org")]))
    assert made.filter_early(req, positive) == positive
    assert made.filter_early(req, negative) is None
    assert made.filter_early(req, chain) is None
    outside = request("web.svc.cluster.local")
    assert made.filter_early(outside, negative) == negative


def test_resolv_conf_search_list() -> None:
    text = "nameserver 10.0.0.1\nsearch A.com b.org.\noptions ndots:5\n"
    assert search_list(text) == ["a.com.", "b.org."]
    assert search_list(text + "domain Corp\n") == ["corp."]
    assert search_list("search a.com # x\n") == ["a.com.", "#.", "x."]
    assert search_list("# search a.com\n") == []


def set_up(text: str) -> BlockBuilder:
    (block,) = parse(text, "Corefile")
    return Registry().set_up_block(block, BlockBuilder(block, ("example.org.",)))


def test_directive_reads_a_file_and_zones(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search Example.org corp\n")
    builder = set_up(f"example.org {{\n    autopath example.org 10.0.0.0/8 {resolv}\n}}\n")
    (stage,) = builder.stages
    assert stage.handler.search == ["example.org.", "corp.", ""]
    assert stage.handler.zones == ["10.in-addr.arpa.", "example.org."]


def test_directive_errors(tmp_path: Path) -> None:
    with pytest.raises(CorefileError) as info:
        set_up("example.org {\n    autopath\n}\n")
    assert info.value.message == "plugin/autopath: no resolv-conf specified"
    missing = tmp_path / "nope"
    with pytest.raises(CorefileError) as info:
        set_up(f"example.org {{\n    autopath {missing}\n}}\n")
    assert info.value.message == (f'plugin/autopath: failed to parse "{missing}": open '
                                  f"{missing}: no such file or directory")
    with pytest.raises(CorefileError) as info:
        set_up("example.org {\n    autopath @whoami\n    whoami\n}\n")
    assert info.value.message == ("plugin/autopath: whoami does not implement the AutoPather "
                                  "interface")
    builder = set_up("example.org {\n    autopath @kubernetai\n}\n")
    assert any("no kubernetai in this server block" in note for note in builder.warnings)


def test_a_name_too_long_with_a_search_domain_is_not_asked() -> None:
    """A base that a longer search domain would take past 255 octets: that name is skipped
    (no such name can exist), the others are asked."""
    long_domain = ".".join(["d" * 60] * 3) + "."
    path = ["a.", long_domain, "b.", ""]
    base = ".".join(["x" * 30] * 3)
    asked: list[bytes] = []
    handler(Source(path)).serve(request(base + ".a"), walker({}, asked))
    assert asked == [(base + ".a").encode(), (base + ".b").encode(), base.encode()]


def test_a_root_first_search_domain_never_walks_the_root() -> None:
    asked: list[bytes] = []
    handler(Source([".", "corp.", ""])).serve(request("www.example.org"), walker({}, asked))
    assert asked == [b"www.example.org", b"www.example.org.corp", b"www.example.org"]


def test_a_truncated_reply_stays_truncated_with_its_cname() -> None:
    req = request("w.default.svc.cluster.local")
    inner = request("w.svc.cluster.local")
    wire = bytearray(render_reply(inner, Reply(NOERROR, True, [a_record(b"w.svc.cluster.local")])))
    wire[2] |= 0x02
    found = {b"w.svc.cluster.local": Reply.encoded(bytes(wire))}
    result = handler(Source(PATH)).serve(req, walker(found, []))
    assert result.wire is not None and result.wire[2] & 0x02
    message = dns.message.from_wire(result.wire)
    assert [rrset.rdtype for rrset in message.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert message.question[0].name.to_text() == "w.default.svc.cluster.local."


def test_a_search_domain_that_is_no_domain_name_is_refused(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search ok.example " + "x" * 64 + ".example\n")
    with pytest.raises(CorefileError) as info:
        set_up(f"example.org {{\n    autopath {resolv}\n}}\n")
    assert "is not a domain name" in info.value.message
