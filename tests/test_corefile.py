"""Tests for kubernetai.corefile: the Corefile grammar as CoreDNS reads it."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubernetai.corefile import (
    MAX_FILE_BYTES,
    MAX_IMPORT_DEPTH,
    MAX_IMPORTED_FILES,
    MAX_NESTING,
    MAX_TOKENS,
    MAX_TOTAL_BYTES,
    CorefileError,
    Directive,
    ServerBlock,
    ZoneAddress,
    parse,
    parse_file,
    parse_key,
)
from kubernetai.corefile.files import Refused, open_regular

CORE = Path(__file__).resolve().parent / "corefiles"


def D(name: str, *args: str, block: list | tuple = ()) -> tuple:
    """A directive as (name, args, block), without file and line numbers."""
    return (name, tuple(args), tuple(block))


def tree(directives: tuple[Directive, ...]) -> tuple:
    return tuple((d.name, d.args, tree(d.block)) for d in directives)


def shape(blocks: tuple[ServerBlock, ...]) -> list:
    """Server blocks reduced to ([key strings], directive tree)."""
    return [([str(k) for k in b.keys], tree(b.directives)) for b in blocks]


def one(text: str, **kw) -> ServerBlock:
    blocks = parse(text, **kw)
    assert len(blocks) == 1
    return blocks[0]


KUBEADM_TREE = (
    D("errors"),
    D("health", block=[D("lameduck", "5s")]),
    D("ready"),
    D(
        "kubernetes",
        "cluster.local",
        "in-addr.arpa",
        "ip6.arpa",
        block=[D("pods", "insecure"), D("fallthrough", "in-addr.arpa", "ip6.arpa"), D("ttl", "30")],
    ),
    D("prometheus", ":9153"),
    D("forward", ".", "/etc/resolv.conf", block=[D("max_concurrent", "1000")]),
    D("cache", "30"),
    D("loop"),
    D("reload"),
    D("loadbalance"),
)


# --------------------------------------------------------------------------
# Whole Corefiles


def test_kubeadm_default_corefile():
    """The Corefile kubeadm installs parses to the expected tree, keys and lines."""
    blocks = parse_file(CORE / "kubeadm.Corefile")
    assert shape(blocks) == [(["dns://.:53"], KUBEADM_TREE)]
    block = blocks[0]
    assert block.keys == (ZoneAddress("dns", ".", 53),)
    assert block.line == 1 and block.filename.endswith("kubeadm.Corefile")
    kubernetes = block.directives[3]
    assert (kubernetes.line, kubernetes.arg_lines) == (7, (7, 7, 7))
    assert [d.line for d in kubernetes.block] == [8, 9, 10]
    assert block.directives[-1].line == 19


def test_multicluster_corefile():
    """Several kubernetai stanzas, a snippet, env vars, a CIDR key and a glob import."""
    blocks = parse_file(CORE / "multicluster.Corefile", environ={"KUBECONFIG_C": "/etc/kubernetai/c.yaml"})
    assert len(blocks) == 2
    first, second = blocks
    zones = [k.zone for k in first.keys]
    assert zones[:3] == ["cluster.local.", "assemblage.local.", "conglomeration.local."]
    assert zones[3:] == [f"{i}.0.10.in-addr.arpa." for i in range(128)]
    assert {k.port for k in first.keys} == {53}
    common = (D("errors"), D("cache", "30"), D("loop"), D("reload"))
    assert tree(first.directives) == common + (
        D(
            "kubernetai",
            "cluster.local",
            block=[D("kubeconfig", "/etc/kubernetai/kubeconfig", "cluster-a"), D("pods", "verified"), D("fallthrough")],
        ),
        D(
            "kubernetai",
            "assemblage.local",
            block=[
                D("endpoint", "https://10.1.0.1:6443"),
                D("tls", "/certs/client.crt", "/certs/client.key", "/certs/ca.crt"),
                D("namespaces", "default", "shared", "analytics"),
                D("ttl", "10"),
                D("fallthrough"),
            ],
        ),
        D(
            "kubernetai",
            "conglomeration.local",
            "10.0.0.0/17",
            block=[
                D("kubeconfig", "/etc/kubernetai/c.yaml", "conglomeration"),
                D("labels", "environment in (production, staging)"),
                D("endpoint_pod_names"),
                D("fallthrough", "in-addr.arpa"),
            ],
        ),
        D("forward", ".", "/etc/resolv.conf"),
    )
    assert tree(second.directives) == common + (
        D("forward", ".", "8.8.8.8", "9.9.9.9", block=[D("max_concurrent", "1000")]),
        D("log"),
    )
    # Snippet lines keep the place they were written; imported lines their file.
    assert (second.directives[0].filename, second.directives[0].line) == (first.filename, 3)
    forward = second.directives[4]
    assert forward.filename.endswith("extra/10-forward.conf") and forward.line == 1
    assert forward.block[0].line == 2


def test_large_corefile_is_fast():
    """A 2,000-line Corefile parses well under a second."""
    text = (CORE / "kubeadm.Corefile").read_text()
    big = "".join(text.replace(".:53", f"zone{i}.example") for i in range(105))
    assert big.count("\n") >= 2000
    start = time.perf_counter()
    blocks = parse(big)
    assert time.perf_counter() - start < 1.0
    assert len(blocks) == 105


# --------------------------------------------------------------------------
# Structure


STRUCTURE = [
    pytest.param(".:53 {\n}\n", [(["dns://.:53"], ())], id="empty-block"),
    pytest.param("example.org {\n  whoami\n}\n", [(["dns://example.org.:53"], (D("whoami"),))], id="one-directive"),
    pytest.param(
        "a.org {\n whoami\n}\nb.org:1053 {\n log\n errors\n}\n",
        [(["dns://a.org.:53"], (D("whoami"),)), (["dns://b.org.:1053"], (D("log"), D("errors")))],
        id="two-blocks",
    ),
    pytest.param(
        "a.org b.org, c.org,\n  d.org {\n}\n",
        [(["dns://a.org.:53", "dns://b.org.:53", "dns://c.org.:53", "dns://d.org.:53"], ())],
        id="keys-spaces-commas-continuation",
    ),
    pytest.param("example.org\n{\n whoami\n}\n", [(["dns://example.org.:53"], (D("whoami"),))], id="brace-on-next-line"),
    pytest.param(
        "example.org\nwhoami\nlog stdout\n",
        [(["dns://example.org.:53"], (D("whoami"), D("log", "stdout")))],
        id="single-block-without-braces",
    ),
    pytest.param("example.org:1053\n", [(["dns://example.org.:1053"], ())], id="keys-only"),
    pytest.param(". { whoami\n}\n", [(["dns://.:53"], (D("whoami"),))], id="directive-on-brace-line"),
    pytest.param(
        ". {\n a {\n  b 1 {\n   c 2\n  }\n  d\n }\n}\n",
        [(["dns://.:53"], (D("a", block=[D("b", "1", block=[D("c", "2")]), D("d")]),))],
        id="deep-nesting",
    ),
    pytest.param(
        ". {\n health { lameduck 5s }\n a { b { c } }\n}\n",
        [(["dns://.:53"], (D("health", block=[D("lameduck", "5s")]), D("a", block=[D("b", block=[D("c")])])))],
        id="one-line-blocks",
    ),
    pytest.param(
        ". {\n a {\n  x 1 }\n}\n",
        [(["dns://.:53"], (D("a", block=[D("x", "1")]),))],
        id="nested-close-after-args",
    ),
    pytest.param(". {\n a {\n }\n}\n", [(["dns://.:53"], (D("a"),))], id="empty-nested-block"),
    pytest.param(". {\n}\nexample.org {\n}\n", [(["dns://.:53"], ()), (["dns://example.org.:53"], ())], id="blocks-back-to-back"),
    pytest.param(". {\n} example.org {\n}\n", [(["dns://.:53"], ()), (["dns://example.org.:53"], ())], id="next-block-after-brace"),
    pytest.param("", [], id="empty-file"),
    pytest.param("# only a comment\n\n", [], id="only-comments"),
]


@pytest.mark.parametrize("text, expected", STRUCTURE)
def test_structure(text, expected):
    """Corefile text gives the expected server blocks and directive trees."""
    assert shape(parse(text)) == expected


def test_line_numbers():
    """Directives and args keep the line they were written on."""
    block = one("\n\nexample.org {\n\n  a x\n    y\n  b {\n    c\n  }\n}\n")
    a, y, b = block.directives
    assert block.line == 3
    assert (a.name, a.line, a.arg_lines) == ("a", 5, (5,))
    assert (y.name, y.line) == ("y", 6)
    assert (b.line, b.block[0].line) == (7, 8)


def test_dataclasses_are_frozen():
    """The parse result is immutable plain data."""
    block = one(". {\n log\n}\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        block.line = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        block.directives[0].name = "x"  # type: ignore[misc]
    assert not hasattr(block, "__dict__")


# --------------------------------------------------------------------------
# Tokens


TOKENS = [
    pytest.param('a "b c" d', ("a", "b c", "d"), id="quoted-with-space"),
    pytest.param('a ""', ("a", ""), id="empty-quoted"),
    pytest.param(r'a "say \"hi\""', ("a", 'say "hi"'), id="escaped-quote"),
    pytest.param(r'a "c:\dir\n"', ("a", r"c:\dir\n"), id="other-backslashes-kept"),
    pytest.param(r'a "x\\"', ("a", "x\\\\"), id="backslash-pair-kept"),
    pytest.param('a foo"bar baz"', ("a", 'foo"bar', 'baz"'), id="quote-mid-word-is-literal"),
    pytest.param('a "x"y', ("a", "x", "y"), id="word-after-closing-quote"),
    pytest.param("a b # c d", ("a", "b"), id="comment"),
    pytest.param("a b#c d", ("a", "b"), id="comment-mid-word"),
    pytest.param('a "b # c"', ("a", "b # c"), id="hash-in-quotes"),
    pytest.param("a `b c`", ("a", "`b", "c`"), id="backticks-not-special"),
    pytest.param("a b\\\n", ("a", "b\\"), id="no-line-continuation"),
    pytest.param("a\tb\u00a0c\u3000d", ("a", "b", "c", "d"), id="unicode-spaces"),
    pytest.param("a {x x} x{", ("a", "{x", "x}", "x{"), id="brace-inside-word"),
]


@pytest.mark.parametrize("line, expected", TOKENS)
def test_tokens(line, expected):
    """Words, quotes, escapes and comments split a line as CoreDNS's lexer does."""
    block = one(f". {{\n{line}\n}}\n")
    assert len(block.directives) == 1
    d = block.directives[0]
    assert (d.name,) + d.args == expected


