"""The sandbox: a simulated Kubernetes API server on a real socket, and its Python API.

`Sandbox` owns a Store, the HTTP(S) listener and the fault switches. Its methods may be
called from the reactor thread or, when the reactor runs in a thread of its own (tests,
benchmarks), from any other thread: they are carried over to the reactor and wait for it.

The state the sandbox had when it started (or when `save_initial_state()` was last called)
is what `restart()` goes back to, as a restart from manifests or an etcd restore does.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.web.server import Site

from kubernetai.pkg import reactor_thread

from . import manifests, resources, synthetic, tls
from .api import ApiSettings, KubernetesAPI, MeteredRequest
from .faults import Faults, parse_action
from .freshness import DEFAULT_DELAY
from .rbac import Policy
from .resources import ResourceType
from .status import too_old
from .store import SavedState, Store, Stored

F = TypeVar("F", bound=Callable[..., Any])


def _on_reactor(method: F) -> F:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return reactor_thread.in_reactor(method, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


class _QuietSite(Site):
    noisy = False
    requestFactory = MeteredRequest  # counts the body bytes sent (api.py)

    def log(self, request: Any) -> None:
        """Access logging is off: a benchmark makes millions of requests."""


class Sandbox:
    """One simulated cluster's API server."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 use_tls: bool = False, tls_dir: str | Path | None = None,
                 bookmark_interval: float = 60.0, history_size: int = 10_000,
                 service_cidr: str = "10.96.0.0/12",
                 too_large_rv_delay: float = DEFAULT_DELAY, watch_list: bool = True,
                 watch_cache_lists: bool = True, rbac: Policy | None = None,
                 reactor: Any = None) -> None:
        """`too_large_rv_delay`: how long a list or get at a resourceVersion the store has
        not reached waits for it before answering 504 "Too large resource version" (3 s in
        kube-apiserver's watch cache). `watch_list` False models a server without the
        WatchList feature (a watch with sendInitialEvents gets 422 Invalid);
        `watch_cache_lists` False serves resourceVersion=0 lists paginated, as etcd would,
        instead of whole in one response as the watch cache does. `rbac`: the rules
        (`rbac.load` of ClusterRoles) every resource request must be allowed by, else 403.
        These are fields of `settings`, which tests may change while the server runs."""
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.host = host
        self.port = port
        self.store = Store(history_size=history_size, service_cidr=service_cidr)
        self.faults = Faults()
        self.settings = ApiSettings(token=token, require_auth=bool(token) or use_tls,
                                    bookmark_interval=bookmark_interval,
                                    too_large_rv_delay=float(too_large_rv_delay),
                                    watch_list=watch_list,
                                    watch_cache_lists=watch_cache_lists, rbac=rbac)
        self.api = KubernetesAPI(self.store, self.faults, self.settings, reactor, self.fault,
                                 self.touch)
        self.site = _QuietSite(self.api)
        self.tls_files: tls.TLSFiles | None = None
        if use_tls:
            directory = Path(tls_dir) if tls_dir else Path(tempfile.mkdtemp(prefix="sandbox-tls-"))
            hosts = tuple(dict.fromkeys((host, "127.0.0.1", "::1", "localhost")))
            self.tls_files = tls.generate(directory, hosts=hosts)
        self._listener: IListeningPort | None = None
        self._refusing: Any = None
        self._initial: SavedState | None = None

    # -- lifecycle ----------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_files else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @_on_reactor
    def start(self) -> str:
        """Listen (synchronously) and return the URL.

        The first start saves the objects as they are as the state `restart()` returns to.
        """
        if self._initial is None:
            self._initial = self.store.snapshot_state()
        self._listen()
        return self.url

    @_on_reactor
    def save_initial_state(self) -> int:
        """Make the current objects and resourceVersion what `restart()` goes back to
        (as if they were the manifests); returns that resourceVersion."""
        self._initial = self.store.snapshot_state()
        return self._initial.rv

    def _listen(self) -> None:
        if self.tls_files is not None:
            self._listener = self.reactor.listenSSL(
                self.port, self.site, tls.server_tls_options(self.tls_files), interface=self.host)
        else:
            self._listener = self.reactor.listenTCP(self.port, self.site, interface=self.host)
        self.port = self._listener.getHost().port
        self.settings.server_address = f"{self.host}:{self.port}"

    @_on_reactor
    def stop(self) -> defer.Deferred[None]:
        if self._refusing is not None and self._refusing.active():
            self._refusing.cancel()
        self._drop_connections()
        self.api.freshness.cancel_all()
        listener, self._listener = self._listener, None
        return defer.maybeDeferred(listener.stopListening) if listener else defer.succeed(None)

    def _drop_connections(self) -> None:
        for stream in list(self.api.watches):
            stream.cut()
        for transport in list(self.api.transports):
            if getattr(transport, "disconnected", False) or transport is self.api.sparing:
                continue
            try:
                transport.abortConnection()
            except AttributeError:
                pass  # a TLS connection already torn down but not yet collected

    # -- data -------------------------------------------------------------------------

    @_on_reactor
    def apply(self, objects: Any) -> list[Stored]:
        """Create or replace objects: dicts, List objects, YAML text, or file/dir paths."""
        loaded = self._classify(objects)
        return [self.store.apply(resource, obj) for resource, obj in loaded.objects]

    @_on_reactor
    def delete(self, kind: str, namespace: str, name: str) -> Stored:
        """Delete one object; kind is a Kind ("Service") or plural ("services")."""
        return self.store.delete(_resource_named(kind), namespace, name)

    @_on_reactor
    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return self.store.get(_resource_named(kind), namespace, name).object()

    @_on_reactor
    def load_synthetic(self, spec: synthetic.SyntheticSpec | str) -> int:
        if isinstance(spec, str):
            spec = synthetic.parse_spec(spec)
        count = 0
        for obj in synthetic.generate(spec):  # streamed: 120,000 objects at full scale
            resource = resources.by_kind(obj["apiVersion"], obj["kind"])
            assert resource is not None, obj["kind"]
            self.store.apply(resource, obj, owned=True)
            count += 1
        return count

    @_on_reactor
    def touch(self, kind: str, count: int) -> int:
        """Modify up to `count` objects (a label bump each): a write burst for benchmarks."""
        resource = _resource_named(kind)
        targets = list(self.store.items(resource))[:count]
        stamp = str(self.store.rv)
        for stored in targets:
            self.store.patch(resource, stored.namespace, stored.name,
                             {"metadata": {"labels": {"kubernetai.io/touched": stamp}}})
        return len(targets)

    def _classify(self, objects: Any) -> manifests.Loaded:
        if isinstance(objects, dict):
            return manifests.classify([objects])
        if isinstance(objects, Path):
            return manifests.load_paths([objects])
        if isinstance(objects, str):
            if "\n" in objects or ":" in objects and not Path(objects).exists():
                import yaml
                return manifests.classify(d for d in yaml.safe_load_all(objects) if d)
            return manifests.load_paths([objects])
        return manifests.classify(objects)

    @property
    def resource_version(self) -> int:
        return self.store.rv

    @_on_reactor
    def request_counts(self) -> dict[tuple[str, str], int]:
        """How many requests of each (verb, resource) the API served so far."""
        return dict(self.api.requests)

    @_on_reactor
    def forbidden_counts(self) -> dict[tuple[str, str], int]:
        """Of those, how many RBAC refused with 403, by (verb, resource)."""
        return dict(self.api.forbidden)

    @_on_reactor
    def token_counts(self) -> dict[str, int]:
        """How many requests each bearer token was accepted for (with no auth required,
        every token presented: a benchmark gives each client its own to tell them apart)."""
        return dict(self.api.tokens)

    @_on_reactor
    def byte_counts(self) -> dict[tuple[str, str], int]:
        """Response body bytes sent for each (verb, resource) so far: list pages, objects,
        watch streams with their bookmarks (not HTTP headers or chunk framing)."""
        return dict(self.api.bytes)

    @_on_reactor
    def watch_counts(self) -> tuple[int, int]:
        """Watch streams open now, and opened since the start."""
        return len(self.api.watches), self.api.watches_opened

    @_on_reactor
    def meters(self) -> dict[str, Any]:
        """Everything ``GET /_sandbox/requests`` answers (api.KubernetesAPI.meters)."""
        return self.api.meters()

    @_on_reactor
    def unauthorized_count(self) -> int:
        """How many requests were refused with 401 (no or a wrong token)."""
        return self.api.unauthorized

    @_on_reactor
    def rotate_token(self, token: str) -> int:
        """Accept only `token` from now on, as when a service account token is rotated and
        the old one has expired: requests with another token get 401 and the watches
        opened with another are ended (not those of a client certificate). Returns how
        many watches were ended. The same as ``POST /_sandbox/token {"token": NEW}``."""
        return self.api.rotate_token(token)

    def write_kubeconfig(self, path: str | Path, **names: str) -> Path:
        files = self.tls_files
        return tls.write_kubeconfig(
            Path(path), self.url, ca_file=files.ca_cert if files else None,
            client_cert=files.client_cert if files else None,
            client_key=files.client_key if files else None,
            token=self.settings.token, **names)

    # -- faults -----------------------------------------------------------------------

    @_on_reactor
    def fault(self, spec: dict[str, Any]) -> Any:
        """Carry out one fault action described as data (the control endpoint's format)."""
        action, args = parse_action(spec)
        method = getattr(self, "_fault_" + action.replace("-", "_"))
        try:
            return method(**args)
        except TypeError as error:
            raise ValueError(f"bad arguments for fault {action!r}: {error}") from None

    def refuse(self, seconds: float | None = None) -> Any:
        """Stop listening and drop every connection; listen again after `seconds` if given."""
        return self.fault({"action": "refuse", "seconds": seconds})

    def accept(self) -> Any:
        return self.fault({"action": "accept"})

    def cut_watches(self) -> Any:
        return self.fault({"action": "cut-watches"})

    def stall_watches(self) -> Any:
        return self.fault({"action": "stall-watches"})

    def unstall_watches(self) -> Any:
        return self.fault({"action": "unstall-watches"})

    def cut_watch_after(self, events: int | None) -> Any:
        return self.fault({"action": "cut-watch-after", "events": events})

    def error(self, code: int, *, count: int | None = None, verbs: Iterable[str] = (),
              retry_after: int = 1, plain: bool = False) -> Any:
        """Answer requests with `code`: a Status body; a 429 has Retry-After (seconds) and
        details.retryAfterSeconds, or with `plain` the text body of the throttling
        filters."""
        return self.fault({"action": "error", "code": code, "count": count,
                           "verbs": list(verbs), "retry_after": retry_after, "plain": plain})

    def delay(self, seconds: float) -> Any:
        return self.fault({"action": "delay", "seconds": seconds})

    def expire_history(self) -> Any:
        return self.fault({"action": "expire-history"})

    def new_epoch(self, jump: int = 1_000_000) -> Any:
        return self.fault({"action": "new-epoch", "jump": jump})

    def restart(self, seconds: float | None = None) -> Any:
        """Restart as from the manifests: drop every connection, forget everything written
        since the initial state and its history, and count resourceVersions from the
        initial one again (below what clients have seen). With `seconds`, refuse
        connections that long first, as a real restart takes a while. Returns the
        resourceVersion the sandbox is back at."""
        return self.fault({"action": "restart", "seconds": seconds})

    def clear_faults(self) -> Any:
        return self.fault({"action": "clear"})

    def _fault_refuse(self, seconds: float | None = None) -> str:
        self._drop_connections()
        if self._listener is not None:
            self._listener.stopListening()
            self._listener = None
        if seconds:
            self._refusing = self.reactor.callLater(float(seconds), self._fault_accept)
        return "refusing"

    def _fault_accept(self) -> str:
        if self._listener is None:
            self._listen()
        return "accepting"

    def _fault_cut_watches(self) -> int:
        streams = list(self.api.watches)
        for stream in streams:
            stream.cut()
        return len(streams)

    def _fault_stall_watches(self) -> str:
        self.faults.stall_watches = True
        return "stalled"

    def _fault_unstall_watches(self) -> str:
        self.faults.stall_watches = False
        return "flowing"

    def _fault_cut_watch_after(self, events: int | None = None) -> int | None:
        self.faults.cut_watch_after = int(events) if events is not None else None
        return self.faults.cut_watch_after

    def _fault_error(self, code: int, count: int | None = None, verbs: Iterable[str] = (),
                     retry_after: int = 1, plain: bool = False) -> str:
        self.faults.add_error(int(code), count=None if count is None else int(count),
                              verbs=verbs, retry_after=int(retry_after), plain=_truth(plain))
        return f"answering {code}"

    def _fault_delay(self, seconds: float) -> float:
        self.faults.delay = float(seconds)
        return self.faults.delay

    def _fault_expire_history(self) -> int:
        """Drop history and end open watches with 410, so clients must re-list."""
        self.store.expire_history()
        return self._end_watches_expired()

    def _fault_new_epoch(self, jump: int = 1_000_000) -> int:
        self.store.new_epoch(int(jump))
        return self._end_watches_expired()

    def _fault_restart(self, seconds: float | None = None) -> int:
        if seconds:
            self._fault_refuse(float(seconds))
        else:
            self._drop_connections()
        if self._initial is None:
            self._initial = self.store.snapshot_state()
        self.store.restore_state(self._initial)
        return self.store.rv

    def _end_watches_expired(self) -> int:
        streams = list(self.api.watches)
        for stream in streams:
            stream.fail(too_old(self.store.rv - 1, self.store.floor(stream.resource)))
        return len(streams)

    def _fault_clear(self) -> str:
        self.faults.clear()
        if self._listener is None:
            self._listen()
        return "cleared"


def _truth(value: Any) -> bool:
    """A boolean argument as the control endpoint or the command line may spell it."""
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    return bool(value)


def _resource_named(kind: str) -> ResourceType:
    for resource in resources.ALL:
        if kind in (resource.kind, resource.plural, resource.singular) + resource.short_names:
            return resource
    raise ValueError(f"unknown kind {kind!r}")
