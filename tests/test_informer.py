"""The informer against the sandbox over HTTP, through the real official client.

The `sandbox` here is a server that can only paginate (no WatchList feature, and
resourceVersion=0 lists served from "etcd", page by page): these tests were written for
the paginated consistent list, the last of the informer's three ways to list, and its
recovery paths (continue tokens refused, throttled pages, pages at different versions)
exist only there. Its informers do not try watch-list (the server would refuse it). The
watch-list and resourceVersion=0 ways, and re-lists through them,
are tested in test_informer_list.py.
"""

from __future__ import annotations

import contextlib
import inspect
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from conftest import wait_for
from kubernetes import client, config

from kubernetai.plugins.kubernetai.informer import (
    STALL_TIMEOUT,
    Changes,
    Informer,
    Replace,
    Watched,
)
from kubernetai.sandbox.server import Sandbox

# -- helpers --------------------------------------------------------------------------


# A server that lists only by pages (see the module docstring).
PAGED: dict[str, Any] = {"watch_list": False, "watch_cache_lists": False}


@pytest.fixture
def sandbox(reactor_running: None) -> Iterator[Sandbox]:
    """A plain-HTTP sandbox with quick bookmarks and a short history, which lists only by
    pages (see the module docstring)."""
    server = Sandbox(bookmark_interval=0.3, history_size=20, **PAGED)
    server.start()
    yield server
    server.stop()


def service(name: str, namespace: str = "shop", **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"ports": [{"name": "http", "port": 80}]}}


def convert_service(obj: dict) -> Any:
    """A trimmed, immutable stand-in for the DNS server's own service object."""
    meta = obj["metadata"]
    if (meta.get("labels") or {}).get("skip") == "yes":
        return None
    return (meta["name"], meta.get("namespace"), meta["resourceVersion"],
            tuple(sorted((meta.get("labels") or {}).items())))


class Receiver:
    """What a stanza's cache does with deliveries; runs on the reactor thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: list[Replace | Changes] = []
        self.state: dict[str, Any] = {}
        self.threads: set[str] = set()

    def __call__(self, batch: Replace | Changes) -> None:
        with self.lock:
            self.threads.add(threading.current_thread().name)
            self.batches.append(batch)
            if isinstance(batch, Replace):
                self.state = dict(batch.items)
            else:
                for kind, key, obj in batch.events:
                    if kind == "DELETED":
                        self.state.pop(key, None)
                    else:
                        self.state[key] = obj

    def replaces(self) -> list[Replace]:
        with self.lock:
            return [b for b in self.batches if isinstance(b, Replace)]

    def changes(self) -> list[Changes]:
        with self.lock:
            return [b for b in self.batches if isinstance(b, Changes)]

    def events(self) -> list[tuple[str, str, Any]]:
        return [event for batch in self.changes() for event in batch.events]

    def names(self) -> set[str]:
        with self.lock:
            return set(self.state)

    def has(self, key: str) -> bool:
        with self.lock:
            return key in self.state


class Harness:
    """Builds informers on official-client ApiClients and stops them all at the end."""

    def __init__(self, tmp_path: Path, **defaults: Any) -> None:
        self.tmp_path = tmp_path
        self.informers: list[Informer] = []
        self.defaults = defaults  # Informer options unless a test gives them

    def api_client(self, sandbox: Sandbox) -> client.ApiClient:
        path = sandbox.write_kubeconfig(self.tmp_path / f"kubeconfig-{sandbox.port}")
        return config.new_client_from_config(config_file=str(path))

    def start(self, sandbox: Sandbox, watched: Watched | str = "services", *,
              convert: Callable[[dict], Any] = convert_service, sync: bool = True,
              api_client: client.ApiClient | None = None,
              **options: Any) -> tuple[Informer, Receiver]:
        if isinstance(watched, str):
            watched = Watched(watched)
        receiver = Receiver()
        options.setdefault("backoff", (0.05, 0.5))
        for name, value in self.defaults.items():
            options.setdefault(name, value)
        options.setdefault("read_timeout", 10.0)
        informer = Informer(api_client or self.api_client(sandbox), watched, convert=convert,
                            deliver=receiver, **options)
        self.informers.append(informer)
        informer.start()
        if sync:
            wait_for(receiver.replaces, what="the first Replace")
            wait_for(lambda: sandbox.request_counts().get(("watch", watched.resource)),
                     what="the watch request")
        return informer, receiver

    def stop_all(self) -> None:
        for informer in self.informers:
            informer.stop()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    # The server refuses watch-list anyway; not asking keeps each test's requests those
    # of the paginated list (the refusal is tested in test_informer_list.py).
    made = Harness(tmp_path, watch_list=False)
    yield made
    made.stop_all()


def lists(sandbox: Sandbox, resource: str = "services") -> int:
    return sandbox.request_counts().get(("list", resource), 0)


class Gate:
    """A request limiter (the hook the informer passes every request through) that notes
    when each request starts and can hold the `hold_at`-th one until released."""

    def __init__(self, hold_at: int | None = None) -> None:
        self.starts: list[float] = []
        self.hold_at = hold_at
        self.reached = threading.Event()
        self.released = threading.Event()

    @contextlib.contextmanager
    def request(self, timeout: float | None = None, *, token: bool = True) -> Iterator[None]:
        self.starts.append(time.monotonic())
        if len(self.starts) == self.hold_at:
            self.reached.set()
            self.released.wait(30)
        yield


class Restarts:
    """Restarts a sandbox the way an operator's API server restarts: the old one stops
    (every connection dropped) and a fresh one starts on the same port from manifests, its
    resourceVersions counting from the start again."""

    def __init__(self) -> None:
        self.servers: list[Sandbox] = []

    def restart(self, old: Sandbox, objects: list[dict], **options: Any) -> Sandbox:
        old.stop()
        options.setdefault("bookmark_interval", 0.3)
        options.setdefault("history_size", 20)
        new = Sandbox(port=old.port, **{**PAGED, **options})
        if objects:
            new.apply(objects)
        new.start()
        self.servers.append(new)
        return new

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def restarts() -> Iterator[Restarts]:
    made = Restarts()
    yield made
    made.stop_all()


def grow_history(sandbox: Sandbox, writes: int) -> None:
    """Move a sandbox's resourceVersion well ahead of what a fresh one starts at."""
    sandbox.apply([service("churn", namespace="default", n=str(i)) for i in range(writes)])
    sandbox.delete("Service", "default", "churn")


