"""How the informer lists, against servers that support each way of listing.

In order of preference, as client-go: watch-list (one watch request whose initial events
are the list, ended by the BOOKMARK annotated k8s.io/initial-events-end), else a
resourceVersion=0 list (kube-apiserver answers it whole from its watch cache), else pages.
The sandbox plays a server with the WatchList feature, one without it, and one serving
resourceVersion=0 from "etcd" (paginated); its request counts show which requests were
made, and the rate limiter's own counters which spent a token.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import wait_for
from test_informer import Harness, Receiver, convert_service, service

from kubernetai.plugins.kubernetai.informer import INITIAL_EVENTS_END, Informer, Watched
from kubernetai.plugins.kubernetai.limiter import RequestLimiter
from kubernetai.sandbox.server import Sandbox

# The three kinds of server, as Sandbox options.
SERVERS: dict[str, dict[str, Any]] = {
    "watch-list": {},
    "rv0": {"watch_list": False},
    "paged": {"watch_list": False, "watch_cache_lists": False},
}
# What the informer's last full list was, on each.
PROTOCOL = {"watch-list": "watch-list", "rv0": "rv=0", "paged": "rv=0"}


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    made = Harness(tmp_path)
    yield made
    made.stop_all()


@pytest.fixture
def servers(reactor_running: None) -> Iterator[Any]:
    made: list[Sandbox] = []

    def make(kind: str, **options: Any) -> Sandbox:
        options.setdefault("bookmark_interval", 0.3)
        options.setdefault("history_size", 20)
        server = Sandbox(**SERVERS[kind], **options)
        server.start()
        made.append(server)
        return server
    yield make
    for server in made:
        server.stop()


def counts(server: Sandbox, resource: str = "services") -> tuple[int, int]:
    """(list requests, watch requests) the server received for `resource`."""
    got = server.request_counts()
    return got.get(("list", resource), 0), got.get(("watch", resource), 0)


def test_watch_list_lists_and_watches_in_one_request(servers, harness):
    """A server with WatchList: one watch request gives the list (one Replace) and then
    the changes; no list request at all."""
    server = servers("watch-list")
    server.apply([service(f"s{i:02}") for i in range(25)] + [service("hidden", skip="yes")])
    informer, receiver = harness.start(server, page_size=10)
    [replace] = receiver.replaces()
    assert set(replace.items) == {f"shop/s{i:02}" for i in range(25)}
    assert informer.resource_version == str(server.resource_version)
    server.apply(service("later"))
    server.delete("Service", "shop", "s03")
    wait_for(lambda: receiver.has("shop/later") and not receiver.has("shop/s03"))
    assert counts(server) == (0, 1)
    assert informer.stats.protocol == "watch-list" and informer.stats.watch_lists == 1
    assert informer.watch_list_supported is True
    assert informer.stats.pages == 0 and informer.stats.skipped == 1
    assert informer.stats.errors == 0 and informer.stats.events == 2


def test_watch_list_refused_falls_back_to_one_rv0_list(servers, harness):
    """A server without WatchList answers 422 Invalid; the informer lists with
    resourceVersion=0, which the watch cache answers in one response despite the page
    size, and never asks for watch-list again."""
    server = servers("rv0")
    server.apply([service(f"s{i:02}") for i in range(25)])
    informer, receiver = harness.start(server, page_size=10)
    assert set(receiver.replaces()[0].items) == {f"shop/s{i:02}" for i in range(25)}
    assert counts(server) == (1, 2)  # one list; the refused watch-list and the watch
    assert informer.stats.pages == 1 and informer.stats.protocol == "rv=0"
    assert informer.watch_list_supported is False and informer.stats.errors == 0
    server.expire_history()
    wait_for(lambda: len(receiver.replaces()) == 2, what="the re-list")
    wait_for(lambda: counts(server)[1] == 3, what="the watch after it")
    assert counts(server) == (2, 3) and informer.stats.pages == 2


def test_rv0_list_served_in_pages_reads_them_all_with_one_token(servers, harness):
    """A server that pages even resourceVersion=0: every page is read (continue tokens),
    and only the list's first request spends a rate-limit token: with 1 token a second
    and a burst of 3, a 20-page list needs no wait at all (20 tokens would be 17 s)."""
    server = servers("paged")
    server.apply([service(f"s{i:02}") for i in range(40)])
    limiter = RequestLimiter(qps=1.0, burst=3)
    informer, receiver = harness.start(server, page_size=2, limiter=limiter)
    assert len(receiver.replaces()[0].items) == 40
    assert counts(server) == (20, 2) and informer.stats.pages == 20
    # The refused watch-list, the list's first page, the watch: three tokens.
    assert limiter.tokens == 3 and limiter.requests == 22
    assert limiter.waited == 0.0


def test_every_first_request_still_spends_a_token(servers, harness):
    """Each list, watch and watch-list is throttled: with a burst of 1 at 1000 qps the
    tokens taken are the requests that are not continuation pages."""
    server = servers("paged")
    server.apply([service(f"s{i}") for i in range(5)])
    limiter = RequestLimiter(qps=1000.0, burst=1)
    informer, _ = harness.start(server, page_size=2, limiter=limiter)
    lists, watches = counts(server)
    assert lists == 3 and watches == 2
    assert limiter.tokens == watches + 1 and limiter.requests == lists + watches


class Meddler:
    """A `prepare` that changes the server right after a chosen list was taken (on the
    informer thread, before it watches on): what a cluster does during a slow re-list."""

    def __init__(self, server: Sandbox, at: int) -> None:
        self.server = server
        self.at = at
        self.calls = 0
        self.done = threading.Event()

    def __call__(self, items: dict[str, Any]) -> Any:
        self.calls += 1
        if self.calls == self.at:
            self.server.delete("Service", "shop", "a")
            self.server.apply(service("during"))
            self.done.set()
        return len(items)


@pytest.mark.parametrize("kind", list(SERVERS))
def test_relist_after_410_is_correct_and_sees_changes_made_during_it(servers, harness,
                                                                       kind):
    """Objects deleted while the informer was away are gone from the re-list's Replace,
    which comes the way the first list came; changes made while it was being taken
    arrive after it; the Replace carries what `prepare` made of it."""
    server = servers(kind)
    server.apply([service("a"), service("b"), service("c")])
    meddler = Meddler(server, at=2)
    informer, receiver = harness.start(server, page_size=2, prepare=meddler)
    assert receiver.replaces()[0].prepared == 3
    server.refuse()
    wait_for(lambda: informer.stats.errors >= 1, what="the broken watch")
    server.delete("Service", "shop", "b")
    server.apply(service("d"))
    server.expire_history()
    server.accept()
    wait_for(lambda: len(receiver.replaces()) == 2, what="the re-list")
    relisted = receiver.replaces()[1]
    assert set(relisted.items) == {"shop/a", "shop/c", "shop/d"}
    assert relisted.prepared == 3 and meddler.done.is_set()
    wait_for(lambda: receiver.names() == {"shop/c", "shop/d", "shop/during"},
             what="the changes made during the re-list")
    assert informer.stats.relists == 1 and informer.stats.protocol == PROTOCOL[kind]
    assert informer.stats.watch_lists == (2 if kind == "watch-list" else 0)


def restore(server: Sandbox) -> None:
    """Restart the server's resourceVersions at 1, below what clients have seen, as an
    etcd restore does (the objects stay)."""
    from kubernetai.pkg import reactor_thread

    def reset() -> None:
        server.store.rv = 1
        server.store.expire_history()
    reactor_thread.in_reactor(reset)


def test_relist_after_a_restore_is_taken_as_the_present(servers, harness):
    """A watch-list re-list is a consistent read: after a restore (resourceVersions back
    below what was seen) its end bookmark's lower resourceVersion is the server's present."""
    server = servers("watch-list")
    server.apply([service("kept"), service("churn")])
    server.delete("Service", "shop", "churn")
    informer, receiver = harness.start(server)
    seen = int(informer.resource_version)
    restore(server)
    wait_for(lambda: len(receiver.replaces()) == 2, what="the re-list")
    assert informer.stats.watch_lists == 2 and informer.stats.resets >= 2
    assert set(receiver.replaces()[1].items) == {"shop/kept"}
    assert int(informer.resource_version) < seen


def test_stale_rv0_list_is_checked_with_a_consistent_list(servers, harness):
    """A resourceVersion=0 re-list older than what was seen may be a lagging cache or a
    restored server; a consistent list decides, and is what the Replace carries."""
    server = servers("rv0")
    server.apply([service("a"), service("b")])
    informer, receiver = harness.start(server)
    seen = int(informer.resource_version)
    restore(server)
    server.cut_watches()
    wait_for(lambda: len(receiver.replaces()) == 2, timeout=30, what="the re-list")
    assert informer.stats.protocol == "consistent"
    assert int(informer.resource_version) < seen
    assert set(receiver.replaces()[1].items) == {"shop/a", "shop/b"}


def test_watch_list_cut_before_its_end_is_no_replace(servers, harness):
    """A watch-list stream cut before the annotated bookmark delivers nothing of what it
    had; the next attempt lists (as client-go falls back) and watch-list stays in use."""
    server = servers("watch-list")
    server.apply([service(f"s{i}") for i in range(5)])
    server.cut_watch_after(3)
    informer, receiver = harness.start(server)
    [replace] = receiver.replaces()
    assert len(replace.items) == 5 and informer.stats.protocol == "rv=0"
    assert informer.stats.errors >= 1 and informer.watch_list_supported is None
    server.clear_faults()
    server.expire_history()
    wait_for(lambda: informer.stats.watch_lists == 1, what="a re-list by watch-list")
    assert set(receiver.replaces()[-1].items) == {f"shop/s{i}" for i in range(5)}


def test_watch_list_ending_without_its_bookmark_is_refused(servers, harness):
    """A server that ends the watch-list stream cleanly without the annotated bookmark
    does not do watch-list: the informer lists instead, from then on."""
    server = servers("watch-list")
    server.apply([service(f"s{i}") for i in range(3)])
    from kubernetai.sandbox.watch import WatchStream
    original = WatchStream._bookmark

    def no_end_bookmark(self: WatchStream, *, initial_events_end: bool = False) -> None:
        if initial_events_end:
            self.close()  # the stream ends where the bookmark should have been
            return
        original(self)
    WatchStream._bookmark = no_end_bookmark  # type: ignore[method-assign]
    try:
        informer, receiver = harness.start(server)
    finally:
        WatchStream._bookmark = original  # type: ignore[method-assign]
    assert len(receiver.replaces()[0].items) == 3
    assert informer.watch_list_supported is False and informer.stats.protocol == "rv=0"
    assert counts(server) == (1, 2)


def test_serviceimports_use_watch_list_too(servers, harness):
    """A custom resource is watch-listed like the built-in ones (k8sapi sends the same
    query parameters on its path)."""
    server = servers("watch-list")
    informer, _ = harness.start(server, "serviceimports", convert=lambda o: o)
    assert informer.watch_list is True and informer.stats.protocol == "watch-list"
    assert counts(server, "serviceimports") == (0, 1)


def test_end_bookmark_annotation_name():
    """The annotation is the one kube-apiserver sets (and the sandbox sends)."""
    from kubernetai.sandbox import watch
    assert INITIAL_EVENTS_END == watch.INITIAL_EVENTS_END == "k8s.io/initial-events-end"


def test_informer_without_a_server_does_not_need_one():
    """Building an informer makes no request (watch-list support is learnt by asking)."""
    from kubernetes import client
    informer = Informer(client.ApiClient(), Watched("pods"), convert=convert_service,
                        deliver=Receiver())
    assert informer.watch_list and informer.watch_list_supported is None


def test_list_answers_are_decoded_item_by_item():
    """Each item reaches the callback as it is decoded; the rest of the document, in any
    member order and with any JSON whitespace, comes back without `items`."""
    from kubernetai.plugins.kubernetai.informer import _decode_list
    seen: list[dict] = []
    document = _decode_list([b' {"kind":"PodList", "items" : [ {"a": 1} ,\n{"b": [2]} ],'
                             b' "metadata": {"resourceVersion": "7", "continue": ""} } '],
                            seen.append)
    assert seen == [{"a": 1}, {"b": [2]}]
    assert document == {"kind": "PodList", "metadata": {"resourceVersion": "7", "continue": ""}}
    assert _decode_list([b'{"items": [], "metadata": {}}'], seen.append) == {"metadata": {}}
    assert _decode_list([b'{"items": null}'], seen.append) == {"items": None}


def test_list_answers_are_decoded_across_any_chunk_boundary():
    """The body arrives in chunks cut anywhere (inside a number, a string, a multi-byte
    character): the same document and items come out, as json.loads would read them."""
    import json

    from kubernetai.plugins.kubernetai.informer import _decode_list
    body = json.dumps({"kind": "L", "metadata": {"resourceVersion": "12345",
                                                  "remainingItemCount": 98765},
                       "items": [{"n": i, "name": f"caf\u00e9-{i}", "x": [1.5, None, True]}
                                 for i in range(3)], "tail": 4242},
                      ensure_ascii=False).encode()
    expected = json.loads(body)
    items = expected.pop("items")
    for cut in range(1, len(body)):
        seen: list[dict] = []
        assert _decode_list([body[:cut], body[cut:]], seen.append) == expected, cut
        assert seen == items
    seen = []
    assert _decode_list([body[i:i + 1] for i in range(len(body))], seen.append) == expected
    assert seen == items


@pytest.mark.parametrize("body", [
    b"", b"[]", b'{"items": [1]}', b'{"a": 1', b'{"a": 1} x', b'{"items": [{}', b'{"a" 1}',
    b'{"items": [{} {}]}', b'{"a": 1,}', b'{"items": [{},]}', b"\xff", b'{"a": 12',
    b'{1: 2}',
])
def test_undecodable_list_answers_fail_the_list(body):
    from kubernetai.plugins.kubernetai.informer import _decode_list, _WatchError
    with pytest.raises(_WatchError):
        _decode_list([body], lambda item: None)
    with pytest.raises(_WatchError):
        _decode_list([body[i:i + 1] for i in range(len(body))], lambda item: None)
