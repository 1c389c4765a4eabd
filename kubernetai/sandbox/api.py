"""The HTTP face of the sandbox: kube-apiserver's REST paths over a Store.

Routes discovery documents, list (with selectors and pagination), get, watch and writes on
core and group paths, cluster-wide and namespaced, answers errors with Status bodies, checks
the bearer token or client certificate, enforces RBAC when given ClusterRoles (rbac.py: a
403 Forbidden Status for anything their rules do not allow), counts requests by verb and
resource (tests use the counts to prove a client did or did not re-list, and the 403s to
prove it needed nothing more than its ClusterRole), and applies the fault switches.

It also meters what it sends: the response body bytes of each (verb, resource), list pages
and watch streams alike (events, bookmarks, the closing ERROR), and of each bearer token
(any token presented is recorded when no auth is required, so clients can be told apart by
a token of their own), and the watch streams open now and opened so far. A benchmark
reads them to tell what a client costs the API server; it is an int add per write
(`MeteredRequest`, the site's request class), not counting HTTP headers or chunk framing.

The accepted token can be changed while the server runs (`rotate_token`, the control path
``POST /_sandbox/token``): only the new one is accepted from then on and the watches opened
with another are ended, as if the old token had expired and the connections carrying it
been closed; so a client that rotates its token is seen to pick up the new one.

Reads follow kube-apiserver's resourceVersion semantics: a list or get at a resourceVersion
the store has not reached waits for it (`too_large_rv_delay`, 3 s like the watch cache) and
then answers 504 "Too large resource version"; an exact list reads the past state or gets
410; a watch from the future stays silent (see watch.py). Reads answer the `Table` form when
the Accept header asks for it (tables.py). Writes honour dryRun=All.

The three ways a client can list are served as kube-apiserver serves them: a watch with
sendInitialEvents=true (watch-list: the state as ADDED events, then the BOOKMARK annotated
k8s.io/initial-events-end), validated as the real server validates it (it needs
resourceVersionMatch=NotOlderThan; a server without the WatchList feature, `watch_list`
False, refuses it with 422 Invalid); a resourceVersion=0 list, answered whole from the
watch cache whatever its `limit` (`watch_cache_lists` False serves it paginated, as etcd
would); and a consistent list, paginated with continue tokens.
"""

from __future__ import annotations

import hmac
import json
import weakref
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from twisted.internet.interfaces import IReactorTime
from twisted.python import log
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from kubernetai.pkg.selectors import SelectorError, parse_field_selector, parse_label_selector

from . import openapi, rbac, resources, tables, tls
from .faults import ErrorRule, Faults
from .freshness import DEFAULT_DELAY, Freshness
from .rbac import Policy
from .resources import ResourceType
from .status import ApiError, status_body, too_large, too_many_requests
from .store import Page, Store, Stored, dumps
from .watch import WatchStream, parse_resource_version

LIST_BATCH = 500


@dataclass(frozen=True, slots=True)
class Target:
    """What a request path names."""

    resource: ResourceType
    namespace: str | None
    name: str | None


@dataclass(slots=True)
class ApiSettings:
    token: str | None = None
    require_auth: bool = False
    bookmark_interval: float = 60.0
    server_address: str = "127.0.0.1:0"
    # How long a read at a resourceVersion the store has not reached waits for it before
    # the 504 "Too large resource version" (kube-apiserver's watch cache: 3 s).
    too_large_rv_delay: float = DEFAULT_DELAY
    # The WatchList feature (watch with sendInitialEvents=true): False models a server
    # without it, which refuses such a watch with 422 Invalid.
    watch_list: bool = True
    # resourceVersion=0 lists served from the watch cache, whole, ignoring `limit` (as
    # kube-apiserver does); False serves them from "etcd", paginated like any list.
    watch_cache_lists: bool = True
    # ClusterRoles' rules the user must have for each resource request (None: no RBAC).
    rbac: Policy | None = None