def sandbox_options(**wanted: Any) -> dict[str, Any]:
    """The options this Sandbox accepts out of `wanted` (newer sandboxes accept more)."""
    accepted = inspect.signature(Sandbox).parameters
    return {name: value for name, value in wanted.items() if name in accepted}


# -- listing ----------------------------------------------------------------------------


def test_initial_list_is_paginated_and_converted(sandbox, harness):
    """The first list arrives as one Replace of converted items, fetched in several pages."""
    sandbox.apply([service(f"svc-{i:02}") for i in range(25)] + [service("hidden", skip="yes")])
    informer, receiver = harness.start(sandbox, page_size=10)
    [replace] = receiver.replaces()
    assert receiver.batches[0] is replace
    assert set(replace.items) == {f"shop/svc-{i:02}" for i in range(25)}
    assert replace.items["shop/svc-07"][:2] == ("svc-07", "shop")
    assert lists(sandbox) == 3 and informer.stats.pages == 3
    assert informer.stats.lists == 1 and informer.stats.relists == 0
    assert informer.stats.skipped == 1
    assert informer.synced_once
    assert receiver.threads == {"reactor"}


def test_empty_cluster_still_delivers_a_replace(sandbox, harness):
    """An empty cluster still gives a Replace (empty), so the receiver can call itself synced."""
    _, receiver = harness.start(sandbox)
    assert receiver.replaces()[0].items == {}


@pytest.mark.parametrize("watched, obj, key", [
    ("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "extra"}},
     "extra"),
    ("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shop"},
              "spec": {"containers": [{"name": "c", "image": "x"}]},
              "status": {"phase": "Running", "podIP": "10.2.0.9"}}, "shop/p"),
    ("endpointslices", {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"name": "web-abc", "namespace": "shop",
                                     "labels": {"kubernetes.io/service-name": "web"}},
                        "addressType": "IPv4",
                        "endpoints": [{"addresses": ["10.1.0.5"],
                                       "conditions": {"ready": True}}],
                        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
     "shop/web-abc"),
    ("serviceimports", {"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
                        "metadata": {"name": "db", "namespace": "shop"},
                        "spec": {"type": "ClusterSetIP", "ips": ["10.99.0.1"],
                                 "ports": [{"port": 5432, "protocol": "TCP"}]}}, "shop/db"),
])
def test_every_resource_lists_and_watches(sandbox, harness, watched, obj, key):
    """Each watched resource goes through its own client call, list and watch alike."""
    _, receiver = harness.start(sandbox, watched, convert=lambda o: o["metadata"]["name"])
    assert key not in receiver.replaces()[0].items
    sandbox.apply(obj)
    wait_for(lambda: receiver.has(key), what=f"{key} added")
    assert lists(sandbox, watched) == 1
    assert receiver.events()[-1][:2] == ("ADDED", key)


def test_namespaces_are_keyed_by_name(sandbox, harness):
    """Cluster-scoped objects are keyed by bare name."""
    _, receiver = harness.start(sandbox, "namespaces", convert=lambda o: o["metadata"]["name"])
    assert {"default", "kube-system"} <= set(receiver.replaces()[0].items)


# -- watching ---------------------------------------------------------------------------


def test_live_changes_arrive_in_order(sandbox, harness):
    """ADDED, MODIFIED and DELETED after the list arrive as Changes, in order."""
    sandbox.apply(service("old"))
    informer, receiver = harness.start(sandbox)
    sandbox.apply(service("web", tier="a"))
    wait_for(lambda: receiver.has("shop/web"))
    sandbox.apply(service("web", tier="b"))
    wait_for(lambda: dict(receiver.state.get("shop/web", ("", "", "", ()))[3]).get("tier") == "b")
    sandbox.delete("Service", "shop", "web")
    sandbox.delete("Service", "shop", "old")
    wait_for(lambda: not receiver.names())
    assert [(kind, key) for kind, key, _ in receiver.events()] == [
        ("ADDED", "shop/web"), ("MODIFIED", "shop/web"), ("DELETED", "shop/web"),
        ("DELETED", "shop/old")]
    assert [obj for kind, _, obj in receiver.events() if kind == "DELETED"] == [None, None]
    assert informer.stats.events == 4 and informer.stats.relists == 0


def test_bookmarks_advance_the_resource_version(sandbox, harness):
    """BOOKMARKs (sent every 0.3 s here) move the informer's resourceVersion forward."""
    informer, _ = harness.start(sandbox)
    listed = int(informer.resource_version)
    sandbox.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    wait_for(lambda: int(informer.resource_version) > listed, what="a bookmark")
    assert informer.stats.bookmarks >= 1 and informer.stats.batches == 0