def test_multiline_quoted_string():
    """A quoted string may span lines; it keeps its first line, and the next line starts a new directive."""
    block = one('. {\n  a "one\ntwo" b\n  c\n}\n')
    a, c = block.directives
    assert a.args == ("one\ntwo", "b")
    assert a.arg_lines == (2, 3)
    assert (c.name, c.line) == ("c", 4)


def test_crlf_and_bom():
    """CRLF line ends and a leading byte-order mark read like plain LF text."""
    block = one("\ufeff. {\r\n  a b\r\n  c\r\n}\r\n")
    assert tree(block.directives) == (D("a", "b"), D("c"))
    assert [d.line for d in block.directives] == [2, 3]


def test_quoted_brace_counts_as_brace():
    """A quoted "{" is a brace, because CoreDNS compares token text only."""
    assert tree(one('. {\n a "{"\n  b\n }\n}\n').directives) == (D("a", block=[D("b")]),)


# --------------------------------------------------------------------------
# Environment


ENV = [
    pytest.param("a {$X}", {"X": "1"}, ("a", "1"), id="dollar"),
    pytest.param("a {%X%}", {"X": "1"}, ("a", "1"), id="percent"),
    pytest.param("a pre{$X}post", {"X": "1"}, ("a", "pre1post"), id="inside-word"),
    pytest.param('a "{$X} y"', {"X": "1"}, ("a", "1 y"), id="inside-quotes"),
    pytest.param("a {$X}", {"X": "p q"}, ("a", "p q"), id="value-with-space-stays-one-token"),
    pytest.param("a {$MISSING} b", {}, ("a", "", "b"), id="missing-is-empty"),
    pytest.param("a {$X", {"X": "1"}, ("a", "{$X"), id="unclosed-reference-kept"),
    pytest.param("a {$}", {}, ("a", "{$}"), id="empty-name-kept"),
    pytest.param("a {$X}{$X}", {"X": "1"}, ("a", "11"), id="repeated"),
    pytest.param("a {$X}", {"X": "{$Y}", "Y": "2"}, ("a", "2"), id="value-is-rescanned"),
    pytest.param("{$NAME} x", {"NAME": "log"}, ("log", "x"), id="directive-name"),
]


