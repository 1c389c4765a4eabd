"""The query-name grammar (CoreDNS ``plugin/kubernetes/parse.go``)."""

from __future__ import annotations

import pytest

from kubernetai.pkg.dnsname import in_zone, is_reverse, plain_dots, zone_of
from kubernetai.plugins.kubernetai.qname import (
    EMPTY_REQUEST,
    InvalidRequest,
    RecordRequest,
    parse_request,
    trim_zone,
)

Z = "cluster.local."


def R(**kw) -> RecordRequest:
    return RecordRequest(**kw)


VALID = [
    pytest.param("cluster.local.", Z, False, EMPTY_REQUEST, id="apex is empty"),
    pytest.param("svc.cluster.local.", Z, False, EMPTY_REQUEST, id="bare svc is empty"),
    pytest.param("pod.cluster.local.", Z, False, EMPTY_REQUEST, id="bare pod is empty"),
    pytest.param("shop.svc.cluster.local.", Z, False, R(namespace="shop", podOrSvc="svc"),
                 id="namespace only"),
    pytest.param("web.shop.svc.cluster.local.", Z, False,
                 R(service="web", namespace="shop", podOrSvc="svc"), id="service"),
    pytest.param("db-0.db.shop.svc.cluster.local.", Z, False,
                 R(endpoint="db-0", service="db", namespace="shop", podOrSvc="svc"),
                 id="endpoint"),
    pytest.param("_http._tcp.web.shop.svc.cluster.local.", Z, False,
                 R(port="http", protocol="tcp", service="web", namespace="shop", podOrSvc="svc"),
                 id="port and protocol, underscores stripped"),
    pytest.param("http.tcp.web.shop.svc.cluster.local.", Z, False,
                 R(port="http", protocol="tcp", service="web", namespace="shop", podOrSvc="svc"),
                 id="port and protocol without underscores"),
    pytest.param("__http._tcp.web.shop.svc.cluster.local.", Z, False,
                 R(port="_http", protocol="tcp", service="web", namespace="shop", podOrSvc="svc"),
                 id="only one underscore is stripped"),
    pytest.param("db-0.c1.db.shop.svc.cluster.local.", Z, False,
                 R(port="db-0", protocol="c1", service="db", namespace="shop", podOrSvc="svc"),
                 id="two labels outside multicluster are port and protocol"),
    pytest.param("db-0.c1.db.shop.svc.clusterset.local.", "clusterset.local.", True,
                 R(endpoint="db-0", cluster="c1", service="db", namespace="shop",
                   podOrSvc="svc"),
                 id="multicluster endpoint.cluster"),
    pytest.param("_http._tcp.web.shop.svc.clusterset.local.", "clusterset.local.", True,
                 R(port="http", protocol="tcp", service="web", namespace="shop", podOrSvc="svc"),
                 id="multicluster SRV is still port and protocol"),
    pytest.param("db-0._c1.db.shop.svc.clusterset.local.", "clusterset.local.", True,
                 R(port="db-0", protocol="c1", service="db", namespace="shop", podOrSvc="svc"),
                 id="multicluster: any underscore means port and protocol"),
    pytest.param("10-0-0-1.shop.pod.cluster.local.", Z, False,
                 R(service="10-0-0-1", namespace="shop", podOrSvc="pod"),
                 id="pod name in service"),
    pytest.param("x.10-0-0-1.shop.pod.cluster.local.", Z, False,
                 R(endpoint="x", service="10-0-0-1", namespace="shop", podOrSvc="pod"),
                 id="pod with an extra label"),
    pytest.param("web.shop.svc.a.b.", "a.b.", False,
                 R(service="web", namespace="shop", podOrSvc="svc"), id="another zone"),
    pytest.param("web.shop.svc.", ".", False,
                 R(service="web", namespace="shop", podOrSvc="svc"), id="root zone"),
    pytest.param("us-west-2a.pin._zone.db.shop.svc.cluster.local.", Z, "zonal",
                 R(service="db", namespace="shop", podOrSvc="svc", zone="us-west-2a"),
                 id="zonal pin"),
    pytest.param("us-west-2a.prefer._zone.db.shop.svc.cluster.local.", Z, "zonal",
                 R(service="db", namespace="shop", podOrSvc="svc", zone="us-west-2a",
                   zone_prefer=True),
                 id="zonal prefer"),
    pytest.param("corp.example.com.pin._zone.db.shop.svc.cluster.local.", Z, "zonal",
                 R(service="db", namespace="shop", podOrSvc="svc", zone="corp.example.com"),
                 id="zonal zone spanning labels"),
    pytest.param("us-west-2a._zone.db.shop.svc.cluster.local.", Z, "zonal",
                 R(port="us-west-2a", protocol="zone", service="db", namespace="shop",
                   podOrSvc="svc"),
                 id="zonal-looking two labels are still port and protocol"),
    pytest.param("..web.shop.svc.cluster.local.", Z, False,
                 R(service="web", namespace="shop", podOrSvc="svc"),
                 id="empty labels are empty port and protocol"),
]


@pytest.mark.parametrize("name, zone, mc, expected", VALID)
def test_parse_valid(name, zone, mc, expected):
    """Valid names split into the expected parts."""
    if mc == "zonal":
        assert parse_request(name, zone, False, zonal=True) == expected
    else:
        assert parse_request(name, zone, mc) == expected


