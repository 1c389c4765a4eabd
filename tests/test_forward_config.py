"""`forward`'s directive: what it reads, its defaults, and CoreDNS's errors, located."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubernetai.core.registry import BlockBuilder, Registry
from kubernetai.corefile import CorefileError, parse
from kubernetai.plugins.forward.config import ForwardConfig, Upstream, parse_forward
from kubernetai.plugins.forward.handler import ForwardHandler


def _config(text: str) -> ForwardConfig:
    (block,) = parse(text, "Corefile")
    (directive,) = [d for d in block.directives if d.name == "forward"]
    return parse_forward(directive)


def _set_up(text: str) -> BlockBuilder:
    (block,) = parse(text, "Corefile")
    return Registry().set_up_block(block, BlockBuilder(block, (".",)))


def test_defaults() -> None:
    config = _config(".:53 {\n    forward . 10.0.0.1\n}\n")
    assert config.upstreams == [Upstream("dns", "10.0.0.1", 53)]
    assert (config.from_zone, config.policy, config.max_fails, config.expire,
            config.read_timeout, config.hc_interval, config.hc_recursion,
            config.hc_domain, config.max_concurrent) == (".", "random", 2, 10.0, 2.0, 0.5,
                                                          True, ".", 0)


def test_every_option() -> None:
    config = _config(""".:53 {
    forward Example.ORG dns://10.0.0.1:5353 tls://[2001:db8::1] tls://10.0.0.2%dns.example:8853 {
        except a.example.org B.example.org
        force_tcp
        prefer_udp
        expire 30s
        max_age 1m
        max_idle_conns 4
        read_timeout 3s
        max_fails 5
        max_connect_attempts 3
        policy round_robin
        health_check 2s no_rec domain Health.Example.
        max_concurrent 1000
        next NXDOMAIN servfail
        next_on_nodata
        failfast_all_unhealthy_upstreams
        failover SERVFAIL REFUSED
        source_address 127.0.0.1
    }
}
""")
    assert config.from_zone == "example.org."
    assert config.upstreams == [Upstream("dns", "10.0.0.1", 5353),
                                Upstream("tls", "2001:db8::1", 853),
                                Upstream("tls", "10.0.0.2", 8853, "dns.example")]
    assert [u.label for u in config.upstreams] == ["10.0.0.1:5353", "[2001:db8::1]:853",
                                                   "10.0.0.2:8853"]
    assert config.ignored == ["a.example.org.", "b.example.org."]
    assert config.force_tcp and config.prefer_udp and config.next_on_nodata and config.failfast
    assert (config.expire, config.max_age, config.max_idle_conns, config.read_timeout) == \
        (30.0, 60.0, 4, 3.0)
    assert (config.max_fails, config.max_connect_attempts, config.policy) == \
        (5, 3, "round_robin")
    assert (config.hc_interval, config.hc_recursion, config.hc_domain) == \
        (2.0, False, "health.example.")
    assert config.max_concurrent == 1000 and config.next_rcodes == [3, 2]
    assert config.failover_rcodes == [2, 5] and config.source_address == "127.0.0.1"


def test_resolv_conf_path(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# a comment\nsearch svc.cluster.local\nnameserver 10.0.0.10\n"
                      "options ndots:5\nnameserver ::1\nnameserver 10.0.0.10\n")
    config = _config(f".:53 {{\n    forward . {resolv} 10.0.0.11\n}}\n")
    assert [u.label for u in config.upstreams] == ["10.0.0.10:53", "[::1]:53", "10.0.0.11:53"]
    builder = _set_up(f".:53 {{\n    forward . {resolv}\n}}\n")
    (handler,) = [s.handler for s in builder.stages if isinstance(s.handler, ForwardHandler)]
    assert [p.label for p in handler.proxies] == ["10.0.0.10:53", "[::1]:53"]


def test_at_most_15_upstreams(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("".join(f"nameserver 10.0.0.{i}\n" for i in range(1, 15)))
    _config(f".:53 {{\n    forward . {resolv} 10.1.0.1\n}}\n")
    with pytest.raises(CorefileError) as info:
        _config(f".:53 {{\n    forward . {resolv} 10.1.0.1 10.1.0.2\n}}\n")
    assert info.value.message == "plugin/forward: more than 15 TOs configured: 16"
    assert info.value.line == 2


def test_next_links_consecutive_forwards() -> None:
    builder = _set_up(".:53 {\n    forward example.org 10.0.0.1\n    forward . 10.0.0.2\n"
                      "    whoami\n}\n")
    stages = [s for s in builder.ordered()]
    assert [s.name for s in stages] == ["forward", "forward", "whoami"]
    assert stages[0].handler.next_is_forward and not stages[1].handler.next_is_forward
    assert len(builder.process_services) == 2


@pytest.mark.parametrize("body,line,token,message", [
    ("forward", 2, "forward", "Wrong argument count or unexpected line ending after 'forward'"),
    ("forward .", 2, ".", "Wrong argument count or unexpected line ending after '.'"),
    ("forward . foo.invalid/nothing", 2, "foo.invalid/nothing",
     'not an IP address or file "foo.invalid/nothing"'),
    ("forward . unix:///run/dns.sock", 2, "unix:///run/dns.sock",
     "'unix' is not supported as a destination protocol in forward"),
    ("forward . https://10.0.0.1", 2, "https://10.0.0.1",
     "'https' is not supported as a destination protocol in forward: https://10.0.0.1:443"),
    ("forward . tls://10.0.0.1%a.example {\n tls_servername b.example\n}",
     2, "tls://10.0.0.1%a.example",
     "both forward ('b.example') and proxy level ('a.example') TLS servernames"),
    ("forward . 10.0.0.1 {\n except\n}", 3, "except",
     "Wrong argument count or unexpected line ending after 'except'"),
    ("forward . 10.0.0.1 {\n max_fails -1\n}", 3, "-1",
     'strconv.ParseUint: parsing "-1": invalid syntax'),
    ("forward . 10.0.0.1 {\n max_fails 2 3\n}", 3, "3", "unknown property '3'"),
    ("forward . 10.0.0.1 {\n health_check 1x\n}", 3, "1x", 'time: unknown unit "x" in duration "1x"'),
    ("forward . 10.0.0.1 {\n health_check -1s\n}", 3, "-1s",
     "health_check can't be negative: -1000000000"),
    ("forward . 10.0.0.1 {\n health_check 1s fast\n}", 3, "fast",
     "health_check: unknown option fast"),
    ("forward . 10.0.0.1 {\n force_tcp yes\n}", 3, "yes",
     "Wrong argument count or unexpected line ending after 'yes'"),
    ("forward . 10.0.0.1 {\n tls a b c d\n}", 3, "d",
     "Wrong argument count or unexpected line ending after 'd'"),
    ("forward . 10.0.0.1 {\n expire -1s\n}", 3, "-1s", "expire can't be negative: -1s"),
    ("forward . 10.0.0.1 {\n read_timeout 0s\n}", 3, "0s", "read_timeout must be positive: 0s"),
    ("forward . 10.0.0.1 {\n policy fastest\n}", 3, "fastest", "unknown policy 'fastest'"),
    ("forward . 10.0.0.1 {\n max_concurrent -5\n}", 3, "-5",
     "max_concurrent can't be negative: -5"),
    ("forward . 10.0.0.1 {\n max_concurrent lots\n}", 3, "lots",
     'strconv.Atoi: parsing "lots": invalid syntax'),
    ("forward . 10.0.0.1 {\n next NOPE\n}", 3, "NOPE", "NOPE is not a valid rcode"),
    ("forward . 10.0.0.1 {\n failover NOERROR\n}", 3, "NOERROR",
     "NoError cannot be used in failover"),
    ("forward . 10.0.0.1 {\n source_address here\n}", 3, "here", "invalid IP address: here"),
    ("forward . 10.0.0.1 {\n expire 10s\n max_age 5s\n}", 2, None,
     "max_age (5s) must not be less than expire (10s)"),
    ("forward . 10.0.0.1 {\n frobnicate\n}", 3, "frobnicate", "unknown property 'frobnicate'"),
    ("forward . tls://10.0.0.1 {\n tls /nonexistent/ca.pem\n}", 3, "tls",
     "error reading /nonexistent/ca.pem: open /nonexistent/ca.pem: no such file or directory"),
])
def test_errors_name_file_line_and_token(body: str, line: int, token: str | None,
                                         message: str) -> None:
    with pytest.raises(CorefileError) as info:
        _set_up(f".:53 {{\n    {body}\n}}\n")
    error = info.value
    assert error.filename == "Corefile" and error.line == line and error.token == token
    assert error.message.startswith("plugin/forward: ")
    assert message in error.message