@pytest.mark.parametrize("line, environ, expected", ENV)
def test_environment(line, environ, expected):
    """{$VAR} and {%VAR%} are replaced token by token from the given environment."""
    d = one(f". {{\n{line}\n}}\n", environ=environ).directives[0]
    assert (d.name,) + d.args == expected


def test_environment_defaults_to_os_environ(monkeypatch):
    """Without an explicit mapping, os.environ is used."""
    monkeypatch.setenv("KUBERNETAI_TEST_ZONE", "Cluster.Local")
    block = one("{$KUBERNETAI_TEST_ZONE} {\n}\n")
    assert block.keys[0].zone == "cluster.local."


def test_environment_key_that_is_empty_drops_block():
    """A block whose keys all expand to nothing is dropped, as CoreDNS does; an empty extra key is skipped."""
    text = "{$OFF} {\n whoami\n}\na.org {$EXTRA} {\n log\n}\n"
    assert shape(parse(text, environ={})) == [(["dns://a.org.:53"], (D("log"),))]
    assert len(parse(text, environ={"OFF": "b.org", "EXTRA": "c.org"})) == 2


# --------------------------------------------------------------------------
# Keys and zone normalisation


ZONES = [
    pytest.param(".", [("dns", ".", 53)], id="root"),
    pytest.param(".:53", [("dns", ".", 53)], id="root-port"),
    pytest.param("Example.ORG", [("dns", "example.org.", 53)], id="lowercase-fqdn"),
    pytest.param("example.org.", [("dns", "example.org.", 53)], id="already-fqdn"),
    pytest.param("example.org:1053", [("dns", "example.org.", 1053)], id="port"),
    pytest.param("dns://example.org:1053", [("dns", "example.org.", 1053)], id="dns-scheme"),
    pytest.param("DNS://example.org", [("dns", "example.org.", 53)], id="scheme-lowercased"),
    pytest.param("tls://example.org", [("tls", "example.org.", 853)], id="tls-default-port"),
    pytest.param("quic://example.org", [("quic", "example.org.", 853)], id="quic-default-port"),
    pytest.param("grpc://example.org", [("grpc", "example.org.", 443)], id="grpc-default-port"),
    pytest.param("https://example.org", [("https", "example.org.", 443)], id="https-default-port"),
    pytest.param("https3://example.org", [("https3", "example.org.", 443)], id="https3-default-port"),
    pytest.param("tls://.:5553", [("tls", ".", 5553)], id="tls-port"),
    pytest.param("10.0.0.0/8", [("dns", "10.in-addr.arpa.", 53)], id="cidr-8"),
    pytest.param("10.0.0.0/8:1053", [("dns", "10.in-addr.arpa.", 1053)], id="cidr-port"),
    pytest.param("192.168.1.0/24", [("dns", "1.168.192.in-addr.arpa.", 53)], id="cidr-24"),
    pytest.param("192.168.1.77/24", [("dns", "1.168.192.in-addr.arpa.", 53)], id="cidr-host-bits"),
    pytest.param("10.1.2.3/32", [("dns", "3.2.1.10.in-addr.arpa.", 53)], id="cidr-32"),
    pytest.param("0.0.0.0/0", [("dns", "in-addr.arpa.", 53)], id="cidr-0"),
    pytest.param(
        "10.0.0.0/15", [("dns", "0.10.in-addr.arpa.", 53), ("dns", "1.10.in-addr.arpa.", 53)], id="cidr-15-splits"
    ),
    pytest.param(
        "192.168.1.1/23",
        [("dns", "0.168.192.in-addr.arpa.", 53), ("dns", "1.168.192.in-addr.arpa.", 53)],
        id="cidr-23-splits",
    ),
    pytest.param(
        "10.129.60.0/22",
        [("dns", f"{i}.129.10.in-addr.arpa.", 53) for i in range(60, 64)],
        id="cidr-22-splits",
    ),
    pytest.param("2001:db8::/32", [("dns", "8.b.d.0.1.0.0.2.ip6.arpa.", 53)], id="ipv6-32"),
    pytest.param(
        "2001:db8::/31",
        [("dns", "8.b.d.0.1.0.0.2.ip6.arpa.", 53), ("dns", "9.b.d.0.1.0.0.2.ip6.arpa.", 53)],
        id="ipv6-31-splits",
    ),
    pytest.param(
        "2001:db8::/29",
        [("dns", f"{c}.b.d.0.1.0.0.2.ip6.arpa.", 53) for c in "89abcdef"],
        id="ipv6-29-splits",
    ),
    pytest.param(
        "2001:db8::/115",
        [("dns", f"{c}." + "0." * 20 + "8.b.d.0.1.0.0.2.ip6.arpa.", 53) for c in "01"],
        id="ipv6-115-splits",
    ),
    pytest.param("fd00::/8", [("dns", "d.f.ip6.arpa.", 53)], id="ipv6-8"),
    pytest.param("10.0.0.0/8.", [("dns", "10.0.0.0/8.", 53)], id="cidr-with-dot-is-a-name"),
    pytest.param("a,b", [("dns", "a,b.", 53)], id="inner-comma-is-part-of-name"),
    pytest.param("example.org:+53", [("dns", "example.org.", 53)], id="port-with-sign"),
]


@pytest.mark.parametrize("key, expected", ZONES)
def test_parse_key(key, expected):
    """Keys normalise (scheme, FQDN, default port, CIDR to reverse zones) as CoreDNS does."""
    assert [(z.scheme, z.zone, z.port) for z in parse_key(key)] == expected
    assert all(z.key == key for z in parse_key(key))


def test_cidr_17_expands_to_128_zones():
    """A /17 becomes the 128 /24 reverse zones it covers, as CoreDNS's cidr.Split does."""
    zones = [z.zone for z in parse_key("10.0.0.0/17")]
    assert zones == [f"{i}.0.10.in-addr.arpa." for i in range(128)]
    assert len(parse_key("10.9.3.0/18")) == 64


