"""A cache that survives change: answers depend on the names they read, not on everything.

Three levels:

* the answer builder (``records``): for every row of the answer table and every change of
  a list of changes to the table's cluster, an answer that the change alters has a moved
  dependency (so no cache keeps it), and the memo gives the fresh answer at once;
* the case rule: an answer marked ``foldable`` for one spelling of a name is, once its
  question bytes are rewritten, byte for byte the fresh answer to any other spelling;
* the server: a stanza behind the answer memo over UDP, where a change to one service
  leaves the others' answers cached (hits count up, nothing is built again) and the
  changed names' answers change at once, for each kind of answer.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable, Iterator
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from test_records import (
    BASE,
    IMPORTS,
    MC_SLICES,
    NAMESPACES,
    OPTIONS,
    PODS,
    SERVICES,
    SLICES,
    TABLE,
    _zone_of,
    build_cache,
    endpoint,
    pod_json,
    service_json,
    slice_json,
)
from test_records import (
    render as render_rr,
)
from test_resolver import stanza_resolver
from twisted.internet import defer
from twisted.names import dns as tdns

from kubernetai.core import codec
from kubernetai.core.dnsserver import KubernetaiServerFactory, listen
from kubernetai.core.pipeline import BlockPipeline, Stage
from kubernetai.core.plugin import position
from kubernetai.core.sources import KeySlots, changed
from kubernetai.core.wirecache import WireCache, WireCacheHandler, _recase
from kubernetai.pkg import reactor_thread
from kubernetai.plugins.kubernetai import records
from kubernetai.plugins.kubernetai.cache import ClusterCache
from kubernetai.plugins.kubernetai.objects import (
    endpoint_slice_from_json,
    mc_endpoint_slice_from_json,
    namespace_from_json,
    pod_from_json,
    service_from_json,
    service_import_from_json,
)
from kubernetai.plugins.kubernetai.records import answer

TCP_HTTP = ("http", 80, "TCP")

# ---------------------------------------------------------------------------------------
# Changes to the answer table's cluster


def _delete(resource: str, key: str) -> Callable[[ClusterCache], None]:
    def change(cache: ClusterCache) -> None:
        assert cache.apply(resource, [("DELETED", key, None)])
    change.__name__ = f"delete {resource} {key}"
    return change


def _upsert(resource: str, obj: Any, why: str) -> Callable[[ClusterCache], None]:
    def change(cache: ClusterCache) -> None:
        assert cache.apply(resource, [("MODIFIED", obj.key, obj)])
    change.__name__ = why
    return change


def _key(d: dict) -> str:
    meta = d["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if "namespace" in meta else meta["name"]


CHANGES: list[Callable[[ClusterCache], None]] = [
    *(_delete("services", _key(d)) for d in SERVICES),
    *(_delete("endpointslices", _key(d)) for d in SLICES),
    *(_delete("pods", _key(d)) for d in PODS if not d["metadata"].get("deletionTimestamp")),
    *(_delete("namespaces", n) for n in NAMESPACES),
    *(_delete("serviceimports", _key(d)) for d in IMPORTS),
    *(_delete("mcendpointslices", _key(d)) for d in MC_SLICES),
    _upsert("services", service_from_json(service_json(
        "shop", "web", ("10.96.0.99",), [("http", 80, "TCP")])), "web moves"),
    _upsert("services", service_from_json(service_json(
        "shop", "svc0", ("10.96.0.77",), [TCP_HTTP])), "svc0 appears"),
    _upsert("services", service_from_json(service_json(
        "shop", "ext-ip", ("10.96.0.78",), [TCP_HTTP])), "ext-ip becomes a ClusterIP"),
    _upsert("services", service_from_json(service_json(
        "shop", "ext", type_="ExternalName", external_name="other.example.com",
        ports=[TCP_HTTP])), "ext points elsewhere"),
    _upsert("services", service_from_json(service_json(
        "shop", "ext-in", type_="ExternalName", external_name="cart.shop.svc.cluster.local")),
        "the in-zone chain points elsewhere"),
    _upsert("services", service_from_json(service_json(
        "shop", "cart", ("10.96.0.21",), [("http", 8080, "TCP")])),
        "cart (the chain's target) moves"),
    _upsert("endpointslices", endpoint_slice_from_json(slice_json("shop", "web-abc12", "web", [
        endpoint("10.244.1.5", pod="web-7d9f-x1", node="node-1"),
        endpoint("10.244.2.99", pod="web-7d9f-x2", node="node-2"),
    ], [("http", 8080, "TCP"), ("https", 8443, "TCP")])), "a web endpoint moves"),
    _upsert("endpointslices", endpoint_slice_from_json(slice_json("shop", "db-4x", "db", [
        endpoint("10.244.1.10", hostname="db-zero", pod="db-0"),
    ], [("postgres", 5432, "TCP")])), "db endpoints renamed"),
    _upsert("endpointslices", endpoint_slice_from_json(slice_json("shop", "nope-1", "nope", [
        endpoint("10.244.6.6")], [TCP_HTTP])), "nope gets a ready endpoint"),
    _upsert("endpointslices", endpoint_slice_from_json(slice_json(
        "kube-system", "kube-dns-a", "kube-dns", [endpoint("10.244.0.3", pod="coredns-bbb",
                                                           ns="kube-system")],
        [("dns", 53, "UDP")])), "this server's own endpoint goes away"),
    _upsert("pods", pod_from_json(pod_json("shop", "web-7d9f-x1", "10.244.1.50")),
            "a pod moves"),
    _upsert("pods", pod_from_json(pod_json("team-b", "newcomer", "10.244.1.5")),
            "a second pod on an IP"),
    _upsert("namespaces", namespace_from_json({"metadata": {"name": "ghost"}}),
            "namespace ghost appears"),
    _upsert("serviceimports", service_import_from_json({
        "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"type": "ClusterSetIP", "ips": ["10.100.0.99"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
        "the web import moves"),
    _upsert("mcendpointslices", mc_endpoint_slice_from_json(MC_SLICES[1] | {
        "endpoints": [{"addresses": ["10.1.0.55"], "hostname": "db-0",
                       "conditions": {"ready": True}}]}), "a multicluster endpoint moves"),
]


def _rows() -> list[tuple[str, str, int, str]]:
    return [(p.values[0], p.values[1], p.values[2], _zone_of(p.values[1].rstrip(".") + "."))
            for p in TABLE]


def _sections(found: records.Answer) -> tuple:
    return (found.rcode, [render_rr(r) for r in found.answers],
            [render_rr(r) for r in found.authority], [render_rr(r) for r in found.additional],
            found.chase)


def _fresh(cache: ClusterCache, opts: str, qname: str, qtype: int, zone: str) -> Any:
    """The answer built now, without the memo."""
    if qtype in (tdns.AXFR, tdns.IXFR):
        return answer(cache, OPTIONS[opts], qname, qtype, zone)
    return records._answer(cache, OPTIONS[opts], qname, qtype, zone)


def _moved(found: records.Answer) -> bool:
    return changed(found.deps)


class Ticking:
    """A clock that moves a second each time it is read: every change moves the serial."""

    def __init__(self) -> None:
        self.now = 1700000000.25

    def __call__(self) -> float:
        self.now += 1
        return self.now


@pytest.mark.parametrize("ticking", [False, True], ids=["same-second", "serial-moves"])
@pytest.mark.parametrize("change", CHANGES, ids=lambda c: c.__name__)
def test_an_answer_a_change_alters_has_a_moved_dependency(change, ticking) -> None:
    """Whatever the change, every table answer it alters depends on something it moved,
    and asking again (the memo in between) gives the fresh answer. With the clock stopped
    the serial does not move, so the per-name cells alone must cover the change."""
    caches = {False: build_cache(), True: build_cache(with_zones=True)}
    if ticking:
        for cache in caches.values():
            cache._clock = Ticking()
    rows = _rows()
    before = [answer(caches[o == "zonal"], OPTIONS[o], q, t, z) for o, q, t, z in rows]
    change(caches[False])
    change(caches[True])
    altered = 0
    for (o, q, t, z), old in zip(rows, before):
        cache = caches[o == "zonal"]
        fresh = _fresh(cache, o, q, t, z)
        if _sections(fresh) != _sections(old):
            altered += 1
            assert _moved(old), f"{q} {t} ({o}) changed but none of its dependencies moved"
        assert _sections(answer(cache, OPTIONS[o], q, t, z)) == _sections(fresh), q
    if ticking:
        assert altered  # at least the SOA serials


def test_a_change_leaves_the_answers_of_other_names_in_place() -> None:
    """Moving one service keeps the memoised answers of the others (the same objects)."""
    cache = build_cache()
    names = [f"{s}.shop.svc.cluster.local." for s in ("web", "cart", "db", "dual")]
    first = {n: answer(cache, BASE, n, tdns.A, "cluster.local.") for n in names}
    moved = service_from_json(service_json("shop", "web", ("10.96.0.99",), [TCP_HTTP]))
    cache.apply("services", [("MODIFIED", moved.key, moved)])
    again = {n: answer(cache, BASE, n, tdns.A, "cluster.local.") for n in names}
    assert [n for n in names if again[n] is first[n]] == names[1:]
    assert [render_rr(r)[3] for r in again[names[0]].answers] == ["10.96.0.99"]


def test_a_nonexistent_name_depends_on_its_own_cell_and_a_flood_is_bounded() -> None:
    """An NXDOMAIN depends on its (namespace, name) cell and the serial; a flood of random
    names keeps at most the ring's size of cells, the oldest names' answers dropped as
    their cells go to newer names."""
    cache = build_cache()
    cache.cells = KeySlots(size=64)
    found = records._answer(cache, BASE, "rnd-1.shop.svc.cluster.local.", tdns.A,
                            "cluster.local.")
    assert found.rcode == tdns.ENAME
    slots = {slot for slot, _ in found.deps}
    assert {key for key, slot in cache.cells.items() if slot in slots} == \
        {("svc", "shop/rnd-1"), ("ns", "shop")}
    assert cache.serial_cell.slot in slots
    assert not changed(found.deps)
    for i in range(2, 200):
        records._answer(cache, BASE, f"rnd-{i}.shop.svc.cluster.local.", tdns.A,
                        "cluster.local.")
    assert len(cache.cells) == 64
    assert ("svc", "shop/rnd-1") not in cache.cells and ("svc", "shop/rnd-199") in cache.cells
    assert changed(found.deps)


def test_the_memo_evicts_its_oldest_entries_instead_of_emptying(monkeypatch) -> None:
    monkeypatch.setattr(records, "MEMO_MAX_RECORDS", 10)
    cache = build_cache()
    web = answer(cache, BASE, "web.shop.svc.cluster.local.", tdns.A, "cluster.local.")
    for i in range(4):
        answer(cache, BASE, f"x{i}.shop.svc.cluster.local.", tdns.A, "cluster.local.")
    assert cache.memo_records <= 10
    assert answer(cache, BASE, "web.shop.svc.cluster.local.", tdns.A, "cluster.local.") is web
    for i in range(20):
        answer(cache, BASE, f"y{i}.shop.svc.cluster.local.", tdns.A, "cluster.local.")
        assert cache.memo_records <= 10
    assert sum(1 for key in cache.memo if key[0] != "soa") >= 4


# ---------------------------------------------------------------------------------------
# The case rule


def _request(name: str, qtype: int) -> Any:
    message = dns.message.make_query(name, qtype, use_edns=False)
    message.id = 4242
    return codec.parse_request(message.to_wire(), True)


def _wire(name: str, qtype: int, opts: str, zone: str, cache: ClusterCache) -> tuple:
    req = _request(name, qtype)
    found = records._answer(cache, OPTIONS[opts], name, qtype, zone)
    return codec.render(req, found.rcode, True, found.answers, found.authority,
                        found.additional), req, found


def _spellings(name: str, rng: random.Random) -> list[str]:
    mixed = "".join(c.upper() if rng.random() < 0.5 else c for c in name)
    return [name.lower(), name.upper(), name.swapcase(), mixed,
            "".join(c.upper() if i % 2 else c for i, c in enumerate(name.lower()))]


def test_a_foldable_answer_rewritten_is_the_fresh_answer_of_every_spelling() -> None:
    """For every table row, filled with one spelling and asked with another: where the
    answer says it folds, its bytes with the asker's question are exactly the fresh answer
    for the asker (records echo the asked case, so this is not a tautology)."""
    rng = random.Random(11)
    caches = {False: build_cache(), True: build_cache(with_zones=True)}
    folded = kinds = 0
    seen_kinds: set[tuple[int, int]] = set()
    for opts, qname, qtype, zone in _rows():
        cache = caches[opts == "zonal"]
        spellings = _spellings(qname, rng)
        for first in spellings[:3]:
            stored, _, found = _wire(first, qtype, opts, zone, cache)
            if not found.foldable:
                continue
            folded += 1
            seen_kinds.add((qtype, found.rcode))
            for other in spellings:
                fresh, req, again = _wire(other, qtype, opts, zone, cache)
                assert _recase(stored, req.question) == fresh, (first, other, qtype)
                assert again.foldable
        kinds += 1
    assert folded > kinds  # most rows fold
    for expected in [(tdns.A, tdns.OK), (tdns.AAAA, tdns.OK), (tdns.A, tdns.ENAME),
                     (tdns.PTR, tdns.OK), (tdns.SOA, tdns.OK), (tdns.TXT, tdns.OK),
                     (tdns.NS, tdns.OK)]:
        assert expected in seen_kinds


def test_what_does_not_fold() -> None:
    """SRV targets carry the zone uncompressed and an in-zone CNAME chain's names come from
    the API: those are kept per spelling."""
    cache = build_cache()
    srv = records._answer(cache, BASE, "_http._tcp.web.shop.svc.cluster.local.", tdns.SRV,
                          "cluster.local.")
    chain = records._answer(cache, BASE, "ext-in.shop.svc.cluster.local.", tdns.A,
                            "cluster.local.")
    assert srv.answers and chain.answers
    assert not srv.foldable and not chain.foldable


# ---------------------------------------------------------------------------------------
# Through the server: a stanza behind the answer memo, over UDP


class Served:
    """A server on 127.0.0.1 whose one block is the answer memo before a stanza reading
    ``cache`` (the answer table's cluster), for cluster.local and the reverse zones."""

    def __init__(self, cache: ClusterCache, body: str) -> None:
        self.cache = cache
        self.store = WireCache()
        resolver = stanza_resolver(body, "cluster.local in-addr.arpa clusterset.local",
                                   cache=cache)
        pipeline = BlockPipeline([
            Stage("cache", position("cache"), 0, handler=WireCacheHandler(self.store)),
            Stage("kubernetai", position("kubernetai"), 1, resolver=resolver)])
        self.factory = KubernetaiServerFactory(
            {"cluster.local": pipeline, "in-addr.arpa": pipeline,
             "clusterset.local": pipeline})
        self.ports = reactor_thread.in_reactor(listen, self.factory, "127.0.0.1", 0)
        self.port = self.ports[0].getHost().port
        self.built = 0
        real = records._answer

        def counting(*args: Any) -> Any:
            self.built += 1
            return real(*args)
        self._real = real
        records._answer = counting  # type: ignore[assignment]

    def ask(self, name: str, rdtype: str = "A") -> dns.message.Message:
        message = dns.message.make_query(name, rdtype)
        return dns.message.from_wire(self.raw(message.to_wire()))

    def raw(self, wire: bytes) -> bytes:
        """The response's bytes as sent (dnspython shuffles records when it renders)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3)
            sock.sendto(wire, ("127.0.0.1", self.port))
            got, _ = sock.recvfrom(65535)
        assert got[:2] == wire[:2]
        return got

    def change(self, resource: str, obj: Any = None, key: str | None = None) -> None:
        events = [("DELETED", key, None)] if obj is None else [("MODIFIED", obj.key, obj)]
        assert reactor_thread.in_reactor(self.cache.apply, resource, events)

    def stop(self) -> None:
        records._answer = self._real  # type: ignore[assignment]
        reactor_thread.in_reactor(lambda: defer.gatherResults(
            [defer.maybeDeferred(port.stopListening) for port in self.ports]))


@pytest.fixture
def served(reactor_running: None) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(body: str = "kubernetai cluster.local in-addr.arpa clusterset.local {\n"
                          "    multicluster clusterset.local\n}") -> Served:
        started.append(Served(build_cache(), body))
        return started[-1]
    yield start
    for one in started:
        one.stop()


def _text(reply: dns.message.Message) -> list[str]:
    return sorted(rr.to_text() for rrset in reply.answer for rr in rrset)


ELSEWHERE = [("kube-dns.kube-system.svc.cluster.local.", "A"),
             ("_http._tcp.web.team-b.svc.cluster.local.", "SRV")]
OTHERS = [("cart.shop.svc.cluster.local.", "A"), ("dual.shop.svc.cluster.local.", "AAAA"),
          *ELSEWHERE]


def _check_change(server: Served, asked: tuple[str, str], apply: Callable[[], None],
                  changed: Callable[[dns.message.Message], bool],
                  others: list[tuple[str, str]] = OTHERS) -> None:
    """``asked`` is cached, then ``apply`` changes the cluster: ``asked`` is answered
    afresh at once and ``changed`` holds for it, while the answers of ``others`` stay
    hits (nothing is built for them)."""
    OTHERS = others  # noqa: N806
    name, rdtype = asked
    first = server.ask(name, rdtype)
    for other in OTHERS:
        server.ask(*other)
    hits = server.store.hits
    assert _text(server.ask(name, rdtype)) == _text(first)
    assert server.store.hits == hits + 1
    apply()
    after = server.ask(name, rdtype)
    assert changed(after), after
    hits, built = server.store.hits, server.built
    for other in OTHERS:
        server.ask(*other)
    assert (server.store.hits, server.built) == (hits + len(OTHERS), built)


def _svc(ns: str, name: str, ips: tuple[str, ...], **kw: Any) -> Any:
    return service_from_json(service_json(ns, name, ips, kw.pop("ports", [TCP_HTTP]), **kw))


def test_a_and_aaaa_follow_their_service(served) -> None:
    server = served()
    _check_change(server, ("web.shop.svc.cluster.local.", "A"),
                  lambda: server.change("services", _svc("shop", "web", ("10.96.0.99",))),
                  lambda r: _text(r) == ["10.96.0.99"])
    _check_change(server, ("v6only.shop.svc.cluster.local.", "AAAA"),
                  lambda: server.change("services", _svc("shop", "v6only", ("fd00:96::99",))),
                  lambda r: _text(r) == ["fd00:96::99"])


def test_srv_follows_the_services_slices(served) -> None:
    server = served()
    moved = endpoint_slice_from_json(slice_json("shop", "db-4x", "db", [
        endpoint("10.244.1.10", hostname="db-zero", pod="db-0")], [("postgres", 5432, "TCP")]))
    _check_change(server, ("_postgres._tcp.db.shop.svc.cluster.local.", "SRV"),
                  lambda: server.change("endpointslices", moved),
                  lambda r: any("db-zero" in t for t in _text(r)))


def test_headless_follows_its_slices(served) -> None:
    server = served()
    fewer = endpoint_slice_from_json(slice_json("shop", "db-4x", "db", [
        endpoint("10.244.3.12", pod="db-2")], [("postgres", 5432, "TCP")]))
    _check_change(server, ("db.shop.svc.cluster.local.", "A"),
                  lambda: server.change("endpointslices", fewer),
                  lambda r: _text(r) == ["10.244.3.12"])


def test_ptr_follows_the_ip(served) -> None:
    server = served()
    _check_change(server, ("10.0.96.10.in-addr.arpa.", "PTR"),
                  lambda: server.change("services", key="shop/web"),
                  lambda r: r.rcode() == dns.rcode.NXDOMAIN)
    moved = endpoint_slice_from_json(slice_json("shop", "db-4x", "db", [
        endpoint("10.244.1.10", hostname="db-zero", pod="db-0")], [("postgres", 5432, "TCP")]))
    _check_change(server, ("10.1.244.10.in-addr.arpa.", "PTR"),
                  lambda: server.change("endpointslices", moved),
                  lambda r: _text(r) == ["db-zero.db.shop.svc.cluster.local."])


def test_an_in_zone_externalname_chain_follows_its_target(served) -> None:
    server = served()
    _check_change(server, ("ext-in.shop.svc.cluster.local.", "A"),
                  lambda: server.change("services", _svc("shop", "web", ("10.96.0.99",))),
                  lambda r: "10.96.0.99" in _text(r))


def test_a_wildcard_stays_a_name_error_and_follows_its_namespace(served) -> None:
    """CoreDNS has no wildcards: ``*`` is a name like any other, NXDOMAIN, which follows
    only its own name, its namespace and the serial."""
    server = served()
    _check_change(server, ("*.shop.svc.cluster.local.", "A"),
                  lambda: server.change("namespaces", key="shop"),
                  lambda r: r.rcode() == dns.rcode.NXDOMAIN, ELSEWHERE)


def test_pod_names_follow_the_pods(served) -> None:
    server = served("kubernetai cluster.local in-addr.arpa {\n    pods verified\n}")
    _check_change(server, ("10-244-1-5.shop.pod.cluster.local.", "A"),
                  lambda: server.change("pods", key="shop/web-7d9f-x1"),
                  lambda r: r.rcode() == dns.rcode.NXDOMAIN)
    _check_change(server, ("10-244-7-7.shop.pod.cluster.local.", "A"),
                  lambda: server.change("pods", pod_from_json(
                      pod_json("shop", "late", "10.244.7.7"))),
                  lambda r: _text(r) == ["10.244.7.7"])


def test_a_name_error_turns_into_an_answer_when_the_service_appears(served) -> None:
    server = served()
    _check_change(server, ("later.shop.svc.cluster.local.", "A"),
                  lambda: server.change("services", _svc("shop", "later", ("10.96.0.88",))),
                  lambda r: _text(r) == ["10.96.0.88"])


def test_removing_a_namespace_removes_its_names(served) -> None:
    server = served()
    _check_change(server, ("web.shop.svc.cluster.local.", "A"),
                  lambda: server.change("namespaces", key="shop"),
                  lambda r: r.rcode() == dns.rcode.NXDOMAIN, ELSEWHERE)


def test_multicluster_answers_follow_their_imports(served) -> None:
    server = served()
    moved = service_import_from_json({
        "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"type": "ClusterSetIP", "ips": ["10.100.0.99"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    _check_change(server, ("web.shop.svc.clusterset.local.", "A"),
                  lambda: server.change("serviceimports", moved),
                  lambda r: _text(r) == ["10.100.0.99"])


def test_a_mixed_case_question_after_a_lower_case_fill_is_a_hit_and_exact(served) -> None:
    """0x20 resolvers share one entry, and each gets the bytes a fresh answer to its own
    spelling would be (the owner names and the SOA's zone echo it)."""
    server = served()
    for name, rdtype in [("web.shop.svc.cluster.local.", "A"),
                         ("nothere.shop.svc.cluster.local.", "A"),
                         ("10.0.96.10.in-addr.arpa.", "PTR")]:
        server.ask(name, rdtype)
        hits, built = server.store.hits, server.built
        mixed = "".join(c.upper() if i % 3 == 0 else c for i, c in enumerate(name))
        wire = dns.message.make_query(mixed, rdtype).to_wire()
        hit = server.raw(wire)
        assert (server.store.hits, server.built) == (hits + 1, built)
        message = dns.message.from_wire(hit)
        assert str(message.question[0].name) == mixed
        if message.answer:
            assert str(message.answer[0].name) == mixed
        else:
            assert str(message.authority[0].name) == ".".join(mixed.split(".")[-3:])
        assert message.flags & dns.flags.AA
        # The fresh answer to the same spelling, with nothing cached.
        reactor_thread.in_reactor(server.store.clear)
        assert server.raw(wire) == hit
        assert server.built == built + 1