def test_label_selector_is_applied_by_the_server(sandbox, harness):
    """A label selector filters list and watch server-side; leaving it reads as DELETED."""
    sandbox.apply([service("in", app="dns"), service("out", app="web")])
    seen: list[str] = []

    def convert(obj: dict) -> Any:
        seen.append(obj["metadata"]["name"])
        return convert_service(obj)
    _, receiver = harness.start(sandbox, Watched("services", label_selector="app=dns"),
                                convert=convert)
    assert set(receiver.replaces()[0].items) == {"shop/in"}
    sandbox.apply([service("out2", app="web"), service("in2", app="dns")])
    wait_for(lambda: receiver.has("shop/in2"))
    sandbox.apply(service("in", app="web"))
    wait_for(lambda: not receiver.has("shop/in"))
    assert receiver.events()[-1] == ("DELETED", "shop/in", None)
    assert "out" not in seen and "out2" not in seen


def test_field_selector_is_applied_by_the_server(sandbox, harness):
    """A field selector (CoreDNS's pod phase filter) reaches the server too."""
    def pod(name: str, phase: str) -> dict:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop"},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
                "status": {"phase": phase, "podIP": "10.2.0.1"}}
    sandbox.apply([pod("running", "Running"), pod("done", "Succeeded")])
    watched = Watched("pods", field_selector="status.phase!=Succeeded,status.phase!=Failed")
    _, receiver = harness.start(sandbox, watched, convert=lambda o: o["status"]["phase"])
    assert receiver.replaces()[0].items == {"shop/running": "Running"}
    sandbox.apply(pod("running", "Failed"))
    wait_for(lambda: not receiver.has("shop/running"))


def test_objects_convert_skips_produce_no_events(sandbox, harness):
    """An object convert() returns None for is skipped, as CoreDNS does: no event at all."""
    sandbox.apply(service("web"))
    informer, receiver = harness.start(sandbox)
    sandbox.apply(service("web", skip="yes"))   # MODIFIED, now skipped: old version kept
    sandbox.apply(service("new", skip="yes"))   # ADDED, skipped
    sandbox.apply(service("marker"))
    wait_for(lambda: receiver.has("shop/marker"))
    assert [(kind, key) for kind, key, _ in receiver.events()] == [("ADDED", "shop/marker")]
    assert receiver.has("shop/web") and informer.stats.skipped == 2
    sandbox.delete("Service", "shop", "web")
    wait_for(lambda: not receiver.has("shop/web"))


def test_convert_errors_skip_the_object(sandbox, harness):
    """An exception in convert() skips that object and keeps the informer going."""
    def convert(obj: dict) -> Any:
        if obj["metadata"]["name"] == "bad":
            raise ValueError("cannot convert")
        return obj["metadata"]["name"]
    sandbox.apply([service("bad"), service("good")])
    informer, receiver = harness.start(sandbox, convert=convert)
    assert set(receiver.replaces()[0].items) == {"shop/good"}
    sandbox.apply(service("later"))
    wait_for(lambda: receiver.has("shop/later"))
    assert informer.stats.skipped == 1


def test_burst_is_coalesced_into_few_batches(sandbox, harness):
    """A burst of 300 writes reaches the reactor in a handful of Changes, not 300."""
    informer, receiver = harness.start(sandbox)
    sandbox.apply([service(f"burst-{i:03}") for i in range(300)])
    wait_for(lambda: len(receiver.names()) == 300, what="all 300 services")
    batches = receiver.changes()
    assert len(batches) <= 10, [len(b.events) for b in batches]
    assert [key for _, key, _ in receiver.events()] == [f"shop/burst-{i:03}" for i in range(300)]
    assert informer.stats.batches == len(batches)


def test_zero_batch_interval_still_delivers_everything(sandbox, harness):
    """With batch_interval=0 every chunk is flushed on its own and nothing is lost."""
    _, receiver = harness.start(sandbox, batch_interval=0.0)
    sandbox.apply([service(f"s{i}") for i in range(30)])
    wait_for(lambda: len(receiver.names()) == 30)


# -- recovery ----------------------------------------------------------------------------


def test_expire_history_relists(sandbox, harness):
    """A 410 ERROR event on the open watch makes the informer re-list and deliver a Replace."""
    sandbox.apply([service("a"), service("b")])
    informer, receiver = harness.start(sandbox)
    sandbox.expire_history()
    wait_for(lambda: len(receiver.replaces()) == 2, what="a second Replace")
    assert set(receiver.replaces()[1].items) == {"shop/a", "shop/b"}
    assert informer.stats.relists == 1 and lists(sandbox) == 2
    sandbox.apply(service("c"))
    wait_for(lambda: receiver.has("shop/c"))


def test_relist_drops_objects_deleted_while_away(sandbox, harness):
    """Deleted while disconnected and past history: the 410 re-list's Replace no longer has it."""
    sandbox.apply([service("a"), service("b"), service("c")])
    informer, receiver = harness.start(sandbox)
    sandbox.refuse()
    wait_for(lambda: informer.stats.errors >= 1, what="the broken watch")
    sandbox.delete("Service", "shop", "b")
    sandbox.apply(service("d"))
    sandbox.expire_history()
    sandbox.accept()
    wait_for(lambda: len(receiver.replaces()) == 2, what="the re-list")
    assert set(receiver.replaces()[1].items) == {"shop/a", "shop/c", "shop/d"}
    assert receiver.names() == {"shop/a", "shop/c", "shop/d"}
    assert "DELETED" not in {kind for kind, _, _ in receiver.events()}


