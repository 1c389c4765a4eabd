"""Tests for kubernetai.app.tap: `twistd kubernetai` options and the service they make."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.application.service import IService, IServiceMaker
from twisted.python import usage

from kubernetai import __version__
from kubernetai.app import logs, tap
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
    (".:53 {\n    errors\n    dnssec\n}\n", 3, "unknown directive 'dnssec'"),
    (".:53 {\n    errors\n    errors\n}\n",
     3, "this plugin can only be used once per Server Block: 'errors'"),
    (".:53 {\n    kubernetai {\n        ttl 4000\n    }\n}\n",
     3, "kubernetai: ttl must be in range [0, 3600]: 4000"),
    (".:53 {\n    bind nosuchif0\n}\n",
     2, "bind: not a valid IP address or interface name: 'nosuchif0'"),
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


# -- --version and the log ----------------------------------------------------------------

SOURCE = str(Path(__file__).resolve().parent.parent)  # twistd finds its plugin here


def test_version_option(capsys: pytest.CaptureFixture[str]) -> None:
    """`--version` is kubernetai's (usage.Options' own would print Twisted's)."""
    with pytest.raises(SystemExit) as info:
        options("--version")
    assert info.value.code == 0
    assert capsys.readouterr().out == f"kubernetai {__version__}\n"


@pytest.mark.parametrize("argv", [
    [str(Path(sys.executable).with_name("twistd")), "kubernetai", "--version"],
    [str(Path(sys.executable).with_name("kubernetai")), "--version"],
])
def test_version_commands(tmp_path: Path, argv: list[str]) -> None:
    """`twistd kubernetai --version` and `kubernetai --version` print kubernetai's version."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": SOURCE})
    assert (result.returncode, result.stdout) == (0, f"kubernetai {__version__}\n"), result.stderr


def _under_twistd(corefile: Path, **given: object) -> tuple[tap.Options, dict[str, object]]:
    """tap.Options parsed as twistd's subcommand, twistd's own options being `given`."""
    parent: dict[str, object] = {"logger": None, "syslog": False, "nodaemon": True,
                                 "logfile": None, **given}
    opts = tap.Options()
    opts.parent = parent  # type: ignore[assignment]
    opts.parseOptions(["--corefile", str(corefile)])
    return opts, parent


def test_under_twistd_the_log_is_coredns_shaped(
        corefile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsed by twistd, the options name the CoreDNS-shaped observer as twistd's --logger
    (twistd builds its logger after parsing, before makeService), and makeService gives it
    the Corefile's servers for the banner."""
    monkeypatch.setattr(logs, "_twistd", None)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    opts, parent = _under_twistd(corefile)
    assert parent["logger"] == "kubernetai.app.logs.twistd_observer"
    assert opts.logging is logs._twistd is not None
    tap.makeService(opts)
    assert opts.logging.servers == ["cluster.local.:1053", "example.local.:2053"]


@pytest.mark.parametrize("given", [{"logger": "my.observer.factory"}, {"syslog": True}])
def test_the_operators_logger_or_syslog_wins(
        corefile: Path, monkeypatch: pytest.MonkeyPatch, given: dict[str, object]) -> None:
    monkeypatch.setattr(logs, "_twistd", None)
    opts, parent = _under_twistd(corefile, **given)
    assert opts.logging is None and logs._twistd is None
    assert parent["logger"] == given.get("logger")


def test_outside_twistd_the_log_is_left_alone(corefile: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_twistd", None)
    assert options("--corefile", str(corefile)).logging is None
    assert logs._twistd is None