@dataclass(frozen=True, slots=True)
class ReadVersion:
    """What a list or get asked of the resourceVersion.

    `rv` None means "" or "0" (latest or any); `exact` means the state at exactly `rv`
    (resourceVersionMatch=Exact, or a legacy paginated list), served from history by the
    store; otherwise the answer must be at least as new as `rv`.
    """

    rv: int | None = None
    exact: bool = False


class KubernetesAPI(Resource):
    """A leaf resource answering every path the way kube-apiserver would."""

    isLeaf = True

    def __init__(self, store: Store, faults: Faults, settings: ApiSettings,
                 reactor: IReactorTime, control: Callable[[dict[str, Any]], Any],
                 touch: Callable[[str, int], int]) -> None:
        super().__init__()
        self.store = store
        self.faults = faults
        self.settings = settings
        self.reactor = reactor
        self.control = control
        self.touch = touch
        self.requests: Counter[tuple[str, str]] = Counter()
        # Of those, the ones RBAC refused (403), by (verb, resource).
        self.forbidden: Counter[tuple[str, str]] = Counter()
        # Requests accepted by bearer token, by token; requests refused with 401.
        self.tokens: Counter[str] = Counter()
        self.unauthorized = 0
        self.watches: set[WatchStream] = set()
        # Response body bytes by (verb, resource) and by bearer token (MeteredRequest adds
        # them), and how many watch streams were opened in all.
        self.bytes: Counter[tuple[str, str]] = Counter()
        self.token_bytes: Counter[str] = Counter()
        self.watches_opened = 0
        self.freshness = Freshness(store, reactor)
        # The connection carrying a fault request while it runs: a fault that drops every
        # connection (refuse, restart) spares it, so the request still gets its answer.
        self.sparing: Any = None
        # Connections that made a request, so a fault can drop them all.
        self.transports: weakref.WeakSet[Any] = weakref.WeakSet()

    def render(self, request: Request) -> Any:
        if request.channel is not None and request.channel.transport is not None:
            self.transports.add(request.channel.transport)
        if self.faults.delay > 0:
            self.reactor.callLater(self.faults.delay, self._serve, request)
        else:
            self._serve(request)
        return NOT_DONE_YET

    # -- dispatch -----------------------------------------------------------------

    def _serve(self, request: Request) -> None:
        def serve() -> None:
            self._authenticate(request)
            self._dispatch(request)
        self._guarded(request, serve)

    def _guarded(self, request: Request, serve: Callable[[], None]) -> None:
        """Run one step of serving a request; errors become Status answers."""
        if request.finished or request._disconnected:
            return
        try:
            serve()
        except ApiError as error:
            self._send_error(request, error)
        except Exception:  # noqa: BLE001 - a bug must answer 500, not hang the client
            log.err(None, "sandbox: unhandled error serving " + request.uri.decode("latin-1"))
            self._send_error(request, ApiError(500, "internal error in the sandbox"))

    def _authenticate(self, request: Request) -> None:
        if not self.settings.require_auth:
            token = bearer_token(request)
            if token is not None:  # anyone is let in; the token still tells clients apart
                self.tokens[token] += 1
            return
        token = bearer_token(request)
        if token is not None and self._token_accepted(token):
            self.tokens[token] += 1
            return
        if _client_certified(request):
            return
        self.unauthorized += 1
        raise ApiError(401, "Unauthorized")

    def _token_accepted(self, token: str) -> bool:
        accepted = self.settings.token
        if not accepted:
            return False
        return hmac.compare_digest(token.encode(), accepted.encode())

    def rotate_token(self, token: str) -> int:
        """Accept only `token` from now on; end the watches not opened with it (those of a
        verified client certificate go on). Returns how many were ended."""
        if not token or any(c.isspace() or not c.isprintable() for c in token):
            raise ValueError("a token is a non-empty string without spaces or control "
                             "characters")
        self.settings.token = token
        self.settings.require_auth = True
        ended = [stream for stream in self.watches
                 if bearer_token(stream.request) != token
                 and not _client_certified(stream.request)]
        for stream in ended:
            channel = stream.request.channel
            transport = channel.transport if channel is not None else None
            stream.cut()
            # Over TLS a lost connection waits for the HTTP channel's producer to go
            # away, which a watch never does: drop it outright.
            if transport is not None:
                transport.abortConnection()
        return len(ended)

    def _dispatch(self, request: Request) -> None:
        path = urlsplit(request.uri.decode("latin-1")).path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(urlsplit(request.uri.decode("latin-1")).query,
                                                keep_blank_values=True).items()}
        method = request.method.decode()
        if path.startswith("/_sandbox"):
            self._control(request, path, method)
            return
        document = self._discovery(path)
        if document is not None:
            if method != "GET":
                raise ApiError(405, f"the server does not allow this method on {path}")
            self._send_json(request, 200, document)
            return
        self._authorize(method, path, query)
        target = parse_path(path)
        verb = _verb(method, target, query)
        self.requests[(verb, target.resource.plural)] += 1
        self._meter(request, (verb, target.resource.plural))
        rule = self.faults.take_error(verb)
        if rule is not None:
            if rule.plain:
                self._send_throttled(request, rule.retry_after)
                return
            raise _fault_error(rule)
        getattr(self, "_" + verb)(request, target, query)

    def _meter(self, request: Request, key: tuple[str, str]) -> None:
        """From now on the body bytes this request writes count for `key` (and its token)."""
        if isinstance(request, MeteredRequest):
            request.meter_key = key
            request.meter_counts = self.bytes
            token = bearer_token(request)
            if token is not None and token in self.tokens:
                request.meter_token = token
                request.meter_tokens = self.token_bytes

    def _opened(self, stream: WatchStream) -> None:
        self.watches.add(stream)
        self.watches_opened += 1

    def _authorize(self, method: str, path: str, query: dict[str, str]) -> None:
        """RBAC, before routing as in kube-apiserver: a request its rules do not allow is
        counted (as a request and as forbidden) and answered 403."""
        policy = self.settings.rbac
        if policy is None:
            return
        request = rbac.attributes(method, path, query)
        if request is None or policy.allows(request):
            return
        self.requests[(request.verb, request.resource)] += 1
        self.forbidden[(request.verb, request.resource)] += 1
        raise rbac.forbidden(request)

    def _discovery(self, path: str) -> Any:
        if path == "/version":
            return resources.SERVER_VERSION
        if path in ("/healthz", "/livez", "/readyz"):
            return "ok"
        if path == "/api":
            return resources.api_versions(self.settings.server_address)
        if path == "/apis":
            return resources.api_group_list()
        if path == "/openapi/v3":
            return openapi.root()
        if path.startswith("/openapi/v3/"):
            return openapi.group_version(path[len("/openapi/v3/"):]) or _missing()
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            return resources.resource_list("", parts[1]) or _missing()
        if parts[0] == "apis" and len(parts) == 2:
            return resources.api_group(parts[1]) or _missing()
        if parts[0] == "apis" and len(parts) == 3:
            return resources.resource_list(parts[1], parts[2]) or _missing()
        return None

    # -- verbs --------------------------------------------------------------------

    def _list(self, request: Request, target: Target, query: dict[str, str]) -> None:
        labels, fields = self._selectors(target.resource, query)
        limit = _int(query.get("limit", "0"), "limit")
        continue_token = query.get("continue", "")
        version = _list_version(query, limit, continue_token)
        if (self.settings.watch_cache_lists and query.get("resourceVersion") == "0"
                and not continue_token):
            # The watch cache answers resourceVersion=0 whole, in one response: it has
            # no continue tokens, so kube-apiserver ignores `limit` there.
            limit = 0
        table = self._table(request, query)

        def serve() -> None:
            page = self.store.list(target.resource, namespace=target.namespace,
                                   labels=labels, fields=fields, limit=limit,
                                   continue_token=continue_token,
                                   exact_rv=version.rv if version.exact else None)
            self._send_page(request, target.resource, page, table)
        self._when_fresh(request, version, serve)

    def _send_page(self, request: Request, resource: ResourceType, page: Page,
                   table: tables.TableOptions | None) -> None:
        meta: dict[str, Any] = {"resourceVersion": str(page.rv)}
        if page.continue_token:
            meta["continue"] = page.continue_token
            if page.remaining is not None:
                meta["remainingItemCount"] = page.remaining
        if table is not None:
            self._send_bytes(request, 200, tables.encode_objects(
                resource, (item.body for item in page.items), options=table, list_meta=meta,
                now=self.store.clock()))
            return
        head = (b'{"kind":"' + resource.list_kind.encode() + b'","apiVersion":"'
                + resource.api_version.encode() + b'","metadata":' + dumps(meta)
                + b',"items":[')
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/json")
        _ListProducer(request, head, page.items).start()

    def _watch(self, request: Request, target: Target, query: dict[str, str]) -> None:
        _validate_watch(query, self.settings.watch_list)
        labels, fields = self._selectors(target.resource, query)
        timeout = query.get("timeoutSeconds")
        table = self._table(request, query)
        render = None if table is None else tables.watch_renderer(target.resource, table,
                                                                  self.store.clock)
        stream = WatchStream(
            request, store=self.store, resource=target.resource, namespace=target.namespace,
            labels=labels, fields=fields,
            bookmarks=_flag(query.get("allowWatchBookmarks")),
            bookmark_interval=self.settings.bookmark_interval,
            timeout=float(_int(timeout, "timeoutSeconds")) if timeout else None,
            faults=self.faults, reactor=self.reactor, on_close=self.watches.discard,
            render=render)
        resource_version = query.get("resourceVersion", "")
        send_initial: bool | None = None
        if "sendInitialEvents" in query:
            send_initial = _flag(query.get("sendInitialEvents"))
        requested = parse_resource_version(resource_version)
        if not send_initial or requested is None or requested <= self.store.rv:
            self._opened(stream)
            stream.start(resource_version, send_initial)
            return
        # With sendInitialEvents the watch cache first waits to be fresh enough
        # (waitUntilFreshAndBlock); past the delay the watch is one ERROR event.
        def fresh(ready: bool) -> None:
            if request.finished or request._disconnected:
                return
            self._opened(stream)
            if ready:
                stream.start(resource_version, send_initial)
            else:
                stream.refuse(too_large(requested, self.store.rv, 1))
        self.freshness.wait(requested, self.settings.too_large_rv_delay).addCallback(
            lambda ready: self._guarded(request, lambda: fresh(ready)))

    def _get(self, request: Request, target: Target, query: dict[str, str]) -> None:
        assert target.name is not None
        table = self._table(request, query)
        requested = parse_resource_version(query.get("resourceVersion", ""))

        def serve() -> None:
            stored = self.store.get(target.resource, target.namespace or "", target.name)
            if table is None:
                self._send_stored(request, 200, stored)
                return
            self._send_json(request, 200, tables.object_table(
                target.resource, stored.object(), options=table, now=self.store.clock()))
        self._when_fresh(request, ReadVersion(requested), serve)

    def _create(self, request: Request, target: Target, query: dict[str, str]) -> None:
        obj = _body(request)
        dry_run = _dry_run(query.get("dryRun"), "CreateOptions")
        if target.resource.namespaced and target.namespace is None:
            raise ApiError(405, "POST requires a namespaced path for "
                                f"{target.resource.plural}")
        self._send_stored(request, 201, self.store.create(target.resource, obj,
                                                          target.namespace, dry_run=dry_run))

    def _update(self, request: Request, target: Target, query: dict[str, str]) -> None:
        dry_run = _dry_run(query.get("dryRun"), "UpdateOptions")
        stored = self.store.replace(target.resource, _body(request), target.namespace,
                                    target.name, dry_run=dry_run)
        self._send_stored(request, 200, stored)

    def _patch(self, request: Request, target: Target, query: dict[str, str]) -> None:
        assert target.name is not None
        content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip()
        if content_type not in (b"application/merge-patch+json",
                                b"application/strategic-merge-patch+json"):
            raise ApiError(415, f"the body of the request was in an unknown format - accepted "
                                f"media types include: application/merge-patch+json, "
                                f"application/strategic-merge-patch+json (got "
                                f"{content_type.decode() or 'none'})")
        dry_run = _dry_run(query.get("dryRun"), "PatchOptions")
        stored = self.store.patch(target.resource, target.namespace or "", target.name,
                                  _body(request), dry_run=dry_run)
        self._send_stored(request, 200, stored)

    def _delete(self, request: Request, target: Target, query: dict[str, str]) -> None:
        assert target.name is not None
        # DeleteOptions come in the body when there is one (kubectl sends them there),
        # else from the query, as kube-apiserver's delete handler reads them.
        options = _body(request) if _has_body(request) else None
        if isinstance(options, dict):
            dry_run = _dry_run(options.get("dryRun"), "DeleteOptions")
        else:
            dry_run = _dry_run(query.get("dryRun"), "DeleteOptions")
        stored = self.store.delete(target.resource, target.namespace or "", target.name,
                                   dry_run=dry_run)
        self._send_stored(request, 200, stored)

    def _selectors(self, resource: ResourceType, query: dict[str, str]) -> Any:
        try:
            return (parse_label_selector(query.get("labelSelector")),
                    parse_field_selector(query.get("fieldSelector"), resource.selectable_fields))
        except SelectorError as error:
            raise ApiError(400, str(error)) from None

    def _table(self, request: Request, query: dict[str, str]) -> tables.TableOptions | None:
        accept = request.getHeader(b"accept")
        return tables.table_options(accept.decode("latin-1") if accept else None,
                                    query.get("includeObject"))

    def _when_fresh(self, request: Request, version: ReadVersion,
                    serve: Callable[[], None]) -> None:
        """Serve a read now, or once the store has reached the resourceVersion it asks
        for; past the delay, answer what the watch cache answers: 504 too large."""
        requested = version.rv
        if requested is None or version.exact or requested <= self.store.rv:
            serve()
            return

        def fresh(ready: bool) -> None:
            if not ready:
                raise too_large(requested, self.store.rv, 1)
            serve()
        self.freshness.wait(requested, self.settings.too_large_rv_delay).addCallback(
            lambda ready: self._guarded(request, lambda: fresh(ready)))

    # -- control endpoint ---------------------------------------------------------

    def _control(self, request: Request, path: str, method: str) -> None:
        if path == "/_sandbox/requests" and method == "GET":
            self._send_json(request, 200, self.meters())
        elif path == "/_sandbox/token" and method == "POST":
            spec = _body(request)
            token = spec.get("token") if isinstance(spec, dict) else None
            if not isinstance(token, str):
                raise ApiError(400, 'expected {"token": NEW}')
            try:
                ended = self.rotate_token(token)
            except ValueError as error:
                raise ApiError(400, str(error)) from None
            self._send_json(request, 200, {"ok": True, "watches_ended": ended})
        elif path == "/_sandbox/touch" and method == "POST":
            spec = _body(request)
            if not isinstance(spec, dict):
                raise ApiError(400, 'expected {"kind": KIND, "count": N}')
            try:
                touched = self.touch(str(spec.get("kind")), int(spec.get("count", 0)))
            except ValueError as error:
                raise ApiError(400, str(error)) from None
            self._send_json(request, 200, {"touched": touched})
        elif path == "/_sandbox/faults" and method == "GET":
            self._send_json(request, 200, self.faults.describe())
        elif path == "/_sandbox/faults" and method == "POST":
            self.sparing = request.channel.transport if request.channel else None
            try:
                result = self.control(_body(request))
            except ValueError as error:
                raise ApiError(400, str(error)) from None
            finally:
                self.sparing = None
            self._send_json(request, 200, {"ok": True, "result": result})
        else:
            raise ApiError(404, f"no sandbox control at {method} {path}")

    def meters(self) -> dict[str, Any]:
        """What ``GET /_sandbox/requests`` answers: requests, 403s and 401s, response body
        bytes by (verb, resource), watch streams open and opened, and per bearer token
        the requests, bytes and open watches."""
        open_by_token: Counter[str] = Counter(bearer_token(stream.request) or ""
                                              for stream in self.watches)
        return {"requests": _counts(self.requests),
                "forbidden": _counts(self.forbidden),
                "unauthorized": self.unauthorized,
                "bytes": [{"verb": v, "resource": r, "bytes": n}
                          for (v, r), n in sorted(self.bytes.items())],
                "watches_open": len(self.watches),
                "watches_opened": self.watches_opened,
                "tokens": [{"token": token, "requests": count,
                            "bytes": self.token_bytes.get(token, 0),
                            "watches_open": open_by_token.get(token, 0)}
                           for token, count in sorted(self.tokens.items())]}

    # -- responses ----------------------------------------------------------------

    def _send_stored(self, request: Request, code: int, stored: Stored) -> None:
        self._send_bytes(request, code, stored.body)

    def _send_json(self, request: Request, code: int, document: Any) -> None:
        self._send_bytes(request, code, dumps(document))

    def _send_error(self, request: Request, error: ApiError) -> None:
        if request.finished or request._disconnected:
            return
        if request.startedWriting:
            request.finish()
            return
        if error.retry_after is not None:
            # responsewriters.ErrorNegotiated: any Status with retryAfterSeconds > 0.
            request.setHeader(b"retry-after", str(error.retry_after).encode())
        self._send_bytes(request, error.code, dumps(error.status()))

    def _send_throttled(self, request: Request, retry_after: int) -> None:
        """The 429 of kube-apiserver's max-in-flight and priority-and-fairness filters:
        Retry-After and a plain-text body (Go's http.Error), not a Status."""
        body = b"Too many requests, please try again later.\n"
        request.setResponseCode(429, b"Too Many Requests")
        request.setHeader(b"retry-after", str(retry_after).encode())
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-length", str(len(body)).encode())
        request.write(body)
        request.finish()

    def _send_bytes(self, request: Request, code: int, body: bytes) -> None:
        request.setResponseCode(code, HTTPStatus(code).phrase.encode())
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"content-length", str(len(body)).encode())
        request.write(body)
        request.finish()


