"""The client side of DNS over TLS (``tls://`` upstreams), from the `tls` option.

``tls`` with no argument: the system's CAs verify the upstream; ``tls CA``: that CA
does; ``tls CERT KEY``: a client certificate, system CAs; ``tls CERT KEY CA``: both. The
upstream's certificate must name ``tls_servername`` (or the ``%NAME`` of the TO), else
its IP address, as Go's TLS client checks it. TLS 1.2 at least, as CoreDNS.
"""

from __future__ import annotations

from typing import Any, Sequence

from cryptography import x509
from OpenSSL import crypto
from twisted.internet import ssl

__all__ = ["TLSSetupError", "client_tls"]


class TLSSetupError(Exception):
    """A `tls` file that cannot be used; str() is CoreDNS's message."""


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(1 << 20)
    except OSError as exc:
        reason = f"open {path}: {(exc.strerror or str(exc)).lower()}"
        if what == "ca":
            raise TLSSetupError(f"error reading {path}: {reason}") from None
        raise TLSSetupError(f"could not load TLS cert: {reason}") from None


def _trust(ca: str | None) -> Any:
    if ca is None:
        return ssl.platformTrust()
    try:
        certs = x509.load_pem_x509_certificates(_read(ca, "ca"))
    except ValueError:
        raise TLSSetupError("could not read root certs: no certificate in "
                            f"{ca}") from None
    return ssl.trustRootFromCertificates(
        [ssl.Certificate(crypto.X509.from_cryptography(cert)) for cert in certs])


def _client_certificate(cert: str, key: str) -> Any:
    data = _read(cert, "cert") + b"\n" + _read(key, "cert")
    try:
        return ssl.PrivateCertificate.loadPEM(data)
    except Exception as exc:  # noqa: BLE001 - any parse error means an unusable pair
        raise TLSSetupError(f"could not load TLS cert: {exc}") from None


def client_tls(args: Sequence[str], servername: str, address: str) -> Any:
    """A Twisted client TLS connection creator for one upstream."""
    args = list(args)
    ca = cert = key = None
    if len(args) == 1:
        ca = args[0]
    elif len(args) >= 2:
        cert, key = args[0], args[1]
        if len(args) == 3:
            ca = args[2]
    trust = _trust(ca)
    kwargs: dict[str, Any] = {"trustRoot": trust}
    if cert is not None and key is not None:
        kwargs["clientCertificate"] = _client_certificate(cert, key)
    return ssl.optionsForClientTLS(servername or address, **kwargs)