BAD_ZONES = [
    pytest.param(":1053", "zone is not a valid domain name", id="port-without-zone"),
    pytest.param("", "expecting data after last colon", id="empty"),
    pytest.param("example.org:", "expecting data after last colon", id="colon-at-end"),
    pytest.param("a..b", "zone is not a valid domain name: a..b", id="empty-label"),
    pytest.param(".example.org", "zone is not a valid domain name", id="leading-dot"),
    pytest.param("x" * 64 + ".org", "zone is not a valid domain name", id="label-too-long"),
    pytest.param(".".join(["abcdefgh"] * 29), "specified zone is too long", id="name-too-long"),
    pytest.param("::ffff:10.0.0.0/104", "invalid CIDR", id="ipv4-mapped-cidr"),
    pytest.param("0:0::ffff:b:f/115", "invalid CIDR", id="leading-zero-ipv6-cidr"),
    pytest.param("foo://example.org", "unknown scheme 'foo'", id="unknown-scheme"),
    pytest.param("example.org:70000", "port 70000 out of range", id="port-range"),
    pytest.param("cluster.local:nan", "port 'nan' is not a number", id="port-not-a-number"),
    pytest.param("cluster.local:0x35", "port '0x35' is not a number", id="port-in-hex"),
    pytest.param("[::1]:53", "'[::1]' is an address, not a zone", id="bracketed-address"),
    pytest.param("a:b:53", "zone 'a:b' holds a ':'", id="colon-inside-zone"),
    pytest.param("fd00::/8.", "port '/8.' is not a number", id="ipv6-cidr-with-dot"),
    pytest.param("clu\u202ester.local", "zone 'clu\\u202ester.local' holds U+202E (RIGHT-TO-LEFT OVERRIDE)",
                 id="bidi-override"),
    pytest.param("clu\u200bster.local", "zone 'clu\\u200bster.local' holds U+200B (ZERO WIDTH SPACE)",
                 id="zero-width-space"),
    pytest.param("a\u00adb.local", "holds U+00AD (SOFT HYPHEN)", id="soft-hyphen"),
    pytest.param("b\u00fccher.local", "holds U+00FC (LATIN SMALL LETTER U WITH DIAERESIS), not ASCII: "
                 "queries carry the IDNA form of a name; write xn--bcher-kva.local", id="non-ascii"),
    pytest.param("a b.local", "holds U+0020 (SPACE)", id="space"),
]


@pytest.mark.parametrize("key, message", BAD_ZONES)
def test_parse_key_errors(key, message):
    """Keys CoreDNS refuses raise ValueError with its wording."""
    with pytest.raises(ValueError) as e:
        parse_key(key)
    assert message in str(e.value)


def test_zone_address_equality_ignores_spelling():
    """Two keys naming the same server are equal whatever their spelling."""
    a, b = parse_key("Example.org")[0], parse_key("dns://example.org.:53")[0]
    assert a == b and hash(a) == hash(b)
    assert (a.port_given, b.port_given) == (False, True)
    assert str(a) == "dns://example.org.:53"


def test_duplicates_allowed_with_bind():
    """Blocks with bind (or view) may share zone and port; that check belongs to a later layer."""
    text = ". {\n bind 127.0.0.1\n}\n. {\n bind 127.0.0.2\n}\n"
    assert len(parse(text)) == 2


def test_same_zone_on_different_ports_or_schemes():
    """The same zone on another port or another transport is a different server."""
    assert len(parse(". {\n}\n.:1053 {\n}\ntls://. {\n}\n")) == 3


# --------------------------------------------------------------------------
# Snippets


def test_snippet_used_in_several_blocks():
    """A (name) block is a snippet, not a server block, and import splices it in."""
    text = "(common) {\n errors\n cache 30\n}\na.org {\n import common\n log\n}\nb.org {\n import common\n}\n"
    assert shape(parse(text)) == [
        (["dns://a.org.:53"], (D("errors"), D("cache", "30"), D("log"))),
        (["dns://b.org.:53"], (D("errors"), D("cache", "30"))),
    ]


def test_snippet_inside_nested_block():
    """import works on a line of a nested block and keeps the snippet's own line numbers."""
    text = "(opts) {\n pods insecure\n ttl 30\n}\n. {\n kubernetai cluster.local {\n  import opts\n  fallthrough\n }\n}\n"
    k = one(text).directives[0]
    assert tree(k.block) == (D("pods", "insecure"), D("ttl", "30"), D("fallthrough"))
    assert [d.line for d in k.block] == [2, 3, 8]


def test_snippet_with_nested_block_and_snippet_import():
    """A snippet may hold blocks and import another snippet."""
    text = (
        "(fwd) {\n forward . 1.1.1.1 {\n  max_concurrent 10\n }\n}\n"
        "(base) {\n errors\n import fwd\n}\n"
        ". {\n import base\n}\n"
    )
    assert tree(one(text).directives) == (D("errors"), D("forward", ".", "1.1.1.1", block=[D("max_concurrent", "10")]))


def test_snippet_holding_server_blocks():
    """A snippet imported at top level may hold whole server blocks."""
    text = "(servers) {\n a.org {\n  log\n }\n}\nimport servers\n"
    assert shape(parse(text)) == [(["dns://a.org.:53"], (D("log"),))]


def test_snippet_in_braceless_block():
    """A single brace-less server block may import a snippet on its own line."""
    text = "(s) {\n log\n}\nexample.org\nimport s\nerrors\n"
    assert shape(parse(text)) == [(["dns://example.org.:53"], (D("log"), D("errors")))]


def test_snippet_line_does_not_run_on():
    """Tokens spliced in by import never join the line before the import."""
    text = "(s) {\n log\n}\n. {\n\n\n ttl 30\n import s\n}\n"
    assert tree(one(text).directives) == (D("ttl", "30"), D("log"))


# --------------------------------------------------------------------------
# File imports


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_import_relative_to_importing_file(tmp_path):
    """Import paths are relative to the directory of the file that holds the import."""
    write(tmp_path / "conf" / "Corefile", ". {\n import sub/a.conf\n}\n")
    write(tmp_path / "conf" / "sub" / "a.conf", "log\nimport b.conf\n")
    write(tmp_path / "conf" / "sub" / "b.conf", "errors\n")
    blocks = parse_file(tmp_path / "conf" / "Corefile")
    assert tree(blocks[0].directives) == (D("log"), D("errors"))
    assert blocks[0].directives[1].filename == str(tmp_path / "conf" / "sub" / "b.conf")


def test_import_at_top_level(tmp_path):
    """A top-level import may bring whole server blocks."""
    write(tmp_path / "Corefile", "import zones/*.conf\n. {\n log\n}\n")
    write(tmp_path / "zones" / "b.conf", "b.org {\n whoami\n}\n")
    write(tmp_path / "zones" / "a.conf", "a.org {\n whoami\n}\n")
    blocks = parse_file(tmp_path / "Corefile")
    assert [b.keys[0].zone for b in blocks] == ["a.org.", "b.org.", "."]
    assert blocks[0].filename == str(tmp_path / "zones" / "a.conf")