def test_new_epoch_relists(sandbox, harness):
    """A new resourceVersion epoch (etcd restore) forces a re-list; watching then goes on."""
    sandbox.apply(service("a"))
    informer, receiver = harness.start(sandbox)
    sandbox.new_epoch()
    wait_for(lambda: len(receiver.replaces()) == 2, what="the re-list")
    assert int(informer.resource_version) >= 1_000_000
    sandbox.apply(service("b"))
    wait_for(lambda: receiver.has("shop/b"))
    assert informer.stats.relists == 1


def test_cut_watch_resumes_without_listing(sandbox, harness):
    """A watch cut mid-stream resumes from the last resourceVersion; no re-list, only a
    one-item list to check the server is still on the same history."""
    informer, receiver = harness.start(sandbox)
    sandbox.apply(service("before"))
    wait_for(lambda: receiver.has("shop/before"))
    sandbox.cut_watches()
    sandbox.apply(service("after"))
    wait_for(lambda: receiver.has("shop/after"), what="the event after the cut")
    assert informer.stats.relists == 0 and informer.stats.probes == 1
    assert lists(sandbox) == 1 + informer.stats.probes
    assert informer.stats.watches >= 2 and informer.stats.errors >= 1
    assert [key for _, key, _ in receiver.events()] == ["shop/before", "shop/after"]


def test_normal_end_of_watch_rewatches_without_listing(sandbox, harness):
    """When timeoutSeconds ends a watch cleanly the informer just watches again."""
    informer, receiver = harness.start(sandbox, watch_timeout=1)
    wait_for(lambda: informer.stats.watches >= 3, what="two watch renewals")
    sandbox.apply(service("late"))
    wait_for(lambda: receiver.has("shop/late"))
    assert lists(sandbox) == 1 and informer.stats.errors == 0


def test_stalled_watch_is_restarted_within_the_silence_limit(sandbox, harness):
    """A stream that goes silent (no bookmarks either) is re-opened after `stall_timeout`
    from the last resourceVersion, long before the read timeout, with no re-list."""
    informer, receiver = harness.start(sandbox, read_timeout=120.0, stall_timeout=1.0)
    sandbox.apply(service("before-stall"))
    wait_for(lambda: receiver.has("shop/before-stall"))
    wait_for(lambda: informer.stats.bookmarks >= 1, what="a bookmark")
    sandbox.stall_watches()
    wait_for(lambda: informer.stats.stalls >= 1, what="the stall noticed")
    assert "watch stalled: no data for 1s" in informer.stats.last_error
    watches = informer.stats.watches
    wait_for(lambda: informer.stats.watches > watches, what="the re-watch")
    sandbox.unstall_watches()
    sandbox.apply(service("after-stall"))
    wait_for(lambda: receiver.has("shop/after-stall"), timeout=20)
    assert informer.stats.relists == 0 and len(receiver.replaces()) == 1
    # The only other lists are the one-item resourceVersion checks after silent watches.
    assert lists(sandbox) == 1 + informer.stats.probes


def test_silence_limit_defaults_to_a_production_value(sandbox, harness):
    """By default a watch may stay silent STALL_TIMEOUT (75 s: a minute of bookmarks plus
    kube-apiserver's 15 s of slack), a tighter bound than the 90 s read timeout; a
    silence limit above the read timeout is cut to it."""
    assert STALL_TIMEOUT == 75.0
    informer = Informer(client.ApiClient(), Watched("services"), convert=dict, deliver=print)
    assert informer.stall_timeout == 75.0 and informer.read_timeout == 90.0
    informer = Informer(client.ApiClient(), Watched("services"), convert=dict, deliver=print,
                        read_timeout=30.0)
    assert informer.stall_timeout == 30.0
    with pytest.raises(ValueError):
        Informer(client.ApiClient(), Watched("services"), convert=dict, deliver=print,
                 stall_timeout=0)


def test_watch_sockets_have_tcp_keepalive(sandbox, harness):
    """The watch socket probes a silent peer (30 s idle, 5 s apart, 3 probes: 45 s)."""
    informer, _ = harness.start(sandbox)
    sockets = [c.sock for c in list(informer._connections._connections)
               if getattr(c, "sock", None) is not None]
    assert sockets
    for sock in sockets:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3


def test_refused_connections_back_off_and_recover(sandbox, harness):
    """While the API server refuses connections the informer backs off, then catches up."""
    informer, receiver = harness.start(sandbox)
    sandbox.refuse(1.0)
    sandbox.apply(service("while-down"))
    wait_for(lambda: receiver.has("shop/while-down"), what="recovery after refuse")
    assert informer.stats.errors >= 2  # the cut watch and at least one refused connect
    assert informer.stats.relists == 0 and informer.stats.probes >= 1
    assert lists(sandbox) == 1 + informer.stats.probes


def test_503_on_list_then_recovery(sandbox, harness):
    """503s on the first list are retried with backoff until the list succeeds."""
    sandbox.apply(service("a"))
    sandbox.error(503, count=3, verbs=["list"])
    informer, receiver = harness.start(sandbox)
    assert set(receiver.replaces()[0].items) == {"shop/a"}
    assert informer.stats.errors == 3 and lists(sandbox) == 4
    assert "503" in informer.stats.last_error


def test_503_on_watch_then_recovery(sandbox, harness):
    """503s on re-watching are retried from the same resourceVersion, without a re-list."""
    informer, receiver = harness.start(sandbox)
    sandbox.error(503, count=3, verbs=["watch"])
    sandbox.cut_watches()
    sandbox.apply(service("x"))
    wait_for(lambda: receiver.has("shop/x"))
    assert informer.stats.errors >= 4 and informer.stats.relists == 0
    assert lists(sandbox) == 1 + informer.stats.probes


