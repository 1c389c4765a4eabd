"""rewrite's Corefile lines: what CoreDNS 1.14 accepts is accepted, and what it refuses
is refused with its message, at the line and word to fix; several lines are one handler
in Corefile order; and the small readers the rules use (numbers, names, TTL ranges)."""

from __future__ import annotations

import pytest

from kubernetai.core.registry import BlockBuilder, Registry
from kubernetai.corefile import CorefileError, parse
from kubernetai.plugins.rewrite.handler import RewriteHandler
from kubernetai.plugins.rewrite.names import labels_of
from kubernetai.plugins.rewrite.parse import rcode_value, ttl_range
from kubernetai.plugins.rewrite.tables import ParseUintError, parse_uint


def _set_up(body: str) -> BlockBuilder:
    (block,) = parse(f"example.org {{\n    {body}\n}}\n", "Corefile")
    return Registry().set_up_block(block, BlockBuilder(block, ("example.org.",)))


@pytest.mark.parametrize("body", [
    "rewrite name a.com b.com",
    "rewrite stop name regex foo bar answer name bar foo",
    "rewrite stop {\n        name regex foo bar\n        answer name bar foo\n    }",
    "rewrite continue name suffix .a.com. .b.com. answer auto",
    "rewrite name prefix foo bar answer auto answer value (.*)\\.b\\.com {1}.a.com",
    "rewrite name substring fcore.dns.rocks dns.fcore.rocks answer name "
    "(fcore)\\.(dns)\\.(rocks) {2}.{1}.{3}",
    "rewrite name regex (.*) {1}.x answer value (.*) {1} name (.*) {1}",
    "rewrite type ANY HINFO",
    "rewrite class CH IN",
    "rewrite ttl example.com. 30-300",
    "rewrite ttl example.com. -30",
    "rewrite ttl example.com. 30-",
    "rewrite continue {\n        ttl regex (.*)\\.coredns\\.rocks 15\n    }",
    "rewrite rcode regex (.*)\\.coredns\\.rocks SERVFAIL NOERROR",
    "rewrite rcode a.com 2 0",
    "rewrite cname regex (.*).cdn.example.net. {1}.other.cdn.com.",
    "rewrite cname a.com b.com",
    "rewrite edns0 local set 0xffee 0x61626364",
    "rewrite edns0 local append 65262 abcd revert",
    "rewrite edns0 local set 0xffee {client_ip}",
    "rewrite edns0 local set 0xffee {some-plugin/some-label}",
    "rewrite edns0 local unset 0xffee",
    "rewrite edns0 nsid set",
    "rewrite edns0 nsid unset",
    "rewrite edns0 subnet set 24 56",
    "rewrite edns0 subnet unset",
])
def test_accepted(body: str) -> None:
    (stage,) = _set_up(body).ordered()
    assert stage.name == "rewrite" and isinstance(stage.handler, RewriteHandler)