def bearer_token(request: Request) -> str | None:
    """The bearer token of a request's Authorization header, read as kube-apiserver reads
    it: the scheme in any letter case (the official Python client sends ``bearer``)."""
    header = (request.getHeader(b"authorization") or b"").decode("latin-1").strip()
    parts = header.split(" ", 2)
    if len(parts) < 2 or parts[0].lower() != "bearer" or not parts[1]:
        return None
    return parts[1]


def _client_certified(request: Request) -> bool:
    transport = request.channel.transport if request.channel else None
    return transport is not None and tls.peer_common_name(transport) is not None


def _counts(counter: Counter[tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"verb": v, "resource": r, "count": n} for (v, r), n in sorted(counter.items())]


def _fault_error(rule: ErrorRule) -> ApiError:
    """The Status an injected error answers with; a 429 tells when to retry."""
    if rule.code == 429:
        return too_many_requests(rule.retry_after)
    return ApiError(rule.code, _FAULT_MESSAGES.get(rule.code, "injected fault"))


_FAULT_MESSAGES = {
    429: "Too many requests, please try again later.",
    500: "Internal error occurred: injected by the sandbox",
    503: "The server is currently unable to handle the request",
    504: "The server was unable to return a response in the time allotted",
    401: "Unauthorized",
    403: "forbidden: injected by the sandbox",
}


