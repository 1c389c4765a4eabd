"""The server's own addresses for ns.dns.<zone>: bound ones or the host's, never loopback."""

from __future__ import annotations

import ipaddress

import pytest

from kubernetai.pkg.localaddrs import interface_addresses, server_addresses, usable


@pytest.mark.parametrize("given, expected", [
    (["127.0.0.1", "10.0.0.5"], ("10.0.0.5",)),
    (["::1", "fe80::1%eth0", "fd00::2"], ("fd00::2",)),
    (["0.0.0.0", "10.0.0.5", "10.0.0.5"], ("10.0.0.5",)),
    ([], ()),
])
def test_usable_drops_loopback_link_local_and_duplicates(given, expected):
    """Loopback, link-local and unspecified addresses cannot name this server to others."""
    assert usable(given) == expected


def test_interface_addresses_have_no_loopback():
    """The host's interface addresses are real addresses, loopback left out."""
    for address in interface_addresses():
        parsed = ipaddress.ip_address(address)
        assert not parsed.is_loopback and not parsed.is_link_local


def test_bind_wins_over_interfaces():
    """With bind, only the bound (non-loopback) addresses count, as CoreDNS's boundIPs."""
    assert server_addresses(["10.9.8.7", "127.0.0.1"]) == ("10.9.8.7",)
    assert server_addresses(["127.0.0.1"]) == ()
    assert server_addresses([]) == interface_addresses()