@pytest.mark.parametrize("body, line, token, message", [
    ("rewrite", 2, "rewrite", "no rule type specified for rewrite"),
    ("rewrite {\n    }", 2, "rewrite", "no rule type specified for rewrite"),
    ("rewrite stop", 2, "stop", "stop rule must begin with a rule type"),
    ("rewrite continue", 2, "continue", "continue rule must begin with a rule type"),
    ("rewrite name", 2, "name", "too few arguments for a name rule"),
    ("rewrite name a.com b.com {\n        name x y\n    }", 2, "{",
     "no rule type specified for rewrite"),
    ("rewrite foo a b", 2, "foo", 'invalid rule type "foo"'),
    ("rewrite stop foo a b", 2, "foo", 'invalid rule type "stop"'),
    ("rewrite type A", 2, "type", "type rules must have exactly two arguments"),
    ("rewrite type A BOGUS", 2, "BOGUS", 'invalid type "BOGUS"'),
    ("rewrite class IN xx", 2, "xx", 'invalid class "XX"'),
    ("rewrite name regex [bad[ x", 2, "[bad[", "invalid regex matching pattern: [bad["),
    ("rewrite name regex a {1}", 2, "a", "the rewrite regex pattern ({1}) uses more "
     "subexpressions than its corresponding matching regex pattern (a)"),
    ("rewrite name a.com b(", 2, "b(", "invalid regex matching pattern: b(."),
    ("rewrite name foo a b", 2, "foo", "name rule supports only exact, prefix, suffix, "
     "substring, and regex name matching, received: foo"),
    ("rewrite stop {\n        name regex foo bar\n        answer name bar foo\n"
     "        name baz\n    }", 5, "name", "name answer rule for regex rule: 2 arguments "
     "required"),
    ("rewrite stop {\n        answer name bar foo\n        name regex foo bar\n    }", 3,
     "answer", "response rewrites must begin with a name rule"),
    ("rewrite name regex foo bar answer auto answer name a b", 2, "answer",
     "auto name answer rule cannot be combined with explicit name anwer rules"),
    ("rewrite name regex foo bar answer bogus", 2, "bogus",
     'invalid type "bogus" for answer rule for regex rule'),
    ("rewrite name regex foo bar baz", 2, "baz", "invalid arguments for regex rule"),
    ("rewrite name regex foo bar baz qux", 2, "baz", "exceeded the number of arguments for "
     "a non-answer rule argument for regex rule"),
    ("rewrite name regex foo bar answer", 2, "answer", "invalid arguments for regex rule"),
    ("rewrite name regex foo bar answer name [ x", 2, "[",
     "name answer rule for regex rule: invalid regex matching pattern: ["),
    ("rewrite ttl a.com", 2, "a.com", "too few (1) arguments for a ttl rule"),
    ("rewrite ttl a.com x", 2, "x", "invalid TTL 'x' for a ttl rule"),
    ("rewrite ttl a.com 30-10", 2, "30-10", "invalid TTL '30-10' for a ttl rule"),
    ("rewrite ttl a.com -", 2, "-", "invalid TTL '-' for a ttl rule"),
    ("rewrite ttl a b c d", 2, "c", "invalid TTL '' for a ttl rule"),
    ("rewrite ttl foo a.com 10", 2, "foo", "ttl rule supports only exact, prefix, suffix, "
     "substring, and regex name matching"),
    ("rewrite ttl regex [ 10", 2, "[", "invalid regex pattern in a ttl rule: ["),
    ("rewrite rcode a.com SERVFAIL", 2, "SERVFAIL", "too few (2) arguments for a rcode rule"),
    ("rewrite rcode a.com BOGUS NOERROR", 2, "BOGUS",
     "invalid matching RCODE 'BOGUS' for a rcode rule"),
    ("rewrite rcode a.com 2 24", 2, "24", "invalid replacement RCODE '24' for a rcode rule"),
    ("rewrite rcode foo a.com 2 0", 2, "foo", "rcode rule supports only exact"),
    ("rewrite cname a", 2, "a", "too few (1) arguments for a cname rule"),
    ("rewrite cname foo a b", 2, "foo", "unknown cname rewrite type: foo"),
    ("rewrite cname regex [ b", 2, "[", "invalid cname rewrite regex pattern"),
    ("rewrite edns0 local", 2, "local", "too few arguments for an EDNS0 rule"),
    ("rewrite edns0 local bogus 1 2", 2, "bogus", 'invalid action: "bogus"'),
    ("rewrite edns0 local set 0xffee", 2, "local",
     "EDNS0 local rules require three or four args"),
    ("rewrite edns0 local set xyz abc", 2, "xyz",
     'strconv.ParseUint: parsing "xyz": invalid syntax'),
    ("rewrite edns0 local set 0x10000 abc", 2, "0x10000",
     'strconv.ParseUint: parsing "0x10000": value out of range'),
    ("rewrite edns0 local set 0xffee 0xzz", 2, "0xzz", "encoding/hex: invalid byte: U+007A 'z'"),
    ("rewrite edns0 local set 0xffee 0xabc", 2, "0xabc", "encoding/hex: odd length hex string"),
    ("rewrite edns0 local set 0xffee {bogus}", 2, "{bogus}",
     'unsupported variable name "{bogus}"'),
    ("rewrite edns0 nsid set x", 2, "x", "EDNS0 NSID rules can accept no more than one arg"),
    ("rewrite edns0 subnet set 33 56", 2, "33", "invalid IPv4 bit mask length 33"),
    ("rewrite edns0 subnet set 24 129", 2, "129", "invalid IPv6 bit mask length 129"),
    ("rewrite edns0 foo set a b", 2, "foo", 'invalid rule type "foo"'),
    ("rewrite edns0 local unset", 2, "unset", "local unset action requires exactly two "
     "arguments"),
    ("rewrite edns0 subnet unset x", 2, "x", "subnet unset action requires exactly one "
     "argument"),
])
def test_refused(body: str, line: int, token: str, message: str) -> None:
    with pytest.raises(CorefileError) as info:
        _set_up(body)
    assert (info.value.line, info.value.token) == (line, token), str(info.value)
    assert f"plugin/rewrite: {message}" in str(info.value)


def test_lines_are_one_handler_in_corefile_order_before_the_resolvers() -> None:
    builder = _set_up("whoami\n    rewrite name a.com b.com\n    log\n"
                      "    rewrite continue type A AAAA")
    stages = builder.ordered()
    assert [stage.name for stage in stages] == ["log", "rewrite", "whoami"]
    rules = stages[1].handler.rules
    assert [type(rule).__name__ for rule in rules] == ["NameRule", "TypeRule"]
    assert [rule.mode for rule in rules] == ["stop", "continue"]


def test_go_numbers() -> None:
    assert parse_uint("0xffee", 0, 16) == 0xFFEE
    assert parse_uint("010", 0, 16) == 8
    assert parse_uint("0b1_0", 0, 16) == 2
    assert parse_uint("65262", 0, 16) == 65262
    assert parse_uint("1_0", 0, 16) == 10
    for bad in ("", "-1", "+1", "1__0", "_1", "0x", "0x_", "12a", " 1"):
        with pytest.raises(ParseUintError):
            parse_uint(bad, 0, 16)
    with pytest.raises(ParseUintError, match="value out of range"):
        parse_uint("65536", 0, 16)
    for bad in ("0x10", "1_0"):
        with pytest.raises(ParseUintError):
            parse_uint(bad, 10, 32)


def test_ttl_ranges_and_rcodes() -> None:
    assert ttl_range("15") == (15, 15)
    assert ttl_range("30-300") == (30, 300)
    assert ttl_range("-30") == (0, 30)
    assert ttl_range("30-") == (30, 2147483647)
    for bad in ("-", "a", "1-2-3", "300-30", "4294967296", ""):
        assert ttl_range(bad) is None
    assert [rcode_value(v) for v in ("0", "23", "servfail", "NOTIMPL", "BADVERS", "24")] == \
        [0, 23, 2, 4, None, None]


def test_names_as_miekg_reads_them() -> None:
    assert labels_of("a.b.") == [b"a", b"b"]
    assert labels_of("a.b") == [b"a", b"b"]
    assert labels_of(".") == []
    assert labels_of("a\\.b.c.") == [b"a.b", b"c"]
    assert labels_of("a\\032b.") == [b"a b"]
    for bad in ("", "a..b.", ".a.", "x" * 64 + ".", ("x" * 63 + ".") * 5, "a\\"):
        assert labels_of(bad) is None