def test_429_is_backed_off_by_the_informer(sandbox, harness):
    """429s reach the informer (not urllib3's hidden Retry-After sleeps) and are backed off."""
    informer, receiver = harness.start(sandbox)
    sandbox.error(429, count=3, verbs=["watch"], retry_after=0)
    sandbox.cut_watches()
    sandbox.apply(service("x"))
    wait_for(lambda: receiver.has("shop/x"))
    assert informer.stats.errors >= 4 and "429" in informer.stats.last_error
    assert sandbox.request_counts()[("watch", "services")] == informer.stats.watches
    assert informer.stats.relists == 0 and lists(sandbox) == 1 + informer.stats.probes


@pytest.mark.parametrize("plain", [False, True], ids=["status", "plain-text"])
def test_429_retry_after_is_honoured_beyond_the_backoff_cap(sandbox, harness, plain):
    """A 429's Retry-After (1 s here) is waited out even when the backoff cap is shorter,
    whether it comes with a Status or as the throttling filters' plain text."""
    sandbox.error(429, count=1, verbs=["watch"], retry_after=1,
                  **sandbox_options(plain=plain))
    gate = Gate()
    informer, receiver = harness.start(sandbox, limiter=gate, backoff=(0.05, 0.2))
    sandbox.apply(service("x"))
    wait_for(lambda: receiver.has("shop/x"))
    assert "429" in informer.stats.last_error and informer.stats.errors == 1
    list_at, throttled_at, watch_at = gate.starts[:3]
    assert watch_at - throttled_at >= 1.0


# -- the server's history moves ----------------------------------------------------------


def test_restarted_api_server_is_relisted(sandbox, harness, restarts):
    """D4: an API server restarted from its manifests (its resourceVersions back near the
    start) is re-listed: what it no longer has disappears, what it has appears, and the
    informer watches on from the new server's resourceVersions, not the old ones."""
    sandbox.apply([service("kept"), service("gone")])
    grow_history(sandbox, 30)
    informer, receiver = harness.start(sandbox)
    seen = int(informer.resource_version)
    restarted = restarts.restart(sandbox, [service("kept"), service("new")])
    assert restarted.resource_version < seen
    wait_for(lambda: receiver.names() == {"shop/kept", "shop/new"}, timeout=30,
             what="the re-list after the restart")
    assert informer.stats.relists == 1 and len(receiver.replaces()) == 2
    # One for the sign that gave it away, one for the list below the last version seen.
    assert informer.stats.resets == 2
    # The sign: before watching again, the server's resourceVersion was below ours.
    assert informer.stats.probes >= 1 and informer.stats.stalls == 0
    assert int(informer.resource_version) < seen
    restarted.apply(service("later"))
    wait_for(lambda: receiver.has("shop/later"))
    restarted.delete("Service", "shop", "kept")
    wait_for(lambda: not receiver.has("shop/kept"))
    assert informer.stats.relists == 1


def reset_history_in_place(server: Sandbox, rv: int) -> None:
    """Restart the server's resourceVersions at `rv` under its open watches, which stay
    open: what a server that never checks a watch's resourceVersion against its history
    (as the sandbox did not) shows a client after a restore."""
    from kubernetai.pkg import reactor_thread

    def reset() -> None:
        server.store.rv = rv
        server.store.expire_history()
    reactor_thread.in_reactor(reset)


def test_backwards_resource_version_in_a_watch_event_relists(reactor_running, harness):
    """An ADDED event older than the last resourceVersion seen comes from another history:
    the informer re-lists instead of applying it and watching on."""
    server = Sandbox(bookmark_interval=3600, **PAGED)  # no bookmarks: the event is the only sign
    server.apply([service("a"), service("b")])
    server.start()
    try:
        informer, receiver = harness.start(server)
        reset_history_in_place(server, 1)
        server.apply(service("c"))
        wait_for(lambda: len(receiver.replaces()) == 2, what="the re-list")
        assert "went back" in informer.stats.last_error
        assert "ADDED event" in informer.stats.last_error
        assert set(receiver.replaces()[1].items) == {"shop/a", "shop/b", "shop/c"}
        assert receiver.events() == [] and informer.stats.resets >= 1
        server.apply(service("d"))
        wait_for(lambda: receiver.has("shop/d"))
    finally:
        server.stop()


def test_backwards_resource_version_in_a_bookmark_relists(sandbox, harness):
    """A BOOKMARK older than the last resourceVersion seen also means re-list."""
    sandbox.apply(service("a"))
    grow_history(sandbox, 5)
    informer, receiver = harness.start(sandbox)
    reset_history_in_place(sandbox, 1)
    wait_for(lambda: len(receiver.replaces()) == 2, what="the re-list")
    assert "BOOKMARK event" in informer.stats.last_error
    assert informer.resource_version == str(sandbox.resource_version)


def test_silent_watch_on_a_reset_history_relists(reactor_running, harness):
    """A watch that goes silent (no event, no bookmark) while the server's history was
    reset under it is given up after the silence limit; the check of the server's
    resourceVersion then shows the reset and the informer re-lists."""
    server = Sandbox(bookmark_interval=3600, **PAGED)
    server.apply([service("a"), service("b")])
    grow_history(server, 10)
    server.start()
    try:
        informer, receiver = harness.start(server, stall_timeout=1.0)
        reset_history_in_place(server, 1)
        wait_for(lambda: len(receiver.replaces()) == 2, what="the re-list")
        assert informer.stats.stalls == 1 and informer.stats.probes == 1
        assert informer.stats.relists == 1
        assert informer.resource_version == str(server.resource_version)
    finally:
        server.stop()


