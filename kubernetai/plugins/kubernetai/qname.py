"""The query-name grammar of the Kubernetes DNS schema.

A name inside a stanza's zone is read right to left, the way CoreDNS's
``plugin/kubernetes/parse.go`` (``parseRequest``) reads it::

    <zone>                                  apex            -> empty RecordRequest
    svc.<zone> / pod.<zone>                 bare type       -> empty RecordRequest
    <ns>.svc.<zone>                         namespace       -> namespace only
    <svc>.<ns>.svc.<zone>                   service
    <endpoint>.<svc>.<ns>.svc.<zone>        endpoint (headless hostname)
    _<port>._<proto>.<svc>.<ns>.svc.<zone>  SRV port/protocol
    <endpoint>.<cluster>.<svc>.<ns>.svc.<zone>
                                            multicluster endpoint (only in a
                                            ``multicluster`` zone, and only
                                            when neither label starts with _)
    <a-b-c-d>.<ns>.pod.<zone>               pod ("service" holds the pod name)

Anything whose last label (before the zone) is not ``svc`` or ``pod``, and
anything with more labels than the shapes above, is an invalid request,
which the answer layer turns into a name error (NXDOMAIN).  A single leading
underscore is stripped from the port and protocol labels.  There are no
wildcards: CoreDNS removed them in 1.9.0.

    <topo-zone>.pin._zone.<svc>.<ns>.svc.<zone>
    <topo-zone>.prefer._zone.<svc>.<ns>.svc.<zone>
                                            zone-scoped headless names, only
                                            with the ``zonal`` option (CoreDNS
                                            1.14.7) and not in multicluster
                                            zones; the topology zone may span
                                            several labels

The parser does no I/O and no regular expressions; it is on the per-query
path.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetai.pkg.dnsname import in_zone

__all__ = ["EMPTY_REQUEST", "InvalidRequest", "RecordRequest", "parse_request", "trim_zone"]


class InvalidRequest(ValueError):
    """The name cannot be a Kubernetes DNS name (CoreDNS ``errInvalidRequest``)."""


@dataclass(frozen=True, slots=True)
class RecordRequest:
    """The parts of a query name; empty strings for the parts not present.

    ``podOrSvc`` is ``"svc"``, ``"pod"`` or ``""`` (the apex and the bare
    ``svc``/``pod`` names, which exist but hold no data).  For pod names
    the pod label (``1-2-3-4``) is in ``service``, as in CoreDNS.
    """

    port: str = ""
    protocol: str = ""
    endpoint: str = ""
    cluster: str = ""
    service: str = ""
    namespace: str = ""
    podOrSvc: str = ""
    zone: str = ""  # topology zone of a zone-scoped (zonal) name
    zone_prefer: bool = False  # "prefer" directive; False is "pin"


EMPTY_REQUEST = RecordRequest()

_SVC = "svc"
_POD = "pod"
_ZONE_LABEL = "_zone"
_PIN = "pin"
_PREFER = "prefer"


def trim_zone(name: str, zone: str) -> str:
    """``name`` without ``zone`` and without the dot between them.

    Both are fully qualified (trailing dot) and lower-case; ``name`` must be
    ``zone`` or a name below it.  ``trim_zone("a.b.c.", "b.c.") == "a"``,
    ``trim_zone("b.c.", "b.c.") == ""``.
    """
    if zone == ".":
        return name[:-1]
    if len(name) <= len(zone):
        return ""
    if not in_zone(name, zone):
        raise ValueError(f"{name!r} is not in zone {zone!r}")
    return name[: -len(zone) - 1]


def _strip_underscore(label: str) -> str:
    if label[:1] == "_":
        return label[1:]
    return label


def parse_request(
    name: str, zone: str, multicluster: bool = False, zonal: bool = False
) -> RecordRequest:
    """Parse ``name`` (lower-case, fully qualified) below ``zone``.

    ``multicluster`` is True when ``zone`` is one of the stanza's
    ``multicluster`` zones, which enables the ``endpoint.cluster`` shape;
    ``zonal`` enables the ``<topo-zone>.pin|prefer._zone`` shape.
    Raises :class:`InvalidRequest` for names that cannot exist.
    """
    base = trim_zone(name, zone)
    if base == "" or base == _SVC or base == _POD:
        return EMPTY_REQUEST
    segs = base.split(".")
    n = len(segs)
    kind = segs[-1]
    if kind != _SVC and kind != _POD:
        raise InvalidRequest(name)
    if n == 2:
        return RecordRequest(namespace=segs[0], podOrSvc=kind)
    if n == 3:
        return RecordRequest(service=segs[0], namespace=segs[1], podOrSvc=kind)
    if n == 4:
        return RecordRequest(endpoint=segs[0], service=segs[1], namespace=segs[2], podOrSvc=kind)
    if n == 5:
        first, second = segs[0], segs[1]
        if not multicluster or first[:1] == "_" or second[:1] == "_":
            return RecordRequest(
                port=_strip_underscore(first),
                protocol=_strip_underscore(second),
                service=segs[2],
                namespace=segs[3],
                podOrSvc=kind,
            )
        return RecordRequest(
            endpoint=first, cluster=second, service=segs[2], namespace=segs[3], podOrSvc=kind
        )
    # Three or more labels left of the service: a zone-scoped name, or too long.
    if not zonal or multicluster or kind != _SVC or segs[-4] != _ZONE_LABEL:
        raise InvalidRequest(name)
    directive = segs[-5]
    if directive == _PIN:
        prefer = False
    elif directive == _PREFER:
        prefer = True
    else:
        raise InvalidRequest(name)
    return RecordRequest(
        service=segs[-3],
        namespace=segs[-2],
        podOrSvc=kind,
        zone=".".join(segs[:-5]),
        zone_prefer=prefer,
    )
