"""The exception contract between resolvers (stanzas) and the DNS server.

A resolver's ``query()`` Deferred either fires with ``(answers, authority, additional)``
(lists of :class:`twisted.names.dns.RRHeader`) or fails with one of these:

=========================  ==========================================================
``AuthoritativeNameError`` NXDOMAIN, AA set, its SOA in the authority section
                           (CoreDNS ``plugin.BackendError(..., RcodeNameError)``).
                           Stops a :class:`twisted.names.resolve.ResolverChain`.
``ServerFailure``          SERVFAIL; with ``authority`` (the zone SOA) it is CoreDNS's
                           ``BackendError(..., RcodeServerFailure)`` (AA + SOA, e.g. the
                           cache has not synced); with a ``message`` the ``errors`` log
                           gets a line.
``Refused``                REFUSED (AXFR/IXFR, or a query no server block serves).
``FallThrough``            the stanza passes the query on (``fallthrough``); it is a
                           ``DomainError``, so a ``ResolverChain`` tries the next
                           resolver.  At the top of the chain the server answers
                           SERVFAIL and logs ``plugin/kubernetai: no next plugin found``.
=========================  ==========================================================

NODATA is not an error: it is the result ``([], [soa], [])`` with ``soa.auth`` true.

Why a resolver fell through or failed is its exception's class where it already decides:
``OutsideZones``, ``NameErrorFallThrough`` and ``OtherClass`` are ``FallThrough``s,
``NotSynced`` a ``ServerFailure``. Each has a ``reason`` (one of the ``REASON_*`` codes; the
base classes' is ``""``) for ``explain`` to say why; nothing on the query path reads it,
and raising a subclass costs what raising its base does.
"""

from __future__ import annotations

from typing import Iterable

from twisted.names.dns import RRHeader
from twisted.names.error import AuthoritativeDomainError, DomainError

__all__ = ["AuthoritativeNameError", "ServerFailure", "Refused", "FallThrough",
           "OutsideZones", "NameErrorFallThrough", "OtherClass", "NotSynced",
           "REASON_OUTSIDE_ZONES", "REASON_NAME_ERROR", "REASON_NOT_SYNCED", "REASON_CLASS"]

#: The name is in none of the resolver's zones.
REASON_OUTSIDE_ZONES = "outside-zones"
#: The name does not exist there, and ``fallthrough`` covers it.
REASON_NAME_ERROR = "name-error-fallthrough"
#: A name error while the resolver's data has not synced (SERVFAIL, or passed on).
REASON_NOT_SYNCED = "not-synced"
#: A class other than IN.
REASON_CLASS = "class"


class AuthoritativeEmpty(list):  # type: ignore[type-arg]
    """An answer section with no record that is nonetheless authoritative.

    A resolver's NODATA with no SOA to carry AA (``hosts``: NOERROR, AA, every section
    empty) returns this as its answer section; the chain answers it with AA. Anything
    that reads it as a list sees an empty list.
    """

    authoritative = True


class AuthoritativeNameError(AuthoritativeDomainError):
    """NXDOMAIN with AA and the zone SOA in ``authority``; stops a ResolverChain."""

    def __init__(self, authority: Iterable[RRHeader] = (), message: str | None = None):
        super().__init__(message or "NXDOMAIN")
        self.authority: tuple[RRHeader, ...] = tuple(authority)
        self.message = message


class ServerFailure(Exception):
    """SERVFAIL, with an optional authority section (SOA, answered with AA) and log line.

    ``message`` (if any) is reported through the server's ``on_error`` callback, the
    way CoreDNS's ``errors`` plugin logs a plugin error; no message, no log line (as
    CoreDNS's ``BackendError`` returns a nil error).
    """

    reason = ""

    def __init__(self, message: str | None = None, authority: Iterable[RRHeader] = ()):
        super().__init__(message or "SERVFAIL")
        self.message = message
        self.authority: tuple[RRHeader, ...] = tuple(authority)


class NotSynced(ServerFailure):
    """SERVFAIL for a name error before the resolver's data first synced."""

    reason = REASON_NOT_SYNCED


class Refused(Exception):
    """REFUSED, e.g. AXFR/IXFR or a name no zone of this server block covers."""


class FallThrough(DomainError):
    """The stanza passes the query on to the next one (``fallthrough``)."""

    reason = ""

    def __init__(self, message: str = "plugin/kubernetai: no next plugin found"):
        super().__init__(message)
        self.message = message


class OutsideZones(FallThrough):
    """Passed on: the name is in none of the resolver's zones."""

    reason = REASON_OUTSIDE_ZONES


class NameErrorFallThrough(FallThrough):
    """Passed on: the name does not exist there, and ``fallthrough`` covers it."""

    reason = REASON_NAME_ERROR


class OtherClass(FallThrough):
    """Passed on: the query's class is not IN."""

    reason = REASON_CLASS
