"""The bind directive: addresses, interface names (the loopback interface) and `except`."""

from __future__ import annotations

import socket

import pytest

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import CorefileError, parse
from kubernetai.plugins.bind import interfaces
from kubernetai.plugins.bind.setup import BindDirective


def bound(body: str) -> list[str]:
    """The addresses the bind lines of ``. { body }`` give (line 2 is body's first)."""
    (block,) = parse(f". {{\n{body}\n}}\n", "Corefile")
    builder = BlockBuilder(block, (".",))
    for directive in block.directives:
        BindDirective().setup(directive, builder)
    return builder.bind_addresses


def loopback() -> str:
    """The name of the interface holding 127.0.0.1 (``lo`` on Linux), or skip."""
    for name in sorted(interfaces.interface_names()):
        if "127.0.0.1" in interfaces.addresses_of(name):
            return name
    pytest.skip("no interface with 127.0.0.1 found (not Linux?)")


def test_interface_stands_for_its_addresses() -> None:
    """`bind lo` is every address of lo: IPv4 first, then IPv6 (if the host has ::1)."""
    name = loopback()
    addresses = bound(f"bind {name}")
    assert addresses[0] == "127.0.0.1"
    assert addresses == interfaces.addresses_of(name)


def test_interface_addresses_match_the_kernel() -> None:
    """Every address listed for the loopback interface can be bound (it is the host's)."""
    for address in interfaces.addresses_of(loopback()):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))


def test_except_leaves_out_addresses() -> None:
    """`except` removes addresses (or an interface's) from its own bind line."""
    name = loopback()
    others = [a for a in interfaces.addresses_of(name) if a != "127.0.0.1"]
    assert bound(f"bind {name} {{\n    except 127.0.0.1\n}}") == others
    assert bound(f"bind {name} 127.0.0.2 {{\n    except {name}\n}}") == ["127.0.0.2"]


def test_except_is_per_line_and_the_last_wins() -> None:
    """An except applies to its own bind line; a second except line replaces the first."""
    assert bound("bind 127.0.0.1 127.0.0.2 {\n    except 127.0.0.1\n}\nbind 127.0.0.1") == [
        "127.0.0.2", "127.0.0.1"]
    assert bound("bind 127.0.0.1 127.0.0.2 {\n    except 127.0.0.1\n    except 127.0.0.2\n}"
                 ) == ["127.0.0.1"]


def test_addresses_are_canonical() -> None:
    """Addresses are compared in canonical form, in except too."""
    assert bound("bind 0:0::1 127.0.0.1 {\n    except ::1\n}") == ["127.0.0.1"]


@pytest.mark.parametrize("body, line, token, message", [
    ("bind no-such-iface0", 2, "no-such-iface0",
     "bind: not a valid IP address or interface name: 'no-such-iface0'"),
    ("bind 10.0.0.0/8", 2, "10.0.0.0/8",
     "bind: not a valid IP address or interface name: '10.0.0.0/8'"),
    ("bind 127.0.0.1 {\n    except\n}", 3, "except",
     "bind: at least one address or interface must be given to except subdirective"),
    ("bind 127.0.0.1 {\n    except nope0\n}", 3, "nope0",
     "bind: not a valid IP address or interface name: 'nope0'"),
    ("bind 127.0.0.1 {\n    only 127.0.0.1\n}", 3, "only", "bind: invalid option 'only'"),
])
def test_bind_errors(body: str, line: int, token: str, message: str) -> None:
    """Mistakes name the line and token, in CoreDNS's words (prefixed "bind:")."""
    with pytest.raises(CorefileError) as info:
        bound(body)
    assert (info.value.line, info.value.token, info.value.message) == (line, token, message)