def test_import_glob_matches_hidden_files_sorted(tmp_path):
    """Glob imports match as Go's filepath.Glob: sorted, dot files included."""
    write(tmp_path / "Corefile", ". {\n import d/*\n}\n")
    write(tmp_path / "d" / "b", "b\n")
    write(tmp_path / "d" / ".a", "a\n")
    write(tmp_path / "d" / "c", "c\n")
    assert [d.name for d in parse_file(tmp_path / "Corefile")[0].directives] == ["a", "b", "c"]


def test_import_glob_without_match_is_fine(tmp_path):
    """A glob that matches nothing imports nothing (CoreDNS only warns)."""
    write(tmp_path / "Corefile", ". {\n import nothing/*.conf\n log\n}\n")
    assert tree(parse_file(tmp_path / "Corefile")[0].directives) == (D("log"),)


def test_import_in_nested_block(tmp_path):
    """An import line inside a plugin's block splices the file's lines there."""
    write(tmp_path / "Corefile", ". {\n kubernetai cluster.local {\n  import k.conf\n }\n}\n")
    write(tmp_path / "k.conf", "pods verified\nfallthrough\n")
    k = parse_file(tmp_path / "Corefile")[0].directives[0]
    assert tree(k.block) == (D("pods", "verified"), D("fallthrough"))


def test_import_path_from_environment(tmp_path):
    """The import pattern is subject to env substitution."""
    write(tmp_path / "Corefile", ". {\n import {$DIR}/x.conf\n}\n")
    write(tmp_path / "d" / "x.conf", "log\n")
    blocks = parse_file(tmp_path / "Corefile", environ={"DIR": str(tmp_path / "d")})
    assert tree(blocks[0].directives) == (D("log"),)


def test_snippet_from_imported_file(tmp_path):
    """Snippets may be defined in an imported file and used after the import."""
    write(tmp_path / "Corefile", "import snippets.conf\n. {\n import common\n}\n")
    write(tmp_path / "snippets.conf", "(common) {\n errors\n}\n")
    assert tree(parse_file(tmp_path / "Corefile")[0].directives) == (D("errors"),)


def test_error_in_imported_file_names_that_file(tmp_path):
    """An error in an imported file reports that file and its line."""
    write(tmp_path / "Corefile", ". {\n import bad.conf\n}\n")
    write(tmp_path / "bad.conf", "log\nerrors }\n")
    with pytest.raises(CorefileError) as e:
        parse_file(tmp_path / "Corefile")
    assert str(e.value).startswith(f"{tmp_path / 'bad.conf'}:2: unexpected '}}'")
    assert (e.value.filename, e.value.line, e.value.token) == (str(tmp_path / "bad.conf"), 2, "}")


IMPORT_ERRORS = [
    pytest.param(
        {"Corefile": ". {\n log\n import missing/x.conf\n}\n"},
        "Corefile:3: file to import not found: 'missing/x.conf'",
        id="missing-file",
    ),
    pytest.param(
        {"Corefile": ". {\n import a.conf\n}\n", "a.conf": "import b.conf\n", "b.conf": "import a.conf\n"},
        "b.conf:1: import cycle: 'a.conf' is already being imported",
        id="cycle",
    ),
    pytest.param(
        {"Corefile": ". {\n import self.conf\n}\n", "self.conf": "log\nimport self.conf\n"},
        "self.conf:2: import cycle",
        id="self-import",
    ),
    pytest.param(
        {"Corefile": "import Corefile\n"},
        "Corefile:1: import cycle: 'Corefile'",
        id="corefile-imports-itself",
    ),
    pytest.param(
        {"Corefile": ". {\n import d/*\n}\n", "d/sub/x": "log\n"},
        "Corefile:2: could not import",
        id="glob-matches-directory",
    ),
    pytest.param(
        {"Corefile": ". {\n import */*.conf\n}\n"},
        "Corefile:2: glob pattern may only contain one wildcard",
        id="two-wildcards",
    ),
]


@pytest.mark.parametrize("files, message", IMPORT_ERRORS)
def test_import_errors(tmp_path, monkeypatch, files, message):
    """Import mistakes raise CorefileError at the import's file and line."""
    for name, text in files.items():
        write(tmp_path / name, text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CorefileError) as e:
        parse_file("Corefile")
    assert message in str(e.value)


# --------------------------------------------------------------------------
# Errors


