"""TLS material for the simulated API server.

A real kube-apiserver is only reachable over HTTPS, authenticates users by
client certificate (CN is the user name, O the groups) or bearer token, and is
reached by clients through a kubeconfig.  Tests that want to exercise the same
code paths as production (certificate verification in the kubernetes client,
``kubectl``, client-certificate identities) need all three, generated on the
fly so that no key material lives in the repository.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto
from twisted.internet.ssl import CertificateOptions

__all__ = [
    "TLSFiles",
    "generate",
    "peer_common_name",
    "server_tls_options",
    "write_kubeconfig",
]

CA_COMMON_NAME = "kubernetai-sandbox-ca"
SERVER_COMMON_NAME = "kubernetai-sandbox-apiserver"
# kube-apiserver maps a client certificate's O attributes to groups; this one
# is bound to cluster-admin, which is what a sandbox administrator expects.
MASTERS_GROUP = "system:masters"

# Clocks of the test host and of whatever verifies the certificate (possibly
# a container) may disagree a little; a certificate that is "not yet valid"
# makes for very confusing failures.
_CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """Where :func:`generate` put the PEM files.

    Paths rather than in-memory objects, because every consumer (twisted,
    ``ssl``, the kubernetes client, ``kubectl``) wants to read files.
    """

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def generate(
    directory: Path,
    *,
    hosts: Sequence[str] = ("127.0.0.1", "::1", "localhost"),
    client_name: str = "kubernetai",
    days: int = 365,
) -> TLSFiles:
    """Create a throwaway CA plus server and client certificates under *directory*.

    ECDSA P-256 keeps this to milliseconds, so each test can afford its own
    PKI.  Every host becomes a subjectAltName because modern clients (Go,
    Python >= 3.7, urllib3) ignore the CN for hostname checks; literal IP
    addresses must be IPAddress SANs or they will not match.
    """
    if isinstance(hosts, str):
        # A bare string is a Sequence[str] too; iterating it per character
        # would silently produce a certificate valid for "1", "2", ...
        raise TypeError("hosts must be a sequence of host names, not a str")
    if not hosts:
        raise ValueError("at least one host is needed for the server certificate")
    if days <= 0:
        raise ValueError(f"days must be positive, got {days}")

    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = now - _CLOCK_SKEW
    not_after = now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key, server_cert = _issue(
        ca_cert,
        ca_key,
        ca_ski,
        subject=x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, SERVER_COMMON_NAME)]
        ),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        san=x509.SubjectAlternativeName([_general_name(h) for h in hosts]),
        not_before=not_before,
        not_after=not_after,
    )
    client_key, client_cert = _issue(
        ca_cert,
        ca_key,
        ca_ski,
        subject=x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, MASTERS_GROUP),
                x509.NameAttribute(NameOID.COMMON_NAME, client_name),
            ]
        ),
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        san=None,
        not_before=not_before,
        not_after=not_after,
    )

    files = TLSFiles(
        directory=directory,
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )
    for path, cert in (
        (files.ca_cert, ca_cert),
        (files.server_cert, server_cert),
        (files.client_cert, client_cert),
    ):
        _write_atomically(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    for path, key in (
        (files.ca_key, ca_key),
        (files.server_key, server_key),
        (files.client_key, client_key),
    ):
        _write_atomically(path, _key_pem(key), 0o600)
    return files


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_ski: x509.SubjectKeyIdentifier,
    *,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    san: x509.SubjectAlternativeName | None,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Sign a leaf certificate restricted to one purpose.

    The key identifiers are not decoration: Python 3.13's default
    ``VERIFY_X509_STRICT`` rejects leaf certificates without an
    AuthorityKeyIdentifier.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _general_name(host: str) -> x509.GeneralName:
    """Classify *host* because hostname checks compare IPs only against IP SANs."""
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return x509.IPAddress(ipaddress.ip_address(literal))
    except ValueError:
        return x509.DNSName(host)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write via a 0600 temporary file and rename.

    So a key is never readable by others, not even for the moment between
    ``open`` and ``chmod``, and a reader never sees half a file.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def server_tls_options(files: TLSFiles) -> CertificateOptions:
    """Context factory for ``listenSSL`` that behaves like kube-apiserver.

    The client certificate is requested and, if sent, must chain to our CA,
    but it is optional because token-authenticated clients send none.  That
    is why this uses ``caCerts=`` and not ``trustRoot=``: Twisted forces
    ``requireCertificate=True`` whenever a ``trustRoot`` is given.

    The server key and certificate are handed over as ``cryptography``
    objects, which pyOpenSSL's ``Context`` accepts directly, because its
    pyOpenSSL-object form is deprecated and warns on every context.  The CA
    has to stay a pyOpenSSL ``X509``: Twisted adds it to an ``X509Store``,
    which accepts nothing else.
    """
    key = serialization.load_pem_private_key(files.server_key.read_bytes(), None)
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    ca = crypto.X509.from_cryptography(
        x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    )
    return CertificateOptions(
        privateKey=key,  # type: ignore[arg-type]
        certificate=cert,  # type: ignore[arg-type]
        verify=True,
        caCerts=[ca],
        requireCertificate=False,
    )


def peer_common_name(transport: object) -> str | None:
    """User name of a client authenticated by certificate, else None.

    The certificate alone proves nothing: ``getPeerCertificate`` also returns
    certificates nobody verified, e.g. on a connection whose context uses
    ``VERIFY_NONE``.  So a CN is only reported if the connection was set up
    to verify its peer; then (as with :func:`server_tls_options`, which has
    no permissive verify callback) an unverifiable certificate has already
    aborted the handshake.  Plain-TCP transports have no certificate at all,
    which lets one handler serve both HTTP and HTTPS.
    """
    get_certificate = getattr(transport, "getPeerCertificate", None)
    get_handle = getattr(transport, "getHandle", None)
    if get_certificate is None or get_handle is None:
        return None
    handle = get_handle()
    if not isinstance(handle, SSL.Connection):
        return None
    if not handle.get_verify_mode() & SSL.VERIFY_PEER:
        return None
    cert = get_certificate()
    if cert is None:
        return None
    if isinstance(cert, crypto.X509):
        cert = cert.to_cryptography()
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    value = names[0].value
    return value.decode("utf-8") if isinstance(value, bytes) else value


def write_kubeconfig(
    path: Path,
    server_url: str,
    *,
    cluster_name: str = "sandbox",
    user_name: str = "sandbox-admin",
    context_name: str = "sandbox",
    ca_file: Path | None = None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> Path:
    """Write a kubeconfig so unmodified clients can reach the sandbox.

    File paths are made absolute because kubeconfig resolves relative paths
    against the kubeconfig's own directory, not the caller's working
    directory.  The file is 0600 since it may hold a bearer token.
    """
    if (client_cert is None) != (client_key is None):
        raise ValueError("client_cert and client_key must be given together")

    cluster: dict[str, str] = {"server": server_url}
    if ca_file is not None:
        cluster["certificate-authority"] = str(Path(ca_file).absolute())
    user: dict[str, str] = {}
    if client_cert is not None and client_key is not None:
        user["client-certificate"] = str(Path(client_cert).absolute())
        user["client-key"] = str(Path(client_key).absolute())
    if token is not None:
        user["token"] = token
    context: dict[str, str] = {"cluster": cluster_name, "user": user_name}
    if namespace is not None:
        context["namespace"] = namespace

    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": context_name, "context": context}],
        "current-context": context_name,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(document, default_flow_style=False, sort_keys=False)
    _write_atomically(path, text.encode("utf-8"), 0o600)
    return path
