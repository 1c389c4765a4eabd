"""Tests for kubernetai.core.negative: the resolver → server exception contract."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.names import dns, error, resolve
from twisted.trial.unittest import SynchronousTestCase

from kubernetai.core.negative import (
    AuthoritativeNameError,
    FallThrough,
    Refused,
    ServerFailure,
)

SOA = dns.RRHeader(b"cluster.local", dns.SOA, ttl=5, auth=True,
                   payload=dns.Record_SOA(b"ns.dns.cluster.local", b"hostmaster.cluster.local"))


class Fixed:
    """A resolver that fails with a given exception or returns a given result."""

    def __init__(self, outcome: Any):
        self.outcome = outcome
        self.calls = 0

    def query(self, query: dns.Query, timeout: Any = None) -> defer.Deferred:
        self.calls += 1
        if isinstance(self.outcome, BaseException):
            return defer.fail(self.outcome)
        return defer.succeed(self.outcome)


ANSWER = ([dns.RRHeader(b"web.cluster.local", dns.A, payload=dns.Record_A("10.0.0.1"))], [], [])


class NegativeTests(SynchronousTestCase):
    def test_name_error_is_authoritative_domain_error(self) -> None:
        """AuthoritativeNameError is an AuthoritativeDomainError, not a DomainError."""
        exc = AuthoritativeNameError([SOA])
        self.assertIsInstance(exc, error.AuthoritativeDomainError)
        self.assertNotIsInstance(exc, error.DomainError)
        self.assertEqual(exc.authority, (SOA,))

    def test_name_error_stops_resolver_chain(self) -> None:
        """A ResolverChain does not try the next resolver after AuthoritativeNameError."""
        second = Fixed(ANSWER)
        chain = resolve.ResolverChain([Fixed(AuthoritativeNameError([SOA])), second])
        f = self.failureResultOf(chain.query(dns.Query(b"x.cluster.local")),
                                 AuthoritativeNameError)
        self.assertEqual(f.value.authority, (SOA,))
        self.assertEqual(second.calls, 0)

    def test_fallthrough_continues_resolver_chain(self) -> None:
        """FallThrough is a DomainError: a ResolverChain asks the next resolver."""
        second = Fixed(ANSWER)
        chain = resolve.ResolverChain([Fixed(FallThrough()), second])
        self.assertEqual(self.successResultOf(chain.query(dns.Query(b"web.cluster.local"))),
                         ANSWER)
        self.assertEqual(second.calls, 1)

    def test_fallthrough_at_end_of_chain(self) -> None:
        """The last resolver's FallThrough comes out of the chain, with CoreDNS's message."""
        chain = resolve.ResolverChain([Fixed(FallThrough()), Fixed(FallThrough())])
        f = self.failureResultOf(chain.query(dns.Query(b"x.cluster.local")), FallThrough)
        self.assertEqual(f.value.message, "plugin/kubernetai: no next plugin found")

    def test_server_failure_fields(self) -> None:
        """ServerFailure carries an optional log message and an optional authority."""
        plain = ServerFailure()
        self.assertIsNone(plain.message)
        self.assertEqual(plain.authority, ())
        full = ServerFailure("boom", authority=[SOA])
        self.assertEqual((full.message, full.authority), ("boom", (SOA,)))
        self.assertNotIsInstance(full, (error.DomainError, error.AuthoritativeDomainError))

    def test_server_failure_and_refused_stop_resolver_chain(self) -> None:
        """ServerFailure and Refused are not DomainErrors: the chain stops on them."""
        for exc in (ServerFailure("x"), Refused()):
            second = Fixed(ANSWER)
            chain = resolve.ResolverChain([Fixed(exc), second])
            self.failureResultOf(chain.query(dns.Query(b"x.cluster.local")), type(exc))
            self.assertEqual(second.calls, 0)