ERRORS = [
    pytest.param(". {\n log\n", "Corefile:1: unclosed '{'", id="unclosed-server-block"),
    pytest.param(". {\n a {\n  b\n}\n", "Corefile:1: unclosed '{'", id="unclosed-nested-block"),
    pytest.param(". {\n log\n}\n}\n", "Corefile:4: unexpected '}'", id="stray-close"),
    pytest.param(". { log }\n", "Corefile:1: unexpected '}'", id="server-close-on-directive-line"),
    pytest.param(". {\n a { b } c\n}\n", "Corefile:2: unexpected 'c' after '}'", id="token-after-nested-close"),
    pytest.param(". {\n a\n {\n }\n}\n", "Corefile:3: unexpected '{'", id="brace-on-own-line"),
    pytest.param("example.org\nlog\n}\n", "Corefile:3: unexpected '}'", id="close-without-open"),
    pytest.param(". {\n a \"b c\n}\n", "Corefile:2: unterminated quote", id="unterminated-quote"),
    pytest.param("{\n log\n}\n", "Corefile:1: server block has no keys", id="no-keys"),
    pytest.param("a.org, {\n}\n", "Corefile:1: expected another address but found '{'", id="comma-before-brace"),
    pytest.param("a.org,\n", "Corefile:1: unexpected end of file after 'a.org,'", id="comma-at-eof"),
    pytest.param("a..b {\n}\n", "Corefile:1: invalid server block key 'a..b'", id="invalid-key"),
    pytest.param(":1053 {\n}\n", "Corefile:1: invalid server block key ':1053'", id="port-only-key"),
    pytest.param(
        "a.org {\n}\n\nb.org A.ORG. {\n}\n",
        "Corefile:4: key 'A.ORG.': cannot serve dns://a.org.:53 - it is already defined at Corefile:1",
        id="duplicate-key",
    ),
    pytest.param(". .:53 {\n}\n", "Corefile:1: key '.:53': cannot serve dns://.:53 - it is already defined", id="duplicate-in-block"),
    pytest.param(
        "10.0.0.0/17 {\n}\n10.0.5.0/24 {\n}\n",
        "Corefile:3: key '10.0.5.0/24': cannot serve dns://5.0.10.in-addr.arpa.:53",
        id="duplicate-via-cidr",
    ),
    pytest.param(". {\n import nosuch\n}\n", "Corefile:2: unknown snippet 'nosuch' in import", id="unknown-snippet"),
    pytest.param(
        ". {\n import later\n}\n(later) {\n log\n}\n",
        "Corefile:2: unknown snippet 'later' in import",
        id="snippet-used-before-definition",
    ),
    pytest.param(
        "(s) {\n a\n}\n(s) {\n b\n}\n", "Corefile:4: redeclaration of previously declared snippet 's'", id="snippet-redeclared"
    ),
    pytest.param("(s) {\n log\n import s\n}\n", "Corefile:3: import cycle: snippet 's' imports itself", id="snippet-self-import"),
    pytest.param(
        "(a) {\n import b\n}\n(b) {\n import a\n}\n. {\n import a\n}\n",
        "Corefile:5: import cycle: snippet 'a' is already being imported (",
        id="snippet-cycle",
    ),
    pytest.param("(s)\nlog\n", "Corefile:2: snippet '(s)' must be followed by '{'", id="snippet-without-brace"),
    pytest.param("(s) {\n log\n", "Corefile:1: unclosed '{' of snippet '(s)'", id="snippet-unclosed"),
    pytest.param(". {\n import\n}\n", "Corefile:2: 'import' needs a file", id="import-without-argument"),
    pytest.param(". {\n import a b\n}\n", "Corefile:2: unexpected 'b': import takes only one argument", id="import-two-arguments"),
    pytest.param(". {\n import {$NOPE}\n}\n", "Corefile:2: import '{$NOPE}' requires a non-empty file path", id="import-empty-env"),
    pytest.param(". {\n a {$LOOP}\n}\n", "Corefile:2: environment variable substitution does not terminate", id="env-loop"),
    pytest.param(". {\n a {$DOUBLE}\n}\n",
                 "Corefile:2: environment variable substitution makes a token longer than 65,536 characters",
                 id="env-doubling"),
    pytest.param(". {\n a {$BIG}{$BIG}\n}\n", "Corefile:2: environment variable substitution makes a token longer",
                 id="env-too-long"),
    pytest.param("cluster.local:nan {\n}\n", "Corefile:1: invalid server block key 'cluster.local:nan': "
                 "port 'nan' is not a number", id="key-port-not-a-number"),
    pytest.param("a.org {\n}\nclu\u202ester.local {\n}\n", "Corefile:3: invalid server block key "
                 "'clu\\u202ester.local': zone 'clu\\u202ester.local' holds U+202E", id="key-bidi-override"),
]


@pytest.mark.parametrize("text, message", ERRORS)
def test_errors(text, message):
    """Malformed Corefiles raise CorefileError naming file, line and token."""
    with pytest.raises(CorefileError) as e:
        parse(text, environ={"LOOP": "{$LOOP}", "DOUBLE": "{$DOUBLE}{$DOUBLE}", "BIG": "x" * 40_000})
    assert message in str(e.value)
    assert str(e.value) == f"{e.value.filename}:{e.value.line}: {e.value.message}"


def test_error_attributes():
    """CorefileError carries filename, line, token and message separately."""
    with pytest.raises(CorefileError) as e:
        parse("a.org {\n log\n}\n}\n", filename="my.Corefile")
    err = e.value
    assert (err.filename, err.line, err.token) == ("my.Corefile", 4, "}")
    assert str(err) == "my.Corefile:4: unexpected '}' (no server block is open here)"


def test_parse_file_missing(tmp_path):
    """A Corefile that cannot be read is a CorefileError too."""
    with pytest.raises(CorefileError, match="cannot read Corefile"):
        parse_file(tmp_path / "nope")


# --------------------------------------------------------------------------
# Limits: whatever a Corefile (or what it imports) holds, reading and
# parsing it ends quickly with a located CorefileError, never a
# RecursionError, a hang or memory exhaustion.


def nested(levels: int, inner: str = "log") -> str:
    """A directive line opening `levels` blocks one inside another."""
    return "".join(f"{' ' * i}a{i} {{\n" for i in range(levels)) + f"{inner}\n" + "}\n" * levels


def test_deep_nesting_is_a_located_error():
    """600 nested blocks (past Python's recursion limit) are a CorefileError at the first '{' too deep."""
    text = ". {\n" + nested(600) + "}\n"
    with pytest.raises(CorefileError) as e:
        parse(text)
    assert (e.value.line, e.value.token) == (MAX_NESTING + 1, "{")
    assert str(e.value) == f"Corefile:{MAX_NESTING + 1}: blocks nested too deeply: more than {MAX_NESTING} levels of '{{'"


def test_nesting_up_to_the_limit_parses():
    """Exactly MAX_NESTING braces open at once (the server block's included) is fine."""
    block = one(". {\n" + nested(MAX_NESTING - 1) + "}\n")
    depth, directive = 1, block.directives[0]
    while directive.block:
        depth, directive = depth + 1, directive.block[0]
    assert (depth, directive.name) == (MAX_NESTING, "log")


def test_deep_nesting_inside_a_snippet_is_refused_where_it_is_written():
    """A snippet body nested too deeply is refused at its definition, used or not."""
    with pytest.raises(CorefileError) as e:
        parse("(deep) {\n" + nested(100) + "}\n. {\n log\n}\n")
    assert (e.value.line, e.value.token) == (MAX_NESTING + 1, "{")
    assert "blocks nested too deeply" in e.value.message


def test_nesting_built_up_through_snippets_is_refused():
    """Snippets that each wrap the previous one in three blocks add up; the limit counts the total."""
    text = "(s0) {\n log\n}\n"
    for i in range(1, 13):
        text += f"(s{i}) {{\n a {{\n  b {{\n   c {{\n    import s{i - 1}\n   }}\n  }}\n }}\n}}\n"
    with pytest.raises(CorefileError, match="blocks nested too deeply"):
        parse(text + ". {\n import s12\n}\n")