def test_continue_token_refused_after_a_restart_lists_from_the_start(sandbox, harness,
                                                                      restarts):
    """The API server restarted between two pages of a list: the continue token is refused
    (410 Expired, or too large for the new history) and the list starts over from the
    first page on the new server, at once; no page of the old server is kept."""
    sandbox.apply([service(f"old-{i}") for i in range(5)])
    grow_history(sandbox, 10)
    gate = Gate(hold_at=2)  # hold the second page
    informer, receiver = harness.start(sandbox, page_size=2, limiter=gate, sync=False)
    assert gate.reached.wait(15)
    restarted = restarts.restart(sandbox, [service(f"new-{i}") for i in range(3)])
    gate.released.set()
    wait_for(receiver.replaces, what="the list")
    [replace] = receiver.replaces()
    assert set(replace.items) == {f"shop/new-{i}" for i in range(3)}
    assert informer.stats.lists == 1 and informer.stats.errors == 0
    assert lists(restarted) == 3  # the refused page, then two pages from the start


def test_continue_token_compacted_lists_from_the_start(sandbox, harness):
    """History compacted between two pages: the continue token gets 410 Expired and the
    list starts over from the first page for one consistent snapshot (the inconsistent
    continuation the 410 offers is not taken)."""
    sandbox.apply([service(f"s{i}") for i in range(5)])
    gate = Gate(hold_at=2)
    informer, receiver = harness.start(sandbox, page_size=2, limiter=gate, sync=False)
    assert gate.reached.wait(15)
    sandbox.expire_history()
    sandbox.apply(service("s5"))
    gate.released.set()
    wait_for(receiver.replaces, what="the list")
    assert set(receiver.replaces()[0].items) == {f"shop/s{i}" for i in range(6)}
    assert informer.stats.lists == 1 and informer.stats.errors == 0
    assert lists(sandbox) == 1 + 1 + 3  # a page, the refused token, three pages anew


def test_429_on_a_list_page_retries_that_page(sandbox, harness):
    """A 429 on a later page waits Retry-After and asks for the same page again, rather
    than throwing the pages already read away."""
    sandbox.apply([service(f"s{i}") for i in range(5)])
    gate = Gate(hold_at=2)
    informer, receiver = harness.start(sandbox, page_size=2, limiter=gate, sync=False)
    assert gate.reached.wait(15)
    sandbox.error(429, count=1, verbs=["list"], retry_after=1)
    gate.released.set()
    wait_for(receiver.replaces, what="the list")
    assert set(receiver.replaces()[0].items) == {f"shop/s{i}" for i in range(5)}
    assert lists(sandbox) == 4 and informer.stats.pages == 3 and informer.stats.lists == 1
    assert gate.starts[2] - gate.starts[1] >= 1.0


def test_each_attempt_is_one_request(sandbox, harness):
    """No hidden client retries: a watch stalled before its headers fails after one timeout."""
    sandbox.stall_watches()
    informer, _ = harness.start(sandbox, read_timeout=0.5, sync=False)
    wait_for(lambda: informer.stats.errors >= 2, what="two timed-out watches")
    counted = sandbox.request_counts()[("watch", "services")]
    assert informer.stats.watches - 1 <= counted <= informer.stats.watches
    assert informer.stats.lists == 1 and informer.stats.relists == 0
    sandbox.unstall_watches()


# -- stopping ----------------------------------------------------------------------------


@pytest.mark.parametrize("use_tls", [False, True], ids=["http", "https"])
def test_stop_interrupts_a_blocked_watch(reactor_running, harness, use_tls):
    """stop() shuts the socket of a watch blocked in read and the thread exits at once."""
    server = Sandbox(bookmark_interval=3600, use_tls=use_tls, **PAGED)
    server.start()
    try:
        informer, receiver = harness.start(server, read_timeout=120.0)
        time.sleep(0.2)  # let the thread block reading the quiet stream
        informer.stop(timeout=5.0)
        assert not informer.running
        server.apply(service("after-stop"))
        time.sleep(0.3)
        assert not receiver.has("shop/after-stop")
        assert informer.stats.errors == 0
    finally:
        server.stop()


def test_stop_interrupts_a_watch_waiting_for_headers(sandbox, harness):
    """stop() also ends a request still waiting for response headers."""
    sandbox.stall_watches()
    informer, receiver = harness.start(sandbox, read_timeout=120.0, sync=False)
    wait_for(receiver.replaces)
    wait_for(lambda: sandbox.request_counts().get(("watch", "services")))
    time.sleep(0.2)
    informer.stop(timeout=5.0)
    assert not informer.running and informer.stats.errors == 0
    sandbox.unstall_watches()


def test_stop_during_backoff(sandbox, harness):
    """stop() also ends a thread that is waiting out a long backoff."""
    informer, _ = harness.start(sandbox, backoff=(30.0, 30.0))
    sandbox.refuse()
    wait_for(lambda: informer.stats.errors >= 1)
    informer.stop(timeout=5.0)
    assert not informer.running
    sandbox.accept()


def test_nothing_is_delivered_after_stop(sandbox, harness):
    """Batches already on their way to the reactor are dropped once stop() was called."""
    from twisted.internet import reactor

    from kubernetai.pkg import reactor_thread

    informer, receiver = harness.start(sandbox)
    before = len(receiver.batches)
    gate = threading.Event()
    reactor.callFromThread(gate.wait, 5)  # hold the reactor so the next batch queues up
    try:
        informer._post(Changes((("ADDED", "shop/ghost", None),)))
        informer.stop()
    finally:
        gate.set()
    reactor_thread.in_reactor(lambda: None)
    assert len(receiver.batches) == before and not receiver.has("shop/ghost")