class MeteredRequest(Request):
    """A request that adds the body bytes it writes to its API's counters once `_meter`
    has named what it serves: one int add per write (two with a token)."""

    meter_key: tuple[str, str] | None = None
    meter_counts: Counter[tuple[str, str]] | None = None
    meter_token: str | None = None
    meter_tokens: Counter[str] | None = None

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.meter_counts is not None and data:
            self.meter_counts[self.meter_key] += len(data)  # type: ignore[index]
            if self.meter_tokens is not None:
                self.meter_tokens[self.meter_token] += len(data)  # type: ignore[index]


class _ListProducer:
    """Writes a list response in batches, pausing while the client's socket is full."""

    def __init__(self, request: Request, head: bytes, items: list[Stored]) -> None:
        self.request = request
        self.head = head
        self.items = items
        self.index = 0

    def start(self) -> None:
        self.request.registerProducer(self, False)

    def resumeProducing(self) -> None:
        if self.request.finished or self.request._disconnected:
            return
        batch = self.items[self.index:self.index + LIST_BATCH]
        chunk = b",".join(item.body for item in batch)
        if self.index == 0:
            chunk = self.head + chunk
        elif batch:
            chunk = b"," + chunk
        self.index += len(batch)
        if self.index >= len(self.items):
            self.request.unregisterProducer()
            self.request.write(chunk + b"]}")
            self.request.finish()
        else:
            self.request.write(chunk)

    def stopProducing(self) -> None:
        self.index = len(self.items)


