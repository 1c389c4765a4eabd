"""Server block keys: ``[SCHEME://]ZONE[:PORT]`` to :class:`ZoneAddress` values.

A key decides which queries a server block answers, so it is read exactly
as CoreDNS reads one (``core/dnsserver/register.go``, ``plugin/normalize.go``,
``plugin/pkg/cidr``, ``plugin/pkg/parse/transport.go`` and miekg/dns's
name checks): the same default ports, the same reverse zones for a CIDR,
the same leniency about what a domain name is.  It is stricter only where
CoreDNS would keep a zone no query can ever match, and then the message
says what to write instead (an IDNA form, ``bind`` for an address).

This is about configuration text only: it turns a key into the zones and
ports to serve, and knows nothing of how a query is routed to them.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable, Iterable, Sequence

from kubernetai.corefile.errors import describe_char, printable
from kubernetai.corefile.model import ZoneAddress
from kubernetai.pkg.gosyntax import quote

__all__ = ["parse_key", "origins"]


# Schemes CoreDNS serves, with the port each defaults to.
_DEFAULT_PORTS = {"dns": 53, "tls": 853, "quic": 853, "grpc": 443, "https": 443, "https3": 443}
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_INT_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DIGITS_RE = re.compile(r"[0-9]+", re.ASCII)
_GO_INT_MAX = 2**63 - 1


def _is_fqdn(name: str) -> bool:
    # miekg/dns IsFqdn: a final dot that is not itself escaped.
    if not name.endswith("."):
        return False
    name = name[:-1]
    if not name.endswith("\\"):
        return True
    i = len(name) - 1
    while i >= 0 and name[i] == "\\":
        i -= 1
    # Go does this arithmetic on byte offsets, with i at the start of the
    # last non-backslash rune (or -1); reproduce it exactly.
    trailing = len(name) - 1 - i
    width = len(name[i].encode("utf-8", "surrogatepass")) if i >= 0 else 1
    return (trailing + width) % 2 != 0


def _fqdn(name: str) -> str:
    return name if _is_fqdn(name) else name + "."


def _is_domain_name(name: str) -> bool:
    """miekg/dns IsDomainName: lenient syntax, but label and name lengths."""
    if not name:
        return False
    b = _fqdn(name).encode("utf-8", "surrogatepass")
    off = begin = 0
    was_dot = escape = False
    i, n = 0, len(b)
    while i < n:
        c = b[i]
        if c == 0x5C:  # backslash: \X or \DDD counts as one octet
            escape = not escape
            if off + 1 > 256:
                return False
            if len(b) >= i + 4 and all(0x30 <= d <= 0x39 for d in b[i + 1 : i + 4]):
                i += 3
                begin += 3
            else:
                i += 1
                begin += 1
            was_dot = False
        elif c == 0x2E:  # dot
            escape = False
            if i == 0 and n > 1:
                return False  # leading dot, except the root "."
            if was_dot:
                return False  # empty label
            was_dot = True
            if i - begin >= 64:
                return False
            off += 1 + i - begin
            if off > 256:
                return False
            begin = i + 1
        else:
            escape = was_dot = False
        i += 1
    return not escape


def _parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    # Go's net.ParseCIDR: ADDRESS/DECIMAL, no zone, host bits may be set.
    addr, slash, mask = text.partition("/")
    if not slash or "%" in addr or not _DIGITS_RE.fullmatch(mask):
        return None
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    ones = int(mask)
    if ones > ip.max_prefixlen:
        return None
    return ipaddress.ip_network((ip, ones), strict=False)


def _reverse_zones(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[str]:
    """plugin/pkg/cidr Split + Reverse.

    A prefix on a label boundary (8 bits for IPv4, 4 for IPv6) is one zone;
    any other prefix is split into the subnets of the next longer boundary
    prefix, one zone each (10.0.0.0/17 becomes 128 /24 zones, not one /16).
    """
    boundary = 8 if net.version == 4 else 4
    ones = net.prefixlen
    if ones % boundary == 0:
        subnets = [net]
    else:
        subnets = list(net.subnets(new_prefix=-(-ones // boundary) * boundary))
    zones = []
    for sub in subnets:
        labels = sub.network_address.reverse_pointer.split(".")
        drop = (sub.max_prefixlen - sub.prefixlen) // boundary
        zones.append(".".join(labels[drop:]) + ".")
    return zones


def _split_host_port(text: str) -> tuple[list[str], int | None]:
    """plugin.SplitHostPort: a trailing ``:NUMBER`` is the port, the rest a
    domain name or a CIDR (which expands to reverse zones)."""
    port = None
    colon = text.rfind(":")
    if colon == len(text) - 1:  # also true for "" (Go: -1 == -1)
        raise ValueError(f'expecting data after last colon: "{text}"')
    if colon != -1:
        digits = text[colon + 1 :]
        if _INT_RE.fullmatch(digits) and -_GO_INT_MAX - 1 <= int(digits) <= _GO_INT_MAX:
            port = int(digits)
            text = text[:colon]
        elif _parse_cidr(text) is None:
            # CoreDNS keeps "zone:nan" whole, as the zone "zone:nan." on the
            # default port: a zone no query can be meant for.
            raise ValueError(_stray_colon(text, digits))
    if ":" in text and _parse_cidr(text) is None:
        raise ValueError(_stray_colon(text, None))
    _check_zone_characters(text)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > 255:
        raise ValueError(f"specified zone is too long: {size} > 255")
    if not _is_domain_name(text):
        hint = " (no zone before the port; write '.' for the root zone)" if not text else ""
        raise ValueError(f"zone is not a valid domain name: {text}{hint}")
    net = _parse_cidr(text)
    if net is None:
        return [text], port
    if text[0] == ":" or (text[0] == "0" and ":" in text):
        # CoreDNS refuses these (they include IPv4-mapped IPv6 forms).
        raise ValueError(f"invalid CIDR {text}")
    return _reverse_zones(net), port


def _stray_colon(text: str, port: str | None) -> str:
    """Why a ``:`` that does not start a port number is refused."""
    if text.startswith("["):
        return (f"'{printable(text)}' is an address, not a zone: a server block key names the zone "
                "it serves (to listen on an address, use bind)")
    if port is not None:
        return f"port '{printable(port)}' is not a number"
    return (f"zone '{printable(text)}' holds a ':' "
            "(only a port number may follow the zone, after one ':')")


def _idna_form(text: str) -> str | None:
    """The ASCII (IDNA) form of a name, if the idna package is there and can make it."""
    try:
        import idna
        return idna.encode(text.rstrip("."), uts46=True).decode("ascii")
    except Exception:  # noqa: BLE001 - no package, or a name IDNA refuses: no hint
        return None


def _check_zone_characters(text: str) -> None:
    """Refuse what cannot be a zone name on the wire, naming the character.

    CoreDNS takes any text miekg/dns calls a name; but a query carries bytes,
    and a zone written with an invisible character (U+200B, U+202E) or any
    non-ASCII letter can never match one: the name that looks right in the
    Corefile is another name.  Escapes (``\\DDD``) still write any byte.
    """
    for char in text:
        if " " < char < "\x7f":
            continue
        if char == " " or not char.isprintable():
            raise ValueError(f"zone '{printable(text)}' holds {describe_char(char)}, "
                             "which cannot be part of a zone name")
        ascii_form = _idna_form(text)
        hint = f"; write {ascii_form}" if ascii_form else ""
        raise ValueError(f"zone '{text}' holds {describe_char(char)}, not ASCII: queries carry "
                         "the IDNA form of a name" + hint)


def parse_key(key: str) -> list[ZoneAddress]:
    """The zones and port one server block key (or a zone given as a
    directive argument) stands for: more than one for some CIDRs.

    ``[SCHEME://]ZONE[:PORT]``: the scheme defaults to ``dns`` and picks the
    default port (53, or 853/443 for the encrypted transports); the zone is
    lowercased and fully qualified; a CIDR becomes its reverse zone(s).
    This is what CoreDNS's ``InspectServerBlocks`` does, including much of
    its leniency: what miekg/dns calls a domain name is accepted (``a,b`` is
    the zone ``a,b.``) and ``:1053`` (no zone) is an error.  Stricter than
    CoreDNS, where it keeps a zone no query can match or fails later: an
    unknown scheme, a port outside 0..65535, a ``:`` not followed by a port
    number (CoreDNS serves ``cluster.local:nan`` as the zone
    ``cluster.local:nan.`` on port 53, and ``[::1]:53`` as ``[::1].``), and
    a zone holding a control, invisible or non-ASCII character.

    Raises ValueError with CoreDNS's wording for anything it refuses.
    """
    original = key
    scheme = "dns"
    m = _SCHEME_RE.match(key)
    if m:
        scheme = m.group(1).lower()
        if scheme not in _DEFAULT_PORTS:
            known = ", ".join(_DEFAULT_PORTS)
            raise ValueError(f"unknown scheme {m.group(1)!r} (expected one of {known})")
        key = key[m.end() :]
    hosts, port = _split_host_port(key)
    for host in hosts:
        # CoreDNS re-checks the fully-qualified form (fuzzing found names
        # that pass unqualified but break once qualified).
        _split_host_port(_fqdn(host))
    if port is not None and not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    given = port is not None
    if port is None:
        port = _DEFAULT_PORTS[scheme]
    return [ZoneAddress(scheme, _fqdn(h).lower(), port, original, given) for h in hosts]


def origins(args: Sequence[str], lines: Sequence[int], block_zones: Iterable[str],
            fail: Callable[[int, str, str], Exception]) -> tuple[str, ...]:
    """CoreDNS's ``OriginsFromArgsOrServerBlock``: the zones a plugin's arguments name (a
    CIDR as its reverse zones), else the server block's; lower case, fully qualified, each
    once. An argument that is no zone raises ``fail(line, message, argument)`` (CoreDNS
    drops it without a word, leaving the plugin with fewer zones than written)."""
    if not args:
        return tuple(dict.fromkeys(zone.lower() for zone in block_zones))
    zones: list[str] = []
    for arg, line in zip(args, lines):
        try:
            keys = parse_key(arg)
        except ValueError as error:
            raise fail(line, f"invalid zone {quote(arg)}: {error}", arg) from None
        zones += [key.zone.lower() for key in keys if key.zone.lower() not in zones]
    return tuple(zones)