INVALID = [
    pytest.param("web.shop.pood.cluster.local.", False, id="last label not svc or pod"),
    pytest.param("foo.cluster.local.", False, id="one label that is not svc or pod"),
    pytest.param("a.b.c.web.shop.svc.cluster.local.", False, id="too many labels"),
    pytest.param("too.long.for.what.i.am.trying.to.pod.cluster.local.", False,
                 id="far too many labels"),
    pytest.param("us-west-2a.pin._zone.web.shop.svc.cluster.local.", False,
                 id="zonal names are too long (zonal not supported)"),
    pytest.param("a.b.c.web.shop.svc.cluster.local.", True, id="too many labels in multicluster"),
    pytest.param("ns.dns.cluster.local.", False, id="ns.dns is not a schema name"),
    pytest.param("4.3.2.1.in-addr.arpa.", False, id="reverse names are not schema names"),
]


ZONAL_INVALID = [
    pytest.param("us-west-2a.pin._zone.db.shop.pod.cluster.local.", False, id="zonal under pod"),
    pytest.param("us-west-2a.florp._zone.db.shop.svc.cluster.local.", False,
                 id="zonal unknown directive"),
    pytest.param("us-west-2a.pin._zone.db.shop.svc.cluster.local.", True,
                 id="zonal in a multicluster zone"),
    pytest.param("us-west-2a.pin.zone.db.shop.svc.cluster.local.", False,
                 id="zonal anchor needs its underscore"),
]


@pytest.mark.parametrize("name, mc", ZONAL_INVALID)
def test_parse_invalid_zonal(name, mc):
    """Zone-scoped shapes that stay invalid even with the zonal option."""
    with pytest.raises(InvalidRequest):
        parse_request(name, Z, mc, zonal=True)


@pytest.mark.parametrize("name, mc", INVALID)
def test_parse_invalid(name, mc):
    """Names outside the schema raise InvalidRequest."""
    zone = "in-addr.arpa." if name.endswith("in-addr.arpa.") else Z
    with pytest.raises(InvalidRequest):
        parse_request(name, zone, mc)


def test_invalid_request_is_a_value_error():
    """InvalidRequest can be caught as ValueError."""
    assert issubclass(InvalidRequest, ValueError)


def test_request_is_frozen_and_hashable():
    """Requests are immutable values."""
    r = parse_request("web.shop.svc.cluster.local.", Z)
    with pytest.raises(AttributeError):
        r.service = "x"  # type: ignore[misc]
    assert hash(r) == hash(RecordRequest(service="web", namespace="shop", podOrSvc="svc"))


def test_trim_zone():
    """trim_zone drops the zone and the separating dot."""
    assert trim_zone("a.b.cluster.local.", Z) == "a.b"
    assert trim_zone("cluster.local.", Z) == ""
    assert trim_zone("a.", ".") == "a"
    with pytest.raises(ValueError):
        trim_zone("a.xcluster.local.", Z)


# --------------------------------------------------------------------------
# Zone matching (kubernetai.pkg.dnsname), which trim_zone and the answers use


@pytest.mark.parametrize("name, zone, expected", [
    ("cluster.local.", "cluster.local.", True),
    ("web.shop.svc.cluster.local.", "cluster.local.", True),
    ("xcluster.local.", "cluster.local.", False),
    ("local.", "cluster.local.", False),
    ("anything.", ".", True),
    (".", ".", True),
    (".", "cluster.local.", False),
    ("a\\.cluster.local.", "cluster.local.", True),  # wire text: every dot is a boundary
])
def test_in_zone(name: str, zone: str, expected: bool) -> None:
    """in_zone matches whole labels; the root holds every name."""
    assert in_zone(name, zone) is expected


def test_zone_of_picks_the_longest_zone() -> None:
    """The most specific zone wins, whatever the order (CoreDNS plugin.Zones.Matches)."""
    zones = [".", "local.", "cluster.local.", "example.org."]
    assert zone_of("web.cluster.local.", zones) == "cluster.local."
    assert zone_of("web.cluster.local.", list(reversed(zones))) == "cluster.local."
    assert zone_of("other.", zones) == "."
    assert zone_of("other.", ["cluster.local."]) is None
    assert zone_of("xcluster.local.", ["cluster.local."]) is None


@pytest.mark.parametrize("name, plain", [
    ("a.example.org.", "a.example.org."),
    ("a\\.example.org.", "a\\046example.org."),
    ("a.b\\\\.example.org.", "a.b\\092.example.org."),
    ("a\\\\\\.b.", "a\\092\\046b."),
    ("a\\065\\x.b.", "a\\065\\x.b."),
])
def test_plain_dots_leaves_only_label_boundaries(name: str, plain: str) -> None:
    """Escaped dots and backslashes become decimal escapes, so in_zone reads presentation form right."""
    assert plain_dots(name) == plain


def test_plain_dots_and_in_zone_on_presentation_names() -> None:
    """An escaped dot is inside a label; after an escaped backslash it is a boundary again."""
    assert not in_zone(plain_dots("a\\.example.org."), "example.org.")
    assert in_zone(plain_dots("a.b\\\\.example.org."), "example.org.")


def test_is_reverse() -> None:
    """Names below in-addr.arpa. or ip6.arpa. are reverse; the bare zones are not (as in CoreDNS)."""
    assert is_reverse("1.0.0.10.in-addr.arpa.")
    assert is_reverse("10.in-addr.arpa.")
    assert is_reverse("8.b.d.0.1.0.0.2.ip6.arpa.")
    assert not is_reverse("in-addr.arpa.")
    assert not is_reverse("ip6.arpa.")
    assert not is_reverse("cluster.local.")
