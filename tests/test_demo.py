"""Tests for `kubernetai check` (kubernetai.app.check.run_check) and `kubernetai demo`
(kubernetai.sandbox.demo.run_demo) through the console entry point.

Every test that starts the demo gives it free ports (`--dns-port 0 --api-ports 0,0,0
--http-ports 0,0,0`); only
the test of the busy-port message runs it on its defaults, and that run stops at the first
API server, whose port the test itself holds.
"""

from __future__ import annotations

import errno
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest
from conftest import wait_for

from kubernetai import cli
from kubernetai.app import check as check_command
from kubernetai.sandbox import demo

ROOT = Path(__file__).resolve().parent.parent
COREFILES = Path(__file__).resolve().parent / "corefiles"


def check(path: Path | str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["check", str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write(tmp_path: Path, text: str, name: str = "Corefile") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_check_corefile_example(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped Corefile.example checks clean: one line of summary, exit 0."""
    path = ROOT / "Corefile.example"
    assert check(path, capsys) == (
        0, f"{path}: OK: 1 server block(s), 3 kubernetai stanza(s), port(s) 1053\n", "")


def test_check_counts_blocks_stanzas_and_ports(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The summary counts server blocks, kubernetai stanzas and lists the ports."""
    api = "{\n        endpoint http://127.0.0.1:9\n    }"
    path = write(tmp_path, f"a.local:1053 {{\n    kubernetai {api}\n    kubernetai {{\n"
                           "        endpoint http://127.0.0.1:9\n"
                           "        fallthrough\n    }\n}\n"
                           f"b.local:2053 {{\n    errors\n    kubernetai {api}\n}}\n"
                           f"c.local:1053 {{\n    log\n    kubernetai {api}\n}}\n")
    code, out, err = check(path, capsys)
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == (f"{path}: OK: 3 server block(s), 4 kubernetai stanza(s), "
                                    "port(s) 1053, 2053")


def test_check_prints_warnings_and_still_passes(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Warnings are printed before the summary, prefixed 'warning: '; the exit code stays 0."""
    path = write(tmp_path, ".:53 {\n    kubernetai cluster.local {\n        fallthrough\n"
                           "        ttl 10\n        ttl 20\n"
                           "        endpoint http://127.0.0.1:9\n    }\n}\n")
    code, out, err = check(path, capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[-1].startswith(f"{path}: OK: 1 server block(s), 1 kubernetai stanza(s)")
    warnings = lines[:-1]
    assert warnings[0] == (f"warning: {path}:5: kubernetai: 'ttl' is given again (first at "
                           "line 4); the last one is used")
    assert any(w.startswith(f"warning: {path}:2: kubernetai: the last stanza has fallthrough")
               for w in warnings)
    assert any(w.startswith(f"warning: {path}:1: names in . outside the kubernetai zones")
               for w in warnings)
    assert all(w.startswith("warning: ") for w in warnings)


@pytest.mark.parametrize("text, line, message", [
    pytest.param(".:53 {\n    errors\n    dnssec\n}\n", 3, "unknown directive 'dnssec'",
                 id="unknown-directive"),
    pytest.param(".:53 {\n    errors\n    errors\n}\n", 3,
                 "this plugin can only be used once per Server Block: 'errors'",
                 id="errors-twice"),
    pytest.param(".:53 {\n    kubernetai {\n        pods sometimes\n    }\n}\n", 3, None,
                 id="bad-stanza-option"),
    pytest.param(".:53 {\n    log {\n        class failures\n    }\n}\n", 3,
                 "log: invalid Class: failures", id="bad-log-class"),
    pytest.param(".:53 {\n    bind nosuchif0\n}\n", 2,
                 "bind: not a valid IP address or interface name: 'nosuchif0'",
                 id="bad-bind"),
    pytest.param(".:53 {\n    errors\n", None, None, id="unclosed-block"),
])
def test_check_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                      line: int | None, message: str | None) -> None:
    """A Corefile error is printed on stderr as FILE:LINE: message, with exit code 1."""
    path = write(tmp_path, text)
    code, out, err = check(path, capsys)
    assert (code, out) == (1, "")
    assert err.endswith("\n") and err.count("\n") == 1
    assert err.startswith(f"{path}:")
    if line is not None:
        assert err.startswith(f"{path}:{line}: ")
    if message is not None:
        assert err == f"{path}:{line}: {message}\n"


def test_check_kubeadm_corefile_names_first_unknown_plugin(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A stock kubeadm Corefile fails at its first plugin kubernetai does not have."""
    path = COREFILES / "kubeadm.Corefile"
    assert check(path, capsys) == (1, "", f"{path}:7: unknown directive 'kubernetes'\n")


def test_check_kubeadm_corefile_with_kubernetai(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The kubeadm Corefile with `kubernetai` for `kubernetes` checks out whole (forward,
    cache, loop, reload, loadbalance included); off a cluster, only the stanza's in-cluster
    credentials are missing, and with an `endpoint` nothing is."""
    path = COREFILES / "kubeadm-kubernetai.Corefile"
    code, out, err = check(path, capsys)
    assert (code, out) == (1, "")
    assert err.startswith(f"{path}:7: kubernetai: unable to load in-cluster configuration")
    located = tmp_path / "Corefile"
    located.write_text(path.read_text().replace(
        "pods insecure", "endpoint https://10.96.0.1:443\n       pods insecure"))
    assert check(located, capsys) == (
        0, f"{located}: OK: 1 server block(s), 1 kubernetai stanza(s), port(s) 53\n", "")


def test_check_error_in_an_imported_file(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """An error in an imported file names that file and its line."""
    (tmp_path / "extra").mkdir()
    write(tmp_path / "extra", "errors\n\nnosuchplugin\n", "10-extra.conf")
    path = write(tmp_path, ".:53 {\n    import extra/*.conf\n}\n")
    code, out, err = check(path, capsys)
    assert (code, out) == (1, "")
    assert err == f"{tmp_path / 'extra' / '10-extra.conf'}:3: unknown directive 'nosuchplugin'\n"


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Corefile that cannot be read is an error naming the file, exit code 1."""
    path = tmp_path / "missing"
    code, out, err = check(path, capsys)
    assert (code, out) == (1, "")
    assert err.startswith(f"{path}:")
    assert "No such file or directory" in err


def test_check_needs_a_file_argument(capsys: pytest.CaptureFixture[str]) -> None:
    """`kubernetai check` without a file is an argparse usage error (exit 2)."""
    with pytest.raises(SystemExit) as info:
        cli.main(["check"])
    assert info.value.code == 2
    assert "corefile" in capsys.readouterr().err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    """`kubernetai` with no command prints help listing check and demo, exit code 2."""
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    assert "check" in out and "demo" in out


def test_check_options_parse() -> None:
    """`check` is wired to kubernetai.app.check.run_check, with its --connect options."""
    args = cli.build_parser().parse_args(["check", "C", "--connect", "--timeout", "2.5"])
    assert (args.run, args.corefile, args.connect, args.timeout) == (
        check_command.run_check, "C", True, 2.5)


def test_check_does_not_import_the_sandbox() -> None:
    """Running `check` loads no kubernetai.sandbox module: the product stands without it."""
    code = ("import argparse, sys\n"
            "from kubernetai.app.check import run_check\n"
            "args = argparse.Namespace(corefile='Corefile.example', connect=False, timeout=5.0)\n"
            "assert run_check(args) == 0\n"
            "print(sorted(m for m in sys.modules if m.startswith('kubernetai.sandbox')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_demo_options_parse() -> None:
    """The demo command's options parse without starting anything."""
    args = cli.build_parser().parse_args(["demo", "--dns-port", "2053", "--corefile", "X"])
    assert (args.run, args.dns_port, args.corefile, args.examples) == (demo.run_demo, 2053,
                                                                       "X", None)
    assert args.api_ports == (16441, 16442, 16443)  # the ports Corefile.example names


@pytest.mark.parametrize("text, ports", [
    ("0,0,0", (0, 0, 0)),
    ("16441,0,20000", (16441, 0, 20000)),
    (" 1, 2 ,65535", (1, 2, 65535)),
])
def test_demo_api_ports_parse(text: str, ports: tuple[int, ...]) -> None:
    """--api-ports takes one port per demo cluster, in order; 0 asks for a free one."""
    assert cli.build_parser().parse_args(["demo", "--api-ports", text]).api_ports == ports


@pytest.mark.parametrize("text, message", [
    ("0,0", "expected 3 comma-separated ports (P1,P2,P3)"),
    ("0,0,0,0", "expected 3 comma-separated ports (P1,P2,P3)"),
    ("0", "expected 3 comma-separated ports (P1,P2,P3)"),
    ("0,x,0", "not a port (0-65535, 0 for a free one): 'x'"),
    ("0,-1,0", "not a port (0-65535, 0 for a free one): '-1'"),
    ("0,0,65536", "not a port (0-65535, 0 for a free one): '65536'"),
    ("0,,0", "not a port (0-65535, 0 for a free one): ''"),
    ("2000,0,2000", "port 2000 is given to more than one cluster"),
])
def test_demo_api_ports_refused(text: str, message: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong --api-ports is a usage error (exit 2) that says what is expected."""
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(["demo", "--api-ports", text])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--api-ports" in err and message in err


def test_corefile_with_ports_moves_each_endpoint_once() -> None:
    """Endpoints on the default ports move to the bound ones in one pass (a swap works);
    other ports, other hosts and longer port numbers are left alone."""
    text = ("kubernetai a {\n    endpoint http://127.0.0.1:16441\n}\n"
            "kubernetai b {\n    endpoint https://localhost:16442/\n}\n"
            "kubernetai c {\n    endpoint http://10.0.0.1:16441 http://127.0.0.1:164410\n}\n")
    assert demo.corefile_with_ports(text, {16441: 16442, 16442: 16441}) == (
        "kubernetai a {\n    endpoint http://127.0.0.1:16442\n}\n"
        "kubernetai b {\n    endpoint https://localhost:16441/\n}\n"
        "kubernetai c {\n    endpoint http://10.0.0.1:16441 http://127.0.0.1:164410\n}\n")
    assert demo.corefile_with_ports(text, {}) == text


def test_demo_corefile_kept_on_default_ports(tmp_path: Path) -> None:
    """On the default ports the demo serves the given Corefile itself and writes nothing."""
    corefile = ROOT / "Corefile.example"
    assert demo._corefile_for(corefile, demo.DEFAULT_API_PORTS, tmp_path) == corefile
    assert list(tmp_path.iterdir()) == []


def test_demo_corefile_written_with_bound_ports(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """On other ports the demo writes a copy of the Corefile naming the ports bound."""
    corefile = ROOT / "Corefile.example"
    written = demo._corefile_for(corefile, (30001, 16442, 30003), tmp_path)
    assert written.parent == tmp_path
    text = written.read_text()
    endpoints = [line.split()[1] for line in text.splitlines()
                 if line.strip().startswith("endpoint ")]
    assert endpoints == ["http://127.0.0.1:30001", "http://127.0.0.1:16442",
                         "http://127.0.0.1:30003"]
    assert text == corefile.read_text().replace(":16441", ":30001").replace(":16443", ":30003")
    assert capsys.readouterr().err == ""


def test_demo_corefile_without_the_endpoint_warns(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A --corefile that does not name a moved demo cluster's port gets a warning."""
    corefile = tmp_path / "Corefile"
    corefile.write_text("a.local:1053 {\n    kubernetai {\n"
                        "        endpoint http://127.0.0.1:16442\n    }\n}\n")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    written = demo._corefile_for(corefile, (30001, 30002, 16443), out_dir)
    assert "endpoint http://127.0.0.1:30002\n" in written.read_text()
    assert capsys.readouterr().err == (
        f"kubernetai demo: warning: {corefile} names no endpoint on 127.0.0.1:16441, so it "
        f"does not use the cluster.local API server (now on port 30001)\n")


# -- the demo, run as the user runs it ------------------------------------------------------

DEMO_DEADLINE = 60  # seconds for the demo to start (three API servers, three informers)


@pytest.fixture
def default_api_port_held() -> Iterator[int]:
    """Something listens on 127.0.0.1:16441 (Corefile.example's first API server port).

    The test listens there itself; if it cannot because something else already does, the
    port is held all the same. SO_REUSEADDR only lets a leftover TIME_WAIT not count.
    """
    port = demo.DEFAULT_API_PORTS[0]
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("127.0.0.1", port))
        holder.listen(1)
    except OSError as error:
        holder.close()
        if error.errno != errno.EADDRINUSE:
            raise
    try:
        yield port
    finally:
        holder.close()


class Demo:
    """`python -m kubernetai demo ...` in a subprocess, its stdout read by a thread so that
    every wait is bounded."""

    def __init__(self, *options: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kubernetai", "demo", *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, cwd=ROOT)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def read_until(self, prefix: str, timeout: float = DEMO_DEADLINE) -> str:
        """The first line (after those already read) starting with `prefix`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} line in {timeout}s: {self.seen}") from None
            if line is None:
                raise AssertionError(f"demo exited ({self.process.wait(5)}): {self.seen}; "
                                     f"stderr: {self.stderr()[-2000:]}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def stderr(self) -> str:
        assert self.process.stderr is not None
        if self.process.poll() is None:
            return ""
        return self.process.stderr.read()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(5)


def ask(port: int, name: str, rdtype: str = "A") -> list[str]:
    """The answer section's records for name/rdtype, from the DNS server on 127.0.0.1:port."""
    response = dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port,
                             timeout=5)
    return sorted(rr.to_text() for rrset in response.answer for rr in rrset)


def test_demo_on_free_api_ports_while_the_default_is_held(default_api_port_held: int) -> None:
    """With --api-ports 0,0,0 the demo starts though 16441 is taken, writes a Corefile naming
    the ports it bound, and answers from all three clusters (through those ports)."""
    running = Demo("--dns-port", "0", "--api-ports", "0,0,0", "--http-ports", "0,0,0")
    try:
        bound = []
        for name, _ in demo.DEMO_CLUSTERS:
            line = running.read_until(f"cluster {name}: API server http://127.0.0.1:")
            bound.append(int(line.rsplit(":", 1)[1]))
        assert default_api_port_held not in bound and len(set(bound)) == 3
        running.read_until("wrote ")
        line = running.read_until("DNS server on 127.0.0.1 port ")
        dns_port = int(line.split()[5])
        written = Path(line.split("(Corefile: ", 1)[1].rstrip().rstrip(")"))
        endpoints = [row.split()[1] for row in written.read_text().splitlines()
                     if row.strip().startswith("endpoint ")]
        assert endpoints == [f"http://127.0.0.1:{port}" for port in bound]
        dig = [running.read_until("  dig ", timeout=5) for _ in range(2)]
        assert "reports.shared.svc.cluster.local" in "".join(dig)

        def answered() -> bool:
            return ask(dns_port, "web.shared.svc.cluster.local") == ["10.96.100.10"]
        wait_for(answered, timeout=15, what="the demo's first answer")
        assert ask(dns_port, "reports.shared.svc.cluster.local") == ["10.97.100.20"]
        assert ask(dns_port, "gateway.edge.svc.conglomeration.local", "AAAA") == [
            "fd00:98::30:10"]
    finally:
        running.stop()
    assert not written.exists(), "the written Corefile is removed when the demo stops"


def test_demo_default_port_taken_is_a_clear_error(default_api_port_held: int) -> None:
    """Without --api-ports and with 16441 taken, the demo exits 1 naming the port and
    suggesting --api-ports (and starts no API server)."""
    result = subprocess.run([sys.executable, "-m", "kubernetai", "demo", "--dns-port", "0"],
                            capture_output=True, text=True, cwd=ROOT, timeout=DEMO_DEADLINE,
                            stdin=subprocess.DEVNULL, check=False)
    port = default_api_port_held
    assert (result.returncode, result.stdout) == (1, "")
    lines = [line for line in result.stderr.splitlines() if line.startswith("kubernetai demo:")]
    assert lines[0].startswith(
        f"kubernetai demo: cannot start the cluster.local API server on 127.0.0.1 port {port}: ")
    assert "Address already in use" in lines[0]
    assert lines[1] == (f"kubernetai demo: if something else holds port {port}, choose other "
                        "API server ports with --api-ports P1,P2,P3 (0 picks a free port, "
                        "e.g. --api-ports 0,0,0)")