def test_informers_do_not_share_connections(sandbox, harness):
    """Informers on one ApiClient each get a pool of their own: stopping one spares the other."""
    shared = harness.api_client(sandbox)
    first, _ = harness.start(sandbox, api_client=shared)
    second, receiver = harness.start(sandbox, api_client=shared)
    first.stop()
    sandbox.apply(service("still-watched"))
    wait_for(lambda: receiver.has("shop/still-watched"))
    assert second.stats.errors == 0


def test_event_handling_without_a_server():
    """Unknown event types are skipped, ERROR 410 means re-list, other ERRORs and junk fail."""
    from kubernetai.plugins.kubernetai import informer as module

    informer = Informer(client.ApiClient(), Watched("services"), convert=lambda o: o,
                        deliver=print)
    pending: list = []
    informer._handle(b'{"type":"SURPRISE","object":{"metadata":{"resourceVersion":"9"}}}',
                     pending, set())
    assert pending == [] and informer.resource_version is None
    informer._handle(b'{"type":"ADDED","object":{"metadata":{"name":"a","namespace":"n",'
                     b'"resourceVersion":"10"}}}', pending, set())
    assert [(kind, key) for kind, key, _ in pending] == [("ADDED", "n/a")]
    assert informer.resource_version == "10"
    with pytest.raises(module._Gone):
        informer._handle(b'{"type":"ERROR","object":{"kind":"Status","code":410,'
                         b'"reason":"Expired","message":"too old"}}', pending, set())
    with pytest.raises(module._WatchError):
        informer._handle(b'{"type":"ERROR","object":{"kind":"Status","code":500}}',
                         pending, set())
    with pytest.raises(module._WatchError):
        informer._handle(b'{"type":"ADDED","obj', pending, set())


TOO_LARGE = (b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
             b'"message":"Timeout: Too large resource version: 90, current: 12",'
             b'"reason":"Timeout","details":{"causes":[{"reason":"ResourceVersionTooLarge",'
             b'"message":"Too large resource version"}],"retryAfterSeconds":1},"code":504}')


@pytest.mark.parametrize("line", [
    b'{"type":"ERROR","object":' + TOO_LARGE + b'}',
    # kube-apiserver 1.17.0-1.18.5: the cause message only; older: the Status message only
    b'{"type":"ERROR","object":{"kind":"Status","code":504,"reason":"Timeout","details":'
    b'{"causes":[{"message":"Too large resource version"}]}}}',
    b'{"type":"ERROR","object":{"kind":"Status","code":504,"reason":"Timeout",'
    b'"message":"Too large resource version: 90, current: 12"}}',
    b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"9"}}}',
    b'{"type":"MODIFIED","object":{"metadata":{"name":"a","namespace":"n",'
    b'"resourceVersion":"11"}}}',
    b'{"type":"DELETED","object":{"metadata":{"name":"a","namespace":"n",'
    b'"resourceVersion":"3"}}}',
], ids=["too-large", "too-large-1.17", "too-large-old", "bookmark-back", "modified-back",
        "deleted-back"])
def test_history_moved_events_without_a_server(line):
    """The too-large Status in an ERROR event, and any event or bookmark older than the
    last resourceVersion seen, mean the server's history moved: nothing is applied."""
    from kubernetai.plugins.kubernetai import informer as module

    informer = Informer(client.ApiClient(), Watched("services"), convert=lambda o: o,
                        deliver=print)
    informer.resource_version = "12"
    pending: list = []
    with pytest.raises(module._HistoryMoved):
        informer._handle(line, pending, set())
    assert pending == [] and informer.resource_version == "12"


def test_equal_newer_and_opaque_versions_are_not_a_move():
    """Equal or newer resourceVersions go on; non-numeric ones are never compared, and a
    504 that is not about resourceVersions is an ordinary error."""
    from kubernetai.plugins.kubernetai import informer as module

    informer = Informer(client.ApiClient(), Watched("services"), convert=lambda o: o,
                        deliver=print)
    informer.resource_version = "12"
    pending: list = []
    informer._handle(b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"12"}}}',
                     pending, set())
    informer._handle(b'{"type":"ADDED","object":{"metadata":{"name":"a","namespace":"n",'
                     b'"resourceVersion":"13"}}}', pending, set())
    informer._handle(b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"x7"}}}',
                     pending, set())
    informer._handle(b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"8"}}}',
                     pending, set())  # after "x7" there is nothing to compare with
    assert len(pending) == 1 and informer.resource_version == "8"
    with pytest.raises(module._WatchError):
        informer._handle(b'{"type":"ERROR","object":{"kind":"Status","code":504,'
                         b'"reason":"Timeout","message":"request timed out"}}', pending, set())


def test_http_504_too_large_is_a_history_move():
    """An HTTP 504 whose Status carries the too-large cause means re-list; a 504 from a
    proxy or an ordinary timeout does not."""
    from kubernetes.client.rest import ApiException

    from kubernetai.plugins.kubernetai import informer as module

    def error(body: bytes) -> ApiException:
        made = ApiException(status=504, reason="Gateway Timeout")
        made.body = body
        return made
    assert module._history_moved(error(TOO_LARGE))
    assert not module._history_moved(error(b"<html>504 Gateway Time-out</html>"))
    assert not module._history_moved(error(
        b'{"kind":"Status","code":504,"reason":"Timeout","message":"request timed out"}'))


