"""`kubernetai check --connect` against real sandboxes, and what a stanza says about its API server.

Each stanza's API server is tried once through the official client, as the informers would
start (one list of each watched resource, limit=1): a good server, a wrong CA, a refused
token, a refused connection and a slow server. Also: credentials sent over plain HTTP are
warned about (in `check` and in the log at start), and an informer's failure names the URL.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from conftest import wait_for
from twisted.logger import globalLogPublisher

import kubernetai.corefile as corefile
from kubernetai import cli
from kubernetai.pkg.reactor_thread import in_reactor
from kubernetai.plugins.kubernetai.config import parse_stanza
from kubernetai.plugins.kubernetai.controller import Cluster
from kubernetai.sandbox.server import Sandbox
from kubernetai.sandbox.tls import TLSFiles, generate

TOKEN = "check-connect-token"


@pytest.fixture(scope="module")
def tls_sandbox(reactor_running: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """An HTTPS sandbox that wants a bearer token or a client certificate."""
    server = Sandbox(use_tls=True, token=TOKEN, tls_dir=tmp_path_factory.mktemp("pki"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def foreign_pki(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """Another CA, unrelated to the sandbox's."""
    return generate(tmp_path_factory.mktemp("foreign-pki"))


@pytest.fixture
def plain_sandbox(reactor_running: None) -> Iterator[Sandbox]:
    """A plain-HTTP sandbox that wants a bearer token."""
    server = Sandbox(token=TOKEN)
    server.start()
    yield server
    server.stop()


def corefile_with(tmp_path: Path, *stanzas: str) -> Path:
    """A Corefile whose one server block holds these stanza bodies, zones a.local, b.local, ..."""
    text = ".:1053 {\n"
    for i, body in enumerate(stanzas):
        text += f"    kubernetai {'abcdefgh'[i]}.local {{\n{body}\n        fallthrough\n    }}\n"
    path = tmp_path / "Corefile"
    path.write_text(text + "}\n")
    return path


def kubeconfig(server: Sandbox, path: Path, *, token: str | None = None) -> Path:
    """The sandbox's kubeconfig; with `token`, that token replaces its credentials."""
    server.write_kubeconfig(path)
    if token is not None:
        config = yaml.safe_load(path.read_text())
        config["users"][0]["user"] = {"token": token}
        path.write_text(yaml.safe_dump(config))
    return path


