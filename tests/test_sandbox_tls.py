"""Tests for kubernetai.sandbox.tls: generated PKI, HTTPS serving, kubeconfig."""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
import ssl
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
)
from OpenSSL import SSL, crypto
from twisted.internet.defer import Deferred
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.python import threadable
from twisted.web.resource import Resource
from twisted.web.server import Site

from kubernetai.sandbox.tls import (
    TLSFiles,
    generate,
    peer_common_name,
    server_tls_options,
    write_kubeconfig,
)

KUBECTL = Path("/usr/bin/kubectl")

TLS_VERSIONS = [
    pytest.param(ssl.TLSVersion.TLSv1_2, id="tls1.2"),
    pytest.param(ssl.TLSVersion.TLSv1_3, id="tls1.3"),
]


# --------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def reactor_thread(request: pytest.FixtureRequest):
    """The global reactor, started in a daemon thread unless already running.

    Never stopped: a reactor cannot be restarted, and other modules share it.
    With the pytest-twisted plugin active the reactor belongs to the plugin
    (it runs each test body inside the reactor, in a greenlet), and starting
    it here as well would break every later test; see ``_client``.
    """
    from twisted.internet import reactor

    if not reactor.running and not request.config.pluginmanager.has_plugin("twisted"):
        started = threading.Event()
        reactor.callWhenRunning(started.set)
        threading.Thread(
            target=reactor.run,
            kwargs={"installSignalHandlers": False},
            name="twisted-reactor",
            daemon=True,
        ).start()
        if not started.wait(10):
            pytest.fail("twisted reactor did not start within 10s")
    return reactor


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return generate(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def foreign_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A second, unrelated PKI with the same names, to impersonate ours."""
    return generate(tmp_path_factory.mktemp("foreign-pki"))


class WhoAmI(Resource):
    """Answers with the authenticated client-certificate user, as a probe."""

    isLeaf = True

    def render_GET(self, request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (peer_common_name(request.transport) or "anonymous").encode("utf-8")


def _in_reactor(reactor, fn, *args, **kwargs):
    """Call fn where the reactor is allowed to be touched.

    That is via blockingCallFromThread when the reactor runs in another
    thread, and directly when it is not running concurrently (not started
    yet, or parked in pytest-twisted's greenlet while fixtures run).
    """
    if reactor.running and not threadable.isInIOThread():
        return blockingCallFromThread(reactor, fn, *args, **kwargs)
    return fn(*args, **kwargs)


def _client(fn: Callable[[], object]) -> Deferred | None:
    """Run blocking client code (which asserts) against our server.

    Test bodies return this.  Normally they run beside the reactor thread and
    fn simply runs now.  Under pytest-twisted the body itself runs on the
    reactor, so blocking there would deadlock; fn goes to a worker thread and
    the Deferred is handed to pytest-twisted, which waits for it.
    """
    if threadable.isInIOThread():
        return deferToThread(fn)
    fn()
    return None


def _serve(reactor, files: TLSFiles, interface: str) -> Iterator[int]:
    port = _in_reactor(
        reactor,
        reactor.listenSSL,
        0,
        Site(WhoAmI()),
        server_tls_options(files),
        interface=interface,
    )
    try:
        yield port.getHost().port
    finally:
        _in_reactor(reactor, port.stopListening)


@pytest.fixture(scope="module")
def https_port(reactor_thread, tls_files: TLSFiles) -> Iterator[int]:
    yield from _serve(reactor_thread, tls_files, "127.0.0.1")


@pytest.fixture(scope="module")
def https_port_v6(reactor_thread, tls_files: TLSFiles) -> Iterator[int]:
    if not _ipv6_loopback_available():
        pytest.skip("no IPv6 loopback on this host")
    yield from _serve(reactor_thread, tls_files, "::1")


@pytest.fixture
def restore_kubernetes_default():
    """load_kube_config mutates a process-wide default; put it back afterwards."""
    from kubernetes import client

    saved = client.Configuration._default
    try:
        yield
    finally:
        client.Configuration._default = saved


# --------------------------------------------------------------------------
# helpers


def _client_context(
    cafile: Path,
    cert: Path | None = None,
    key: Path | None = None,
    version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    # The default from Python 3.13 on; catches missing key identifiers etc.
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def _get(port: int, ctx: ssl.SSLContext, host: str = "127.0.0.1") -> str:
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200
        return response.read().decode("utf-8")
    finally:
        conn.close()


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def _run_kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    return subprocess.run(
        [str(KUBECTL), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


# --------------------------------------------------------------------------
# generate()


def test_generated_chain_verifies(tls_files: TLSFiles) -> None:
    """Server and client certs chain to the CA with the right SANs, usages and groups."""
    ca = _load(tls_files.ca_cert)
    server = _load(tls_files.server_cert)
    client = _load(tls_files.client_cert)

    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "kubernetai-sandbox-ca"
    )
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    server.verify_directly_issued_by(ca)
    client.verify_directly_issued_by(ca)

    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert ExtendedKeyUsageOID.SERVER_AUTH in server.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage
    ).value

    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "kubernetai"
    )
    assert [
        a.value for a in client.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    ] == ["system:masters"]
    assert ExtendedKeyUsageOID.CLIENT_AUTH in client.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage
    ).value

    # Full RFC 5280 path validation, including name matching and EKU.
    store = Store([ca])
    for name in (
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ):
        PolicyBuilder().store(store).build_server_verifier(name).verify(server, [])
    # Client certs of kube-apiserver users carry no SAN, which the WebPKI
    # defaults would demand; everything else (EKU clientAuth, ...) still holds.
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
    )
    verified = (
        PolicyBuilder()
        .store(store)
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy
        )
        .build_client_verifier()
        .verify(client, [])
    )
    assert verified.chain[-1] == ca

    for key in (tls_files.ca_key, tls_files.server_key, tls_files.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_generate_honours_hosts_client_name_and_days(tmp_path: Path) -> None:
    """Custom hosts/client name/lifetime end up in the certs; missing dirs are created."""
    files = generate(
        tmp_path / "a" / "b",
        hosts=["apiserver.example.test", "10.96.0.1", "[fd00::1]"],
        client_name="alice",
        days=2,
    )
    assert files.directory == tmp_path / "a" / "b"
    server = _load(files.server_cert)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["apiserver.example.test"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.96.0.1"),
        ipaddress.ip_address("fd00::1"),
    ]
    lifetime = server.not_valid_after_utc - server.not_valid_before_utc
    assert 2 * 86400 <= lifetime.total_seconds() <= 2 * 86400 + 3600
    client = _load(files.client_cert)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"


def test_generate_is_fast(tmp_path: Path) -> None:
    """Generating a whole PKI is cheap enough to do per test."""
    start = time.perf_counter()
    generate(tmp_path)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    "kwargs",
    [{"hosts": "localhost"}, {"hosts": ()}, {"days": 0}],
    ids=["str-hosts", "no-hosts", "zero-days"],
)
def test_generate_rejects_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    """A bare string of hosts, no hosts or a non-positive lifetime is refused."""
    with pytest.raises((TypeError, ValueError)):
        generate(tmp_path, **kwargs)


# --------------------------------------------------------------------------
# serving over a real socket


@pytest.mark.parametrize("version", TLS_VERSIONS)
def test_client_certificate_identifies_peer(
    https_port: int, tls_files: TLSFiles, version: ssl.TLSVersion
):
    """A client trusting the CA and presenting our client cert is seen by its CN."""
    ctx = _client_context(
        tls_files.ca_cert, tls_files.client_cert, tls_files.client_key, version
    )

    def check() -> None:
        assert _get(https_port, ctx) == "kubernetai"

    return _client(check)


@pytest.mark.parametrize("version", TLS_VERSIONS)
def test_client_without_certificate_is_anonymous(
    https_port: int, tls_files: TLSFiles, version: ssl.TLSVersion
):
    """A client certificate is optional: without one the request is served anonymously."""
    ctx = _client_context(tls_files.ca_cert, version=version)

    def check() -> None:
        assert _get(https_port, ctx) == "anonymous"

    return _client(check)


def test_client_not_trusting_ca_fails_verification(
    https_port: int, tls_files: TLSFiles, foreign_files: TLSFiles
):
    """A client that does not trust our CA refuses the server certificate."""
    ctx = _client_context(
        foreign_files.ca_cert, tls_files.client_cert, tls_files.client_key
    )

    def check() -> None:
        with pytest.raises(ssl.SSLCertVerificationError):
            _get(https_port, ctx)

    return _client(check)


@pytest.mark.parametrize("version", TLS_VERSIONS)
def test_client_certificate_from_other_ca_is_rejected(
    https_port: int,
    tls_files: TLSFiles,
    foreign_files: TLSFiles,
    version: ssl.TLSVersion,
):
    """A client cert issued by another CA is refused, not downgraded to anonymous."""
    ctx = _client_context(
        tls_files.ca_cert, foreign_files.client_cert, foreign_files.client_key, version
    )

    def check() -> None:
        # With TLS 1.3 the client considers the handshake finished before
        # the server has looked at its certificate, so the server's alert
        # only surfaces on the first read, as an SSLError or, if the alert
        # loses the race with the close, as a reset.
        with pytest.raises((ssl.SSLError, ConnectionError)) as excinfo:
            _get(https_port, ctx)
        if isinstance(excinfo.value, ssl.SSLError):
            assert "unknown ca" in str(excinfo.value).lower()

    return _client(check)


def test_server_certificate_valid_for_ipv6_loopback(
    https_port_v6: int, tls_files: TLSFiles
):
    """The ::1 IP SAN satisfies hostname verification over IPv6."""
    ctx = _client_context(tls_files.ca_cert, tls_files.client_cert, tls_files.client_key)

    def check() -> None:
        assert _get(https_port_v6, ctx, host="::1") == "kubernetai"

    return _client(check)


def test_peer_common_name_without_tls_is_none() -> None:
    """Transports that are not TLS never yield an identity."""
    from twisted.internet.testing import StringTransport

    assert peer_common_name(StringTransport()) is None
    assert peer_common_name(object()) is None


class _FakeTLSTransport:
    """Just the two methods peer_common_name relies on, without a socket."""

    def __init__(self, verify_mode: int, certificate: x509.Certificate) -> None:
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_verify(verify_mode)
        self._connection = SSL.Connection(context, None)
        self._certificate = crypto.X509.from_cryptography(certificate)

    def getHandle(self) -> SSL.Connection:
        return self._connection

    def getPeerCertificate(self) -> crypto.X509:
        return self._certificate


def test_peer_common_name_requires_verifying_connection(tls_files: TLSFiles) -> None:
    """A certificate on a connection that does not verify peers is not trusted."""
    client = _load(tls_files.client_cert)
    assert peer_common_name(_FakeTLSTransport(SSL.VERIFY_PEER, client)) == "kubernetai"
    assert peer_common_name(_FakeTLSTransport(SSL.VERIFY_NONE, client)) is None


# --------------------------------------------------------------------------
# write_kubeconfig()


def test_kubeconfig_with_client_certificate_loads_in_kubernetes_client(
    tmp_path: Path, tls_files: TLSFiles, restore_kubernetes_default
) -> None:
    """The kubernetes client picks up server, CA and client cert/key from the file."""
    from kubernetes import client, config

    path = write_kubeconfig(
        tmp_path / "kube" / "config",
        "https://127.0.0.1:6443",
        ca_file=tls_files.ca_cert,
        client_cert=tls_files.client_cert,
        client_key=tls_files.client_key,
        namespace="kube-system",
    )
    assert path == tmp_path / "kube" / "config"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    config.load_kube_config(config_file=str(path))
    cfg = client.Configuration.get_default_copy()
    assert cfg.host == "https://127.0.0.1:6443"
    assert Path(cfg.ssl_ca_cert).read_bytes() == tls_files.ca_cert.read_bytes()
    assert Path(cfg.cert_file).read_bytes() == tls_files.client_cert.read_bytes()
    assert Path(cfg.key_file).read_bytes() == tls_files.client_key.read_bytes()
    assert cfg.verify_ssl

    contexts, active = config.list_kube_config_contexts(config_file=str(path))
    assert active["name"] == "sandbox"
    assert active["context"] == {
        "cluster": "sandbox",
        "user": "sandbox-admin",
        "namespace": "kube-system",
    }


def test_kubeconfig_paths_are_absolute(
    tmp_path: Path, tls_files: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative cert paths are stored absolute, as kubeconfig resolves them elsewhere."""
    import yaml

    monkeypatch.chdir(tls_files.directory)
    path = write_kubeconfig(
        tmp_path / "config",
        "https://127.0.0.1:6443",
        ca_file=Path("ca.crt"),
        client_cert=Path("client.crt"),
        client_key=Path("client.key"),
    )
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == "v1" and doc["kind"] == "Config"
    assert doc["clusters"][0]["cluster"]["certificate-authority"] == str(
        tls_files.ca_cert
    )
    assert doc["users"][0]["user"] == {
        "client-certificate": str(tls_files.client_cert),
        "client-key": str(tls_files.client_key),
    }


def test_kubeconfig_with_token_loads_in_kubernetes_client(
    tmp_path: Path, tls_files: TLSFiles, restore_kubernetes_default
) -> None:
    """A token-only user becomes a bearer API key; names are configurable."""
    from kubernetes import client, config

    path = write_kubeconfig(
        tmp_path / "config",
        "https://[::1]:8443",
        cluster_name="c1",
        user_name="u1",
        context_name="ctx1",
        ca_file=tls_files.ca_cert,
        token="s3cr3t-token",
    )
    config.load_kube_config(config_file=str(path))
    cfg = client.Configuration.get_default_copy()
    assert cfg.host == "https://[::1]:8443"
    assert cfg.get_api_key_with_prefix("BearerToken") == "Bearer s3cr3t-token"
    assert cfg.cert_file is None and cfg.key_file is None
    _, active = config.list_kube_config_contexts(config_file=str(path))
    assert active == {"name": "ctx1", "context": {"cluster": "c1", "user": "u1"}}


def test_kubeconfig_rejects_cert_without_key(tmp_path: Path, tls_files: TLSFiles) -> None:
    """A client certificate without its key (or vice versa) is a caller error."""
    with pytest.raises(ValueError):
        write_kubeconfig(
            tmp_path / "config", "https://127.0.0.1:1", client_cert=tls_files.client_cert
        )
    assert not (tmp_path / "config").exists()


def test_kubernetes_client_authenticates_with_kubeconfig(
    https_port: int, tmp_path: Path, tls_files: TLSFiles
):
    """The kubernetes client, configured only by the kubeconfig, presents the client cert."""
    from kubernetes import client, config
    from kubernetes.client.rest import RESTClientObject

    path = write_kubeconfig(
        tmp_path / "config",
        f"https://127.0.0.1:{https_port}",
        ca_file=tls_files.ca_cert,
        client_cert=tls_files.client_cert,
        client_key=tls_files.client_key,
    )
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=cfg)

    def check() -> None:
        response = RESTClientObject(cfg).request("GET", f"{cfg.host}/")
        assert response.status == 200
        assert response.read() == b"kubernetai"

    return _client(check)


@pytest.fixture
def kubectl() -> Path:
    if not KUBECTL.exists():
        pytest.skip(f"{KUBECTL} not installed")
    return KUBECTL


def test_kubectl_reads_kubeconfig(kubectl: Path, tmp_path: Path, tls_files: TLSFiles) -> None:
    """kubectl parses the kubeconfig and reports our server, files and context."""
    path = write_kubeconfig(
        tmp_path / "config",
        "https://127.0.0.1:6443",
        ca_file=tls_files.ca_cert,
        client_cert=tls_files.client_cert,
        client_key=tls_files.client_key,
        token="tok",
        namespace="default",
    )
    result = _run_kubectl("--kubeconfig", str(path), "config", "view", "-o", "json")
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert view["current-context"] == "sandbox"
    cluster = view["clusters"][0]
    assert cluster["name"] == "sandbox"
    assert cluster["cluster"]["server"] == "https://127.0.0.1:6443"
    assert cluster["cluster"]["certificate-authority"] == str(tls_files.ca_cert)
    user = view["users"][0]["user"]
    assert user["client-certificate"] == str(tls_files.client_cert)
    assert user["client-key"] == str(tls_files.client_key)
    assert view["contexts"][0]["context"]["namespace"] == "default"


def test_kubectl_authenticates_with_client_certificate(
    kubectl: Path, https_port: int, tmp_path: Path, tls_files: TLSFiles
):
    """Go's TLS stack (kubectl) accepts our server cert and sends the client cert."""
    path = write_kubeconfig(
        tmp_path / "config",
        f"https://127.0.0.1:{https_port}",
        ca_file=tls_files.ca_cert,
        client_cert=tls_files.client_cert,
        client_key=tls_files.client_key,
    )

    def check() -> None:
        result = _run_kubectl("--kubeconfig", str(path), "get", "--raw", "/")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "kubernetai"

    return _client(check)