def test_unknown_resource_is_rejected():
    """Only the five resources the DNS server needs can be watched."""
    with pytest.raises(ValueError):
        Informer(client.ApiClient(), Watched("secrets"), convert=dict, deliver=print)


def test_every_request_goes_through_the_limiter(sandbox, harness):
    """With a limiter (apiserver_qps/_burst/_max_inflight), each list and watch takes a slot."""
    from kubernetai.plugins.kubernetai.limiter import RequestLimiter

    class Counting(RequestLimiter):
        def __init__(self) -> None:
            super().__init__(qps=1000.0, burst=1000, max_inflight=1)
            self.taken = 0

        def request(self, timeout=None, *, token=True):
            self.taken += 1
            return super().request(timeout, token=token)

    limiter = Counting()
    sandbox.apply([service(f"s{i}") for i in range(3)])
    informer, receiver = harness.start(sandbox, limiter=limiter, page_size=2)
    sent = lists(sandbox) + sandbox.request_counts()[("watch", "services")]
    assert limiter.taken >= sent >= 3  # two list pages and a watch at least


def test_api_server_messages_are_escaped_in_error_text():
    """A Status message (or a non-JSON body) cannot start a new log line or fill it."""
    from kubernetes.client.exceptions import ApiException

    from kubernetai.plugins.kubernetai.controller import describe_api_error
    from kubernetai.plugins.kubernetai.informer import _describe

    for body in ('{"message": "no\\n[ERROR] plugin/errors: forged\\u001b[2J"}',
                 "plain\n[ERROR] forged\x1b[2J" + "x" * 5000):
        error = ApiException(status=500, reason="Boom\nForged")
        error.body = body
        for text in (_describe(error), describe_api_error(error, "http://127.0.0.1:1", 1.0)):
            assert "\n" not in text and "\x1b" not in text and len(text) < 400, text


# -- the observer (metrics) -------------------------------------------------------------


class Recorder:
    """An observer noting what it is told, and on which thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, float | None, float | None]] = []
        self.restarts: list[str] = []
        self.threads: set[str] = set()

    def request(self, code: str, seconds: float | None, waited: float | None) -> None:
        with self.lock:
            self.threads.add(threading.current_thread().name)
            self.requests.append((code, seconds, waited))

    def watch_restarted(self, reason: str) -> None:
        with self.lock:
            self.threads.add(threading.current_thread().name)
            self.restarts.append(reason)

    def codes(self) -> list[str]:
        with self.lock:
            return [code for code, _, _ in self.requests]


def test_observer_is_told_each_request_on_the_reactor(sandbox, harness):
    """Each request once, on the reactor thread: lists timed, watches not; a failed one
    under its status code; the rate limiter's wait when there is a limiter."""
    from kubernetai.plugins.kubernetai.limiter import RequestLimiter

    sandbox.apply([service(f"s{i}") for i in range(3)])
    sandbox.error(503, count=1, verbs=["list"])
    recorder = Recorder()
    harness.start(sandbox, page_size=2, observer=recorder,
                  limiter=RequestLimiter(qps=1000.0, burst=1000))
    counts = sandbox.request_counts()
    made = counts[("list", "services")] + counts[("watch", "services")]
    wait_for(lambda: len(recorder.codes()) == made, what="every request told")
    assert recorder.threads == {"reactor"}
    with recorder.lock:
        told = list(recorder.requests)
    assert [code for code, _, _ in told] == ["503", "200", "200", "200"]  # 2 pages, a watch
    assert all(seconds is not None and seconds >= 0 for _, seconds, _ in told[:3])
    assert told[3][1] is None
    assert all(waited is not None and waited >= 0 for _, _, waited in told)


def test_observer_is_told_why_each_watch_restarted(sandbox, harness):
    """A normal end, a cut, a 410 and a stall each restart the watch with their reason;
    a request refused at the connection counts as <error>; no limiter, no wait."""
    recorder = Recorder()
    informer, _ = harness.start(sandbox, observer=recorder, watch_timeout=1,
                                stall_timeout=1.0)
    wait_for(lambda: "ended" in recorder.restarts, what="a normal end")
    sandbox.cut_watches()
    wait_for(lambda: "error" in recorder.restarts, what="a cut")
    sandbox.expire_history()
    wait_for(lambda: "expired" in recorder.restarts, what="the 410")
    sandbox.stall_watches()
    wait_for(lambda: "stalled" in recorder.restarts, what="the stall")
    sandbox.unstall_watches()
    sandbox.refuse()
    wait_for(lambda: "<error>" in recorder.codes(), what="a refused request")
    sandbox.accept()
    wait_for(lambda: informer.stats.restarts == len(recorder.restarts),
             what="every restart told")
    with recorder.lock:
        assert all(waited is None for _, _, waited in recorder.requests)


def test_observer_hears_nothing_after_stop(sandbox, harness):
    """Stopping cuts the watch; that is no restart and no failed request."""
    recorder = Recorder()
    informer, _ = harness.start(sandbox, observer=recorder)
    wait_for(lambda: len(recorder.codes()) == 2, what="the list and the watch")
    informer.stop()
    from kubernetai.pkg import reactor_thread
    reactor_thread.in_reactor(lambda: None)  # whatever was on its way has arrived
    assert recorder.codes() == ["200", "200"] and recorder.restarts == []


def test_last_heard_moves_with_bookmarks(sandbox, harness):
    """The time of the last thing heard (for the last event age) follows bookmarks too."""
    informer, _ = harness.start(sandbox)
    assert informer.started_at is not None and informer.last_heard is not None
    first = informer.last_heard
    wait_for(lambda: informer.stats.bookmarks >= 1 and informer.last_heard > first,
             what="a bookmark heard")
