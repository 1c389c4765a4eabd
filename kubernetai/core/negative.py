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
"""

from __future__ import annotations

from typing import Iterable

from twisted.names.dns import RRHeader
from twisted.names.error import AuthoritativeDomainError, DomainError

__all__ = ["AuthoritativeNameError", "ServerFailure", "Refused", "FallThrough"]


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

    def __init__(self, message: str | None = None, authority: Iterable[RRHeader] = ()):
        super().__init__(message or "SERVFAIL")
        self.message = message
        self.authority: tuple[RRHeader, ...] = tuple(authority)


class Refused(Exception):
    """REFUSED, e.g. AXFR/IXFR or a name no zone of this server block covers."""


class FallThrough(DomainError):
    """The stanza passes the query on to the next one (``fallthrough``)."""

    def __init__(self, message: str = "plugin/kubernetai: no next plugin found"):
        super().__init__(message)
        self.message = message