def parse_path(path: str) -> Target:
    """Map a REST path to a resource, namespace and name, or raise 404."""
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[0] == "apis" and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise _missing_error()
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 2:
        raise _missing_error()
    resource = resources.by_path(group, version, rest[0])
    if resource is None or (namespace is not None and not resource.namespaced):
        raise _missing_error()
    return Target(resource, namespace, rest[1] if len(rest) == 2 else None)


def _verb(method: str, target: Target, query: dict[str, str]) -> str:
    if target.name is None:
        if method == "GET":
            return "watch" if _flag(query.get("watch")) else "list"
        if method == "POST":
            return "create"
    else:
        verbs = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
        if method in verbs:
            if method == "GET" and _flag(query.get("watch")):
                raise ApiError(400, "watch of a single object: use fieldSelector=metadata.name")
            return verbs[method]
    raise ApiError(405, f"the server does not allow this method on the requested resource "
                        f"({method})")


def _invalid(problems: list[tuple[str, str, str]]) -> ApiError:
    """The 422 Invalid kube-apiserver answers ListOptions validation errors with:
    (field, reason of the cause, "Forbidden: ..." detail) for each problem."""
    shown = [f"{field}: {detail}" for field, _, detail in problems]
    message = 'ListOptions.meta.k8s.io "" is invalid: ' + (
        shown[0] if len(shown) == 1 else "[" + ", ".join(shown) + "]")
    return ApiError(422, message, details={
        "group": "meta.k8s.io", "kind": "ListOptions",
        "causes": [{"reason": reason, "message": detail, "field": field}
                   for field, reason, detail in problems]})


