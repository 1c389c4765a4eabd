"""Tests for kubernetai.app.tap: `twistd kubernetai` options and the service they make."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.application.service import IService, IServiceMaker
from twisted.python import usage

from kubernetai.app import tap
from kubernetai.app.server import KubernetaiService
from kubernetai.app.supervisor import Supervisor

COREFILE = """\
cluster.local:1053 example.local:2053 {
    errors
    kubernetai {
        endpoint http://127.0.0.1:6443
    }
}
"""


def options(*argv: str) -> tap.Options:
    opts = tap.Options()
    opts.parseOptions(list(argv))
    return opts


@pytest.fixture
def corefile(tmp_path: Path) -> Path:
    path = tmp_path / "Corefile"
    path.write_text(COREFILE)
    return path


def test_service_maker_points_at_this_module() -> None:
    """The twistd plugin is named kubernetai and takes its options from kubernetai.app.tap."""
    from twisted.plugins import kubernetai_plugin

    maker = kubernetai_plugin.kubernetai
    assert IServiceMaker.providedBy(maker)
    assert maker.tapname == "kubernetai"
    assert maker.options is tap.Options


@pytest.mark.parametrize("argv, corefile_name, port", [
    (["--corefile", "{path}"], "{path}", None),
    (["-c", "{path}", "-p", "5353"], "{path}", 5353),
    (["--corefile={path}", "--dns-port=0"], "{path}", 0),
])
def test_options(corefile: Path, argv: list[str], corefile_name: str, port: int | None) -> None:
    """--corefile/-c names the file; --dns-port/-p becomes an int (None when not given)."""
    opts = options(*(a.format(path=corefile) for a in argv))
    assert opts["corefile"] == corefile_name.format(path=corefile)
    assert opts["dns-port"] == port


def test_default_corefile_is_in_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --corefile, ./Corefile is used, as coredns does."""
    (tmp_path / "Corefile").write_text(COREFILE)
    monkeypatch.chdir(tmp_path)
    assert options()["corefile"] == "Corefile"


def test_missing_corefile_is_a_usage_error(tmp_path: Path) -> None:
    """A Corefile that does not exist is refused while parsing the options."""
    missing = tmp_path / "nope" / "Corefile"
    with pytest.raises(usage.UsageError) as info:
        options("--corefile", str(missing))
    assert str(info.value) == f"{missing}: no such Corefile"


def test_bad_dns_port_is_a_usage_error(corefile: Path) -> None:
    """--dns-port must be a number."""
    with pytest.raises(usage.UsageError) as info:
        options("--corefile", str(corefile), "--dns-port", "fiftythree")
    assert str(info.value) == "--dns-port: not a number: fiftythree"


def test_make_service(corefile: Path) -> None:
    """makeService returns an unstarted Supervisor serving the Corefile's ports."""
    service = tap.makeService(options("--corefile", str(corefile)))
    assert IService.providedBy(service)
    assert isinstance(service, Supervisor)
    assert isinstance(service.server, KubernetaiService)
    assert [plan.port for plan in service.server.plans] == [1053, 2053]
    assert not service.running


def test_make_service_with_port_override(corefile: Path) -> None:
    """--dns-port puts every block on that one port."""
    service = tap.makeService(options("--corefile", str(corefile), "--dns-port", "5353"))
    assert [plan.port for plan in service.server.plans] == [5353]
    assert [b.zones for b in service.server.plans[0].blocks] == [("cluster.local.", "example.local.")]


@pytest.mark.parametrize("text, line, message", [
    (".:53 {\n    errors\n    cache 30\n}\n", 3, "unknown directive 'cache'"),
    (".:53 {\n    errors\n    errors\n}\n",
     3, "this plugin can only be used once per Server Block: 'errors'"),
    (".:53 {\n    kubernetai {\n        ttl 4000\n    }\n}\n",
     3, "kubernetai: ttl must be in range [0, 3600]: 4000"),
    (".:53 {\n    bind eth0\n}\n",
     2, "bind: not a valid IP address: 'eth0' (interface names are not supported)"),
    ("", 1, "no server blocks in the Corefile"),
    (".:53 {\n    kubernetai {\n        endpoint http://127.0.0.1:6443\n"
     "        kubeconfig /nonexistent/kubeconfig\n    }\n}\n",
     4, "kubernetai: cannot read kubeconfig '/nonexistent/kubeconfig': no such file"),
    (".:53 {\n    kubernetai {\n        endpoint https://127.0.0.1:6443\n"
     "        tls /nonexistent/c.crt /nonexistent/c.key /nonexistent/ca.crt\n    }\n}\n",
     4, "kubernetai: unable to read client certificate '/nonexistent/c.crt': "
        "No such file or directory"),
])
def test_bad_corefile_is_one_line_and_exit_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int,
        message: str) -> None:
    """A Corefile or connection-option mistake: one line on stderr (FILE:LINE: msg), exit 1."""
    path = tmp_path / "Corefile"
    path.write_text(text)
    opts = options("--corefile", str(path))
    with pytest.raises(SystemExit) as info:
        tap.makeService(opts)
    assert info.value.code == 1
    assert capsys.readouterr().err == f"{path}:{line}: {message}\n"


def test_in_cluster_outside_a_cluster_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stanza with neither endpoint nor kubeconfig, outside a cluster, stops at its line."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    path = tmp_path / "Corefile"
    path.write_text(".:53 {\n    errors\n    kubernetai cluster.local\n}\n")
    with pytest.raises(SystemExit) as info:
        tap.makeService(options("--corefile", str(path)))
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:3: kubernetai: unable to load in-cluster configuration")
    assert err.count("\n") == 1