def test_imports_of_imports_nested_too_deeply(tmp_path):
    """A chain of 40 files, each importing the next, stops at MAX_IMPORT_DEPTH with the file and line."""
    for i in range(40):
        write(tmp_path / f"f{i}.conf", f"log\nimport f{i + 1}.conf\n")
    write(tmp_path / "f40.conf", "errors\n")
    write(tmp_path / "Corefile", ". {\n import f0.conf\n}\n")
    with pytest.raises(CorefileError) as e:
        parse_file(tmp_path / "Corefile")
    assert e.value.filename == str(tmp_path / f"f{MAX_IMPORT_DEPTH - 1}.conf")
    assert (e.value.line, e.value.token) == (2, f"f{MAX_IMPORT_DEPTH}.conf")
    assert f"imports nested too deeply: more than {MAX_IMPORT_DEPTH} imports" in e.value.message


def test_nesting_built_up_through_imported_files_is_refused(tmp_path):
    """Blocks opened in a file and continued in the files it imports count together."""
    for i in range(12):
        write(tmp_path / f"f{i}.conf", f"a {{\n b {{\n  c {{\n   import f{i + 1}.conf\n  }}\n }}\n}}\n")
    write(tmp_path / "f12.conf", "log\n")
    write(tmp_path / "Corefile", ". {\n import f0.conf\n}\n")
    with pytest.raises(CorefileError, match="blocks nested too deeply") as e:
        parse_file(tmp_path / "Corefile")
    assert e.value.filename.startswith(str(tmp_path / "f"))


def test_snippets_multiplying_at_each_level_hit_the_token_limit():
    """Ten snippets each importing the previous four times (a million copies) stop at MAX_TOKENS, quickly."""
    text = "(s0) {\n log\n}\n"
    for i in range(1, 11):
        text += f"(s{i}) {{\n" + f" import s{i - 1}\n" * 4 + "}\n"
    start = time.perf_counter()
    with pytest.raises(CorefileError, match=f"more than {MAX_TOKENS:,} once imports and snippets"):
        parse(text + ". {\n import s10\n}\n")
    assert time.perf_counter() - start < 30  # generous: the point is that it ends