def _validate_watch(query: dict[str, str], watch_list: bool) -> None:
    """A watch's options, validated as kube-apiserver's validateWatchOptions does.

    sendInitialEvents needs resourceVersionMatch=NotOlderThan, and a server without the
    WatchList feature forbids it; resourceVersionMatch needs sendInitialEvents. (A server
    older than 1.27 forbids resourceVersionMatch on any watch, also with a 422: a client
    asking for watch-list learns the same either way.)
    """
    match = query.get("resourceVersionMatch", "")
    send_initial = "sendInitialEvents" in query
    problems = []
    if send_initial:
        if match != "NotOlderThan":
            problems.append(("resourceVersionMatch", "FieldValueForbidden",
                             "Forbidden: sendInitialEvents requires setting "
                             "resourceVersionMatch to NotOlderThan"))
        if not watch_list:
            problems.append(("sendInitialEvents", "FieldValueForbidden",
                             "Forbidden: sendInitialEvents is forbidden for watch unless "
                             "the WatchList feature gate is enabled"))
    if match:
        if not send_initial:
            problems.append(("resourceVersionMatch", "FieldValueForbidden",
                             "Forbidden: resourceVersionMatch is forbidden for watch unless "
                             "sendInitialEvents is provided"))
        if match != "NotOlderThan":
            problems.append(("resourceVersionMatch", "FieldValueNotSupported",
                             f'Unsupported value: "{match}": supported values: '
                             '"NotOlderThan"'))
        if query.get("continue"):
            problems.append(("resourceVersionMatch", "FieldValueForbidden",
                             "Forbidden: resourceVersionMatch is forbidden when continue "
                             "is provided"))
    if problems:
        raise _invalid(problems)