def check(capsys: pytest.CaptureFixture[str], path: Path, *options: str) -> tuple[int, str, str]:
    code = cli.main(["check", *options, str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def lines_without_warnings(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("warning: ")]


def test_good_api_servers_answer(tls_sandbox: Sandbox, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A kubeconfig with a token and an endpoint with a client certificate both answer: exit 0."""
    files = tls_sandbox.tls_files
    path = corefile_with(
        tmp_path,
        f"        kubeconfig {kubeconfig(tls_sandbox, tmp_path / 'kc')}",
        f"        endpoint {tls_sandbox.url}\n"
        f"        tls {files.client_cert} {files.client_key} {files.ca_cert}")
    code, out, err = check(capsys, path, "--connect")
    assert (code, err) == (0, "")
    assert lines_without_warnings(out) == [
        f"{path}:2 a.local.: OK: {tls_sandbox.url}",
        f"{path}:6 b.local.: OK: {tls_sandbox.url}",
        f"{path}: OK: 1 server block(s), 2 kubernetai stanza(s), port(s) 1053, "
        "API server(s) answered",
    ]


def test_each_watched_resource_is_listed_once(plain_sandbox: Sandbox, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """--connect lists exactly what the stanza watches, once each, and check alone sends nothing."""
    path = corefile_with(tmp_path, f"        kubeconfig {kubeconfig(plain_sandbox, tmp_path / 'kc')}\n"
                                   "        pods verified\n        labels app=web")
    before = plain_sandbox.request_counts()
    assert check(capsys, path)[0] == 0
    assert plain_sandbox.request_counts() == before
    assert check(capsys, path, "--connect")[0] == 0
    after = plain_sandbox.request_counts()
    listed = {key: after.get(key, 0) - before.get(key, 0) for key in after}
    assert {key: n for key, n in listed.items() if n} == {
        ("list", "services"): 1, ("list", "namespaces"): 1, ("list", "endpointslices"): 1,
        ("list", "pods"): 1}


def test_wrong_ca_names_the_url(tls_sandbox: Sandbox, foreign_pki: TLSFiles, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """A CA that did not sign the server's certificate: check alone says OK, --connect fails naming the URL."""
    files = tls_sandbox.tls_files
    path = corefile_with(tmp_path, f"        endpoint {tls_sandbox.url}\n"
                                   f"        tls {files.client_cert} {files.client_key} {foreign_pki.ca_cert}")
    assert check(capsys, path)[0] == 0
    code, out, err = check(capsys, path, "--connect")
    assert code == 1
    assert lines_without_warnings(out) == []
    first, last = err.splitlines()
    assert first.startswith(f"{path}:2 a.local.: FAILED: services: TLS with {tls_sandbox.url} failed: "
                            "its certificate is not trusted (")
    assert first.endswith("): is the CA right (tls CACERT, or the kubeconfig's certificate-authority)?")
    assert last == f"{path}: FAILED: a kubernetai stanza cannot use its API server"


def test_refused_token(tls_sandbox: Sandbox, tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    """A token the server refuses is reported with the 401 and the URL."""
    path = corefile_with(tmp_path, f"        kubeconfig {kubeconfig(tls_sandbox, tmp_path / 'kc', token='wrong')}")
    code, out, err = check(capsys, path, "--connect")
    assert code == 1
    assert err.splitlines()[0] == (f"{path}:2 a.local.: FAILED: services: {tls_sandbox.url} refused the "
                                   "credentials (HTTP 401 Unauthorized): Unauthorized")


def test_refused_connection(plain_sandbox: Sandbox, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    """An API server that refuses connections is reported at once, with its URL; the others still answer."""
    down = Sandbox(token=TOKEN)
    down.start()
    down.refuse()
    try:
        path = corefile_with(tmp_path, f"        kubeconfig {kubeconfig(down, tmp_path / 'down')}",
                             f"        kubeconfig {kubeconfig(plain_sandbox, tmp_path / 'up')}")
        code, out, err = check(capsys, path, "--connect", "--timeout", "20")
    finally:
        down.stop()
    assert code == 1
    assert err.splitlines()[0] == (f"{path}:2 a.local.: FAILED: services: cannot connect to {down.url}: "
                                   "Connection refused")
    assert lines_without_warnings(out) == [f"{path}:6 b.local.: OK: {plain_sandbox.url}"]


def test_slow_api_server_times_out(plain_sandbox: Sandbox, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A server slower than --timeout is reported as not answering in time."""
    plain_sandbox.delay(5)
    path = corefile_with(tmp_path, f"        kubeconfig {kubeconfig(plain_sandbox, tmp_path / 'kc')}")
    code, _, err = check(capsys, path, "--connect", "--timeout", "0.5")
    assert code == 1
    assert err.splitlines()[0] == (f"{path}:2 a.local.: FAILED: services: {plain_sandbox.url} did not "
                                   "answer within 0.5s")


def test_not_an_api_server(reactor_running: None, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    """Something that answers HTTP but is no API server fails, naming the status and the URL."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        path = corefile_with(tmp_path, f"        endpoint http://127.0.0.1:{port}")

        def answer() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                                   b"Content-Length: 14\r\nConnection: close\r\n\r\n<html></html>\n")
        server = threading.Thread(target=answer, daemon=True)
        server.start()
        code, _, err = check(capsys, path, "--connect")
        server.join(10)
    assert code == 1
    assert err.splitlines()[0] == (f"{path}:2 a.local.: FAILED: services: http://127.0.0.1:{port}: the "
                                   "answer is not a Kubernetes list: is this the API server?")


def test_timeout_must_be_a_positive_number(capsys: pytest.CaptureFixture[str]) -> None:
    """--timeout takes seconds, more than 0 and at most 300."""
    for bad in ("0", "-1", "nan", "301", "soon"):
        with pytest.raises(SystemExit) as info:
            cli.main(["check", "--connect", "--timeout", bad, "Corefile"])
        assert info.value.code == 2
        assert "argument --timeout: " in capsys.readouterr().err


# -- credentials over plain HTTP ------------------------------------------------------------


def test_check_warns_of_a_token_over_plain_http(plain_sandbox: Sandbox, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A kubeconfig pairing an http:// server with a token gets a warning at its line; https does not."""
    path = corefile_with(tmp_path, f"        kubeconfig {kubeconfig(plain_sandbox, tmp_path / 'kc')}")
    code, out, _ = check(capsys, path)
    assert code == 0
    assert (f"warning: {path}:3: kubernetai: a bearer token would be sent to {plain_sandbox.url} over "
            "plain HTTP, unencrypted: use an https:// server") in out.splitlines()


def test_no_warning_over_https(tls_sandbox: Sandbox, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """The same token to an https:// server is not warned about."""
    path = corefile_with(tmp_path, f"        kubeconfig {kubeconfig(tls_sandbox, tmp_path / 'kc')}")
    code, out, _ = check(capsys, path)
    assert code == 0 and "plain HTTP" not in out


def cluster_of(path: Path) -> Cluster:
    """The Cluster of the first stanza of a Corefile, its client built (as at start-up)."""
    (block,) = corefile.parse_file(path)
    cluster = Cluster(parse_stanza(block.directives[0], [k.zone for k in block.keys]))
    cluster.connect()
    return cluster


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every Twisted log event's text, while the test runs."""
    from twisted.logger import formatEvent

    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event))
    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def test_token_over_plain_http_is_logged_at_start(plain_sandbox: Sandbox, tmp_path: Path,
                                                  log_lines: list[str]) -> None:
    """Starting such a stanza logs the warning once."""
    cluster = cluster_of(corefile_with(tmp_path, f"        kubeconfig {kubeconfig(plain_sandbox, tmp_path / 'kc')}"))
    in_reactor(cluster.startService)
    try:
        wait_for(lambda: cluster.synced, what="the stanza to sync")
    finally:
        in_reactor(cluster.stopService)
    warned = [line for line in log_lines if "over plain HTTP" in line]
    assert warned == [f"{tmp_path / 'Corefile'}:3: kubernetai: a bearer token would be sent to "
                      f"{plain_sandbox.url} over plain HTTP, unencrypted: use an https:// server"]


def test_informer_failure_names_the_url(tls_sandbox: Sandbox, foreign_pki: TLSFiles, tmp_path: Path,
                                        log_lines: list[str]) -> None:
    """An informer that cannot verify the server's certificate logs a line naming the API server URL."""
    files = tls_sandbox.tls_files
    cluster = cluster_of(corefile_with(tmp_path, f"        endpoint {tls_sandbox.url}\n        tls "
                                                 f"{files.client_cert} {files.client_key} {foreign_pki.ca_cert}"))
    in_reactor(cluster.startService)
    try:
        failed = wait_for(lambda: [line for line in log_lines
                                   if "CERTIFICATE_VERIFY_FAILED" in line and "services" in line],
                          what="an informer's TLS failure in the log")
    finally:
        in_reactor(cluster.stopService)
    assert tls_sandbox.url in failed[0], failed[0]