def test_token_limit_counts_every_expansion():
    """A snippet of 1,000 tokens imported 101 times passes MAX_TOKENS at the import that crosses it."""
    body = "".join(f" t{i} x\n" for i in range(500))
    imports = " import big\n" * 101
    text = f"(big) {{\n{body}}}\n. {{\n{imports}}}\n"
    with pytest.raises(CorefileError) as e:
        parse(text)
    assert "too many tokens" in e.value.message
    assert e.value.token == "big"
    # 1,208 tokens as written (the snippet's 1,000 among them); each import adds 1,000.
    crossing = -(-(MAX_TOKENS + 1 - 1208) // 1000)
    assert e.value.line == 503 + crossing


def test_control_characters_refuse_the_file_without_quoting_it(tmp_path):
    """A file holding a control character (a binary file) is refused; the message names the character only."""
    path = write(tmp_path / "Corefile", ". {\n log\n}\n")
    path.write_bytes(b". {\n log\n x\x1b[2Jsecret-value\n}\n")
    with pytest.raises(CorefileError) as e:
        parse_file(path)
    assert str(e.value) == (f"{path}:3: control character U+001B in the file: a Corefile is text "
                            "(is this the right file?)")


def test_import_of_proc_environ_does_not_print_the_environment(tmp_path, monkeypatch):
    """`import /proc/self/environ` is refused with no byte of the environment in the message."""
    monkeypatch.setenv("KUBERNETAI_TEST_SECRET", "s3cr3t-v4lue")
    write(tmp_path / "Corefile", ". {\n import /proc/self/environ\n}\n")
    with pytest.raises(CorefileError) as e:
        parse_file(tmp_path / "Corefile")
    assert "s3cr3t" not in str(e.value) and "KUBERNETAI_TEST_SECRET" not in str(e.value)
    assert str(e.value).startswith("/proc/self/environ:1: control character U+0000")


def test_long_token_is_quoted_as_a_short_excerpt(tmp_path):
    """An imported token file is quoted by its first 40 characters at most, whatever the error."""
    secret = "eyJhbGciOiJSUzI1NiIsImtpZCI6IkFCQyJ9." + "s" * 900
    write(tmp_path / "token", secret + "\n")
    write(tmp_path / "Corefile", "import token\n")
    with pytest.raises(CorefileError) as e:
        parse_file(tmp_path / "Corefile")
    assert e.value.token == secret
    assert "s" * 50 not in str(e.value)
    assert f"'{secret[:40]}...({len(secret) - 40:,} more characters)'" in str(e.value)


def test_environment_value_with_escape_sequences_is_printed_escaped():
    """Control characters from the environment reach a message escaped, never raw."""
    with pytest.raises(CorefileError) as e:
        parse("{$KEY} {\n}\n", environ={"KEY": "a\x1b[31m\n[ERROR] forged"})
    assert "\x1b" not in str(e.value) and "\n" not in str(e.value)
    assert "\\x1b[31m" in str(e.value)


def test_file_larger_than_the_limit_is_refused_unread(tmp_path):
    """A Corefile of more than MAX_FILE_BYTES is refused by its size (a sparse file: nothing is read)."""
    path = tmp_path / "Corefile"
    with path.open("wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(CorefileError) as e:
        parse_file(path)
    assert str(e.value) == f"{path}:0: cannot read Corefile: too large: {MAX_FILE_BYTES + 1:,} bytes (at most {MAX_FILE_BYTES:,})"


def test_imports_larger_than_the_total_limit_are_refused(tmp_path):
    """Files that are each allowed but together pass MAX_TOTAL_BYTES are refused at the import."""
    comment = ("#" + "x" * 1022 + "\n").encode() * (MAX_FILE_BYTES // 1024)
    for i in range(MAX_TOTAL_BYTES // MAX_FILE_BYTES + 1):
        (tmp_path / "d").mkdir(exist_ok=True)
        (tmp_path / "d" / f"{i:02d}.conf").write_bytes(comment)
    write(tmp_path / "Corefile", ". {\n import d/*.conf\n}\n")
    with pytest.raises(CorefileError) as e:
        parse_file(tmp_path / "Corefile")
    assert (e.value.line, e.value.token) == (2, "d/*.conf")
    assert f"hold more than {MAX_TOTAL_BYTES:,} bytes" in e.value.message


def test_glob_matching_too_many_files_is_refused(tmp_path):
    """A glob matching more than MAX_IMPORTED_FILES files is refused before any is read."""
    (tmp_path / "d").mkdir()
    for i in range(MAX_IMPORTED_FILES + 50):
        (tmp_path / "d" / f"{i:04d}.conf").write_text("log\n")
    write(tmp_path / "Corefile", ". {\n import d/*.conf\n}\n")
    with pytest.raises(CorefileError) as e:
        parse_file(tmp_path / "Corefile")
    assert str(e.value) == (f"{tmp_path / 'Corefile'}:2: cannot import 'd/*.conf': it matches more than "
                            f"{MAX_IMPORTED_FILES} file(s); a Corefile may import {MAX_IMPORTED_FILES} files in all")


def test_glob_matching_up_to_the_limit_is_fine(tmp_path):
    """MAX_IMPORTED_FILES files matched by one glob are all imported, in order."""
    (tmp_path / "d").mkdir()
    for i in range(MAX_IMPORTED_FILES):
        (tmp_path / "d" / f"{i:04d}.conf").write_text(f"z{i:04d}.org {{\n}}\n")
    write(tmp_path / "Corefile", "import d/*.conf\n")
    blocks = parse_file(tmp_path / "Corefile")
    assert [b.keys[0].zone for b in blocks] == [f"z{i:04d}.org." for i in range(MAX_IMPORTED_FILES)]


@pytest.mark.parametrize("target, kind", [
    pytest.param("/dev/null", "a character device", id="device"),
    pytest.param("fifo", "a FIFO", id="fifo"),
    pytest.param("sub", "a directory", id="directory"),
])
def test_import_of_something_not_a_regular_file(tmp_path, target, kind):
    """Only regular files are imported; a device, a FIFO or a directory is refused without reading it."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "Corefile", f". {{\n import {target}\n}}\n")
    with pytest.raises(CorefileError) as e:
        parse_file(tmp_path / "Corefile")
    path = target if target.startswith("/") else str(tmp_path / target)
    assert str(e.value) == f"{tmp_path / 'Corefile'}:2: could not import {path!r}: not a regular file ({kind})"


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_corefile_that_is_not_a_regular_file(tmp_path, kind):
    """The Corefile itself must be a regular file too: a FIFO is refused at once, not waited on."""
    if kind == "fifo":
        path = tmp_path / "Corefile"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    with pytest.raises(CorefileError, match=r"cannot read Corefile: not a regular file \(a (FIFO|character device)\)"):
        parse_file(path)


def test_a_fifo_swapped_in_after_the_check_does_not_block(tmp_path):
    """Opening for a read never waits for a FIFO writer, and what it opened is checked again."""
    os.mkfifo(tmp_path / "fifo")
    outcome: list[BaseException | int] = []

    def open_it() -> None:
        try:
            outcome.append(open_regular(str(tmp_path / "fifo")))
        except BaseException as error:  # noqa: BLE001 - the outcome is the assertion
            outcome.append(error)
    worker = threading.Thread(target=open_it, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "opening a FIFO blocked"
    assert isinstance(outcome[0], Refused) and str(outcome[0]) == "not a regular file (a FIFO)"


# Pieces that build every nesting construct: blocks, snippets, imports, quotes, environment.
_PIECES = ["{", "}", "\n", " ", "import", "s", "(s)", "t", "(t)", "a", ".", "a.org", "\"", "#",
           "{$X}", "{$Y}", ":", "nan", "*", "\u202e", "\x1b"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_PIECES), max_size=400))
def test_any_text_parses_or_is_a_corefile_error(tmp_path_factory, pieces):
    """Whatever the text (here: random mixes of every nesting construct), parse returns or raises
    CorefileError: never RecursionError, MemoryError or anything else, and each message is one line."""
    directory = tmp_path_factory.getbasetemp()
    text = " ".join(pieces)
    try:
        parse(text, str(directory / "Corefile"), environ={"X": "{$X}{$X}", "Y": "import s"})
    except CorefileError as error:
        assert "\n" not in str(error) and "\x1b" not in str(error)


_LINES = st.sampled_from(["log", "import s", "import t", "a b", "{$X} c", "import {$Y}", "x \"q\""])
_BLOCKS = st.recursive(_LINES, lambda inner: st.lists(inner, min_size=1, max_size=3).map(
    lambda lines: "a {\n" + "\n".join(lines) + "\n}"), max_leaves=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snippet=_BLOCKS, body=_BLOCKS, depth=st.integers(0, 700), wrap=st.sampled_from(["body", "snippet"]))
def test_nested_structures_parse_or_are_a_corefile_error(tmp_path_factory, snippet, body, depth, wrap):
    """Blocks nested to any depth, in a server block or a snippet that imports another: a result or a
    CorefileError, never a RecursionError."""
    opened, closed = "a {\n" * depth, "\n}" * depth
    if wrap == "body":
        body = opened + body + closed
    else:
        snippet = opened + snippet + closed
    text = f"(t) {{\n log\n}}\n(s) {{\n{snippet}\n}}\n. {{\n{body}\n}}\n"
    directory = tmp_path_factory.getbasetemp()
    try:
        parse(text, str(directory / "Corefile"), environ={"X": "{$X}{$X}", "Y": "s"})
    except CorefileError as error:
        assert "\n" not in str(error)


def test_text_larger_than_a_file_may_be_is_refused():
    """Corefile text handed to parse() directly is held to the size a file may have."""
    with pytest.raises(CorefileError) as e:
        parse("# " + "x" * MAX_FILE_BYTES + "\n")
    assert str(e.value) == f"Corefile:0: the Corefile is too large: {MAX_FILE_BYTES + 3:,} characters (at most {MAX_FILE_BYTES:,})"


def test_comments_cost_one_match_per_run(tmp_path):
    """Eight imported files of a MiB of one-character comment lines (4 million lines) parse quickly:
    white space and comments are not counted as tokens, so they must not cost one match per line."""
    (tmp_path / "d").mkdir()
    for i in range(MAX_TOTAL_BYTES // MAX_FILE_BYTES - 1):
        (tmp_path / "d" / f"{i}.conf").write_bytes(b"#\n" * (MAX_FILE_BYTES // 2))
    write(tmp_path / "Corefile", ". {\n import d/*.conf\n log\n}\n")
    start = time.perf_counter()
    assert tree(parse_file(tmp_path / "Corefile")[0].directives) == (D("log"),)
    assert time.perf_counter() - start < 30  # generous: one match per line took minutes


def test_the_package_knows_nothing_of_dns_answers():
    """Reading a Corefile loads no DNS machinery: no Twisted, no request path, no plugin."""
    code = ("import sys, kubernetai.corefile\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'twisted'"
            " or m.split('.')[:2] in (['kubernetai', 'core'], ['kubernetai', 'app'], ['kubernetai', 'plugins'])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