def _list_version(query: dict[str, str], limit: int, continue_token: str) -> ReadVersion:
    """Validate a list's resourceVersion options as kube-apiserver does and classify them.

    Exact reads (resourceVersionMatch=Exact, or a resourceVersion with a limit and no
    match: the legacy exact list) go to etcd there, which serves the past or answers at
    once; the others are served by the watch cache, which waits for a future one.
    """
    text = query.get("resourceVersion", "")
    match = query.get("resourceVersionMatch", "")
    problems = []
    if match:
        if not text:
            problems.append("resourceVersionMatch: Forbidden: resourceVersionMatch is "
                            "forbidden unless resourceVersion is provided")
        if continue_token:
            problems.append("resourceVersionMatch: Forbidden: resourceVersionMatch is "
                            "forbidden when continue is provided")
        if match not in ("Exact", "NotOlderThan"):
            problems.append(f'resourceVersionMatch: Unsupported value: "{match}": supported '
                            'values: "Exact", "NotOlderThan", ""')
        if match == "Exact" and text == "0":
            problems.append('resourceVersionMatch: Forbidden: resourceVersionMatch "exact" '
                            'is forbidden for resourceVersion "0"')
    if "sendInitialEvents" in query:
        problems.append("sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list")
    if problems:
        message = "ListOptions.meta.k8s.io \"\" is invalid: " + (
            problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]")
        raise ApiError(422, message)
    if continue_token and text not in ("", "0"):
        raise ApiError(400, "specifying resource version is not allowed when using continue")
    rv = parse_resource_version(text)
    if rv is None or continue_token:
        return ReadVersion()
    return ReadVersion(rv, exact=match == "Exact" or (not match and limit > 0))


