"""A `kubernetai` stanza as a Twisted Names resolver.

The answer itself comes from `records.answer` over the stanza's cache; this module maps it
onto Twisted's exception contract the way CoreDNS's handler does:

* a name outside the stanza's zones, or a name error that `fallthrough` covers, raises
  a `FallThrough` (a `DomainError`: `OutsideZones`, `NameErrorFallThrough`), so the
  `ResolverChain` asks the next stanza; the class says why, for `explain`;
* a name error otherwise is SERVFAIL while the cache has not synced (`NotSynced`), else
  an authoritative NXDOMAIN carrying the zone SOA;
* an ExternalName pointing outside the stanza's zones is chased through the server (the
  query's `upstream`), as CoreDNS's `upstream.Lookup` re-enters the server, at most
  `MAX_CHASE` deep (the depth travels with the query: no process-wide state).

Besides `query` (a Deferred, the `IResolver` contract) it has `resolve`, the same answer
without one (the records, or the exception), which a block's pipeline asks when the stanza
is its only resolver (`kubernetai.core.pipeline.ChainHandler`): an uncached answer then
costs no Deferred, callback or `Failure`.

Its answers may be cached (`cacheable`): each is a function of the parts of the cluster's
cache it read (the cells of `records.Answer.deps`), which it records on the request
(`Request.deps`), and says whether it holds for every spelling of the name
(`Request.fold`, from `records.Answer.foldable`).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IResolver
from twisted.names import dns
from twisted.names.common import ResolverBase
from twisted.names.error import AuthoritativeDomainError, DomainError
from twisted.python.failure import Failure
from zope.interface import implementer

from kubernetai.core.negative import (
    AuthoritativeNameError,
    NameErrorFallThrough,
    NotSynced,
    OtherClass,
    OutsideZones,
    Refused,
    ServerFailure,
)
from kubernetai.core.request import context_query
from kubernetai.pkg.dnsname import in_zone
from kubernetai.plugins.kubernetai import records
from kubernetai.plugins.kubernetai.controller import Cluster

Result = tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]
_CHASED = (dns.A, dns.AAAA)
# CNAME hops chased through the server for one query (CoreDNS bounds chains at 10).
MAX_CHASE = 10
# Failures that are the server's answer about a chased name, not a failure to ask.
_ANSWERED = (DomainError, AuthoritativeDomainError, ServerFailure, Refused)


def answer_options(cluster: Cluster, ns_addresses: tuple[str, ...] = ()) -> records.AnswerOptions:
    config = cluster.config
    return records.AnswerOptions(
        zones=tuple(config.zones), ttl=config.ttl, pods=config.pods,
        endpoint_pod_names=config.endpoint_pod_names,
        ignore_empty_service=config.ignore_empty_service, noendpoints=config.noendpoints,
        multicluster_zones=tuple(config.multicluster_zones), ns_addresses=ns_addresses,
        namespaces=frozenset(config.namespaces) or None, zonal=config.zonal)


def client_ip(request: Any) -> str:
    """The client's address as the API server writes a pod IP: an IPv4 client of a
    dual-stack socket (``::ffff:10.0.0.1``) as IPv4."""
    host: str = request.peer()[0]
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def _deferred(got: Result | Exception | defer.Deferred[Result]) -> defer.Deferred[Result]:
    """What `StanzaResolver._answer` gives, as the Deferred of `IResolver.query`."""
    if isinstance(got, defer.Deferred):
        return got
    if isinstance(got, Exception):
        return defer.fail(got)
    return defer.succeed(got)


@implementer(IResolver)
class StanzaResolver(ResolverBase):
    """Answers from one cluster's cache; see the module docstring for the contract."""

    cacheable = True
    # Its answers are a function of its cluster's cache alone (recorded on the request).
    renewable = True

    def __init__(self, cluster: Cluster, *, ns_addresses: tuple[str, ...] = (),
                 upstream: Any = None) -> None:
        super().__init__()
        self.cluster = cluster
        self.options = answer_options(cluster, ns_addresses)
        self.fall = cluster.config.fall
        self.upstream = upstream  # where to chase when the query names none (embedding)
        # Longest zone first, so the most specific one answers.
        self._zones = sorted(self.options.zones, key=len, reverse=True)

    #: The search list of this host's /etc/resolv.conf (read at setup), which ends every
    #: autopath search path, as CoreDNS's kubernetes plugin appends its host's.
    host_search: tuple[str, ...] = ()

    def autopath(self, request: Any) -> list[str] | None:
        """The search path of the pod that asks (CoreDNS's ``AutoPath``), for `autopath
        @kubernetai`: None unless the name is in this stanza's zones, ``pods verified`` and
        a pod of this cluster has the client's address; else the pod namespace's search
        domains in this zone, the host's, and ``""`` (the name as asked)."""
        zone = self._zone_of(request.lname.decode("latin-1") + ".")
        if zone is None or self.cluster.config.pods != "verified":
            return None
        pods = self.cluster.cache.pods_for_ip(client_ip(request))
        if not pods:
            return None
        namespace = pods[0].namespace
        if zone == ".":
            head = [f"{namespace}.svc.", "svc.", "."]
        else:
            head = [f"{namespace}.svc.{zone}", f"svc.{zone}", zone]
        return [*head, *self.host_search, ""]

    def transfer(self, zone: str, serial: int) -> Any:
        """The records of ``zone`` (lower case, fully qualified) for the `transfer` plugin
        (CoreDNS's ``Transfer``): a `xfr.ZoneTransfer` (its ``serial`` and, iterated, its
        records) for an AXFR (``serial`` 0) or an IXFR from ``serial``; None when ``zone``
        is not at or below one of this stanza's zones (not authoritative)."""
        from kubernetai.plugins.kubernetai import xfr  # only `transfer` needs it

        if self._zone_of(zone) is None:
            return None
        return xfr.transfer(self.cluster.cache, self.options, zone, serial)

    def query(self, query: dns.Query, timeout: Any = None) -> defer.Deferred[Result]:
        """Every type goes to `_lookup` directly.

        `ResolverBase.query` writes a debug line for each query of a type it has no
        ``lookup*`` method for (HTTPS, SVCB, TYPE65000, ...); a client can ask those as
        fast as it likes, and CoreDNS logs nothing for them.
        """
        return _deferred(self._answer(query, query.name.name, dns.IN, query.type))

    def resolve(self, query: dns.Query) -> Result | Exception | defer.Deferred[Result]:
        """`query` without a Deferred when the answer is at hand (the pipeline's fast
        path, see `kubernetai.core.pipeline.ChainHandler`): the result, or the exception
        `query` would fail with; a Deferred only for an ExternalName chased through the
        server."""
        return self._answer(query, query.name.name, dns.IN, query.type)

    def describe(self) -> dict[str, Any]:
        """Which stanza this is, for ``explain`` (never called on the query path): where
        it is written, its zones, its API server, whether its cache has synced, and the
        zones ``fallthrough`` covers (``["."]`` for every name)."""
        cluster = self.cluster
        config = cluster.config
        try:
            url = cluster.url
        except Exception:  # noqa: BLE001 - a test's stand-in client: no URL to show
            url = ""
        return {"stanza": f"{config.filename}:{config.line}", "zones": list(self.options.zones),
                "api_server": url, "synced": cluster.synced,
                "fallthrough": list(self.fall.zones)}

    def use_cluster(self, cluster: Cluster) -> None:
        """Answer from ``cluster`` (an equal one already running: a reload)."""
        self.cluster = cluster

    def _zone_of(self, lname: str) -> str | None:
        for zone in self._zones:  # longest first: the most specific zone answers
            if in_zone(lname, zone):
                return zone
        return None

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> defer.Deferred[Result]:
        return _deferred(self._answer(None, name, cls, type))

    def _answer(self, query: Any, name: bytes, cls: int,
                type: int) -> Result | Exception | defer.Deferred[Result]:
        # latin-1 maps every byte to one character, so any label a client sends (even
        # non-ASCII) is matched, and missed, like CoreDNS does, instead of failing to encode.
        text = name.decode("latin-1")
        lname = text.lower().rstrip(".") + "."
        if cls != dns.IN:
            return OtherClass()
        zone = self._zone_of(lname)
        if zone is None:
            return OutsideZones()
        request = getattr(query, "request", None)
        try:
            found = records.answer(self.cluster.cache, self.options, name, type, zone)
        except Exception as error:  # noqa: BLE001 - a bug answers SERVFAIL and is logged
            if request is not None:
                request.depend(self.cluster.cache.everything)
            return ServerFailure(f"plugin/kubernetai: {error!r}")
        if request is not None:
            request.depend_all(found.deps)
        if found.rcode == dns.EREFUSED:
            return Refused()
        if found.name_error:
            if self.fall.through(lname):
                return NameErrorFallThrough()
            if not self.cluster.synced:
                return NotSynced(authority=found.authority)
            if request is not None:
                request.folds(found.foldable)
            return AuthoritativeNameError(found.authority)
        if request is not None:
            request.folds(found.foldable and not found.chase)
        result: Result = (list(found.answers), list(found.authority), list(found.additional))
        if found.chase and type in _CHASED:
            upstream = self.upstream or getattr(query, "upstream", None)
            if upstream is None:  # no server to ask: CoreDNS answers NODATA
                return [], [found.soa] if found.soa else [], []
            return self._chase(found, type, result, upstream, query)
        return result

    def _chase(self, found: records.Answer, qtype: int, result: Result, upstream: Any,
               asked: Any) -> defer.Deferred[Result]:
        """Resolve an out-of-zone CNAME target through the server.

        ExternalNames in two zones can point at each other; each chase asks with a depth
        one more than the query's, so a loop ends after MAX_CHASE hops (as the in-zone
        chain is bounded), whether the server answers at once or later.
        """
        assert found.chase is not None
        depth = getattr(asked, "depth", 0)
        if depth >= MAX_CHASE:
            return defer.succeed(result)  # the CNAME alone, as for an unanswered target
        query = context_query(found.chase.encode("latin-1"), qtype, dns.IN,
                              request=getattr(asked, "request", None), depth=depth + 1,
                              upstream=upstream)

        def chased(upstream: Result) -> Result:
            answers, _, _ = upstream
            return (result[0] + list(answers), result[1], result[2])

        def failed(failure: Failure) -> Result:
            if failure.check(*_ANSWERED):
                # The server answered the target negatively (NXDOMAIN, REFUSED,
                # SERVFAIL): CoreDNS keeps the CNAME and appends nothing.
                return result
            # The lookup could not be made at all: CoreDNS drops the CNAME, NODATA.
            return ([], [found.soa] if found.soa is not None else [], [])
        return defer.maybeDeferred(upstream.query, query).addCallbacks(chased, failed)