def _dry_run(value: Any, options_kind: str) -> bool:
    """dryRun: absent, or "All" (the only value kube-apiserver accepts)."""
    if value in (None, "", []):
        return False
    values = value if isinstance(value, list) else [value]
    if all(v == "All" for v in values):
        return True
    shown = "[]string{" + ", ".join(json.dumps(str(v)) for v in values) + "}"
    raise ApiError(422, f'{options_kind}.meta.k8s.io "" is invalid: dryRun: Unsupported '
                        f'value: {shown}: supported values: "All"',
                   details={"group": "meta.k8s.io", "kind": options_kind,
                            "causes": [{"reason": "FieldValueNotSupported",
                                        "message": f'Unsupported value: {shown}: supported '
                                                   'values: "All"',
                                        "field": "dryRun"}]})


def _has_body(request: Request) -> bool:
    content = request.content
    if content is None:
        return False
    position = content.tell()
    empty = not content.read(1)
    content.seek(position)
    return not empty


def _body(request: Request) -> Any:
    raw = request.content.read() if request.content is not None else b""
    try:
        return json.loads(raw or b"null")
    except ValueError:
        raise ApiError(400, "the body of the request was in an unknown format - accepted "
                            "media types include: application/json") from None


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true")


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"invalid {name} parameter: {value!r}") from None


def _missing_error() -> ApiError:
    return ApiError(404, "the server could not find the requested resource")


def _missing() -> Any:
    raise _missing_error()


__all__ = ["KubernetesAPI", "ApiSettings", "MeteredRequest", "Target", "parse_path",
           "status_body"]
