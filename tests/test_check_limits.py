"""Hostile Corefiles through the real commands: `kubernetai check` and `twistd kubernetai`.

Each runs in a child process with its memory capped and a deadline, so a regression shows
as a failure (a MemoryError, a hang cut short) instead of taking the machine down. The
command must print one located line and exit 1, quickly: no traceback, no hang, no file
contents in the message.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
TWISTD = str(Path(sys.executable).parent / "twistd")
MEMORY_CAP = 1536 << 20  # bytes of address space for the child
DEADLINE = 60  # seconds; each case takes well under one


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE, cwd=cwd,
                          env=env or ENV, preexec_fn=_cap_memory, stdin=subprocess.DEVNULL)


def check(path: Path | str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "kubernetai", "check", str(path)], cwd, env)


def nested(levels: int) -> str:
    return ". {\n" + "".join(f"a{i} {{\n" for i in range(levels)) + "log\n" + "}\n" * (levels + 1)


def test_check_deep_nesting_prints_one_line(tmp_path: Path) -> None:
    """3,000 nested blocks: one FILE:LINE: line on stderr, exit 1 (not a 3,000-line RecursionError)."""
    path = tmp_path / "Corefile"
    path.write_text(nested(3000))
    result = check(path, tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"{path}:33: blocks nested too deeply: more than 32 levels of '{{'\n"


def test_twistd_deep_nesting_prints_one_line(tmp_path: Path) -> None:
    """twistd kubernetai refuses the same Corefile with the same one line and exit status 1."""
    path = tmp_path / "Corefile"
    path.write_text(nested(3000))
    result = run([TWISTD, "--nodaemon", "--pidfile=", "kubernetai", "--corefile", str(path)], tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"{path}:33: blocks nested too deeply: more than 32 levels of '{{'\n"


@pytest.mark.parametrize("target, kind", [
    pytest.param("/dev/zero", "a character device", id="dev-zero"),
    pytest.param("fifo", "a FIFO", id="fifo"),
])
def test_check_corefile_not_a_regular_file(tmp_path: Path, target: str, kind: str) -> None:
    """`check /dev/zero` and `check FIFO` are refused at once (not read until memory runs out, not waited on)."""
    os.mkfifo(tmp_path / "fifo")
    result = check(target, tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"{target}:0: cannot read Corefile: not a regular file ({kind})\n"


@pytest.mark.parametrize("target, kind", [
    pytest.param("/dev/zero", "a character device", id="dev-zero"),
    pytest.param("fifo", "a FIFO", id="fifo"),
])
def test_check_import_not_a_regular_file(tmp_path: Path, target: str, kind: str) -> None:
    """`import /dev/zero` (or a FIFO) is refused at the import line, at once."""
    os.mkfifo(tmp_path / "fifo")
    path = tmp_path / "Corefile"
    path.write_text(f".:1053 {{\n    import {target}\n}}\n")
    result = check(path, tmp_path)
    shown = target if target.startswith("/") else str(tmp_path / target)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"{path}:2: could not import {shown!r}: not a regular file ({kind})\n"


def test_check_import_proc_environ_keeps_the_environment_secret(tmp_path: Path) -> None:
    """`import /proc/self/environ`: refused by its NUL bytes, and no variable reaches the output."""
    path = tmp_path / "Corefile"
    path.write_text(".:1053 {\n    import /proc/self/environ\n}\n")
    result = check(path, tmp_path, {**ENV, "KUBERNETAI_TEST_SECRET": "s3cr3t-v4lue"})
    assert (result.returncode, result.stdout) == (1, "")
    assert "s3cr3t" not in result.stderr and "KUBERNETAI_TEST_SECRET" not in result.stderr
    assert result.stderr == ("/proc/self/environ:1: control character U+0000 in the file: a Corefile is "
                             "text (is this the right file?)\n")


def test_check_environment_reference_doubling(tmp_path: Path) -> None:
    """A variable that refers to itself twice (it would double at each round) is one error line."""
    path = tmp_path / "Corefile"
    path.write_text(".:1053 {\n    log {$GROW}\n}\n")
    result = check(path, tmp_path, {**ENV, "GROW": "{$GROW}{$GROW}"})
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (f"{path}:2: environment variable substitution makes a token longer than "
                             "65,536 characters in '{$GROW}'\n")


def test_check_huge_glob_import(tmp_path: Path) -> None:
    """A glob matching thousands of files is refused at the import, before any is read."""
    (tmp_path / "conf.d").mkdir()
    for i in range(3000):
        (tmp_path / "conf.d" / f"{i:05d}.conf").write_text("log\n")
    path = tmp_path / "Corefile"
    path.write_text(".:1053 {\n    import conf.d/*\n}\n")
    result = check(path, tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (f"{path}:2: cannot import 'conf.d/*': it matches more than 256 file(s); "
                             "a Corefile may import 256 files in all\n")


@pytest.mark.parametrize("key, message", [
    pytest.param("cluster.local:nan", "invalid server block key 'cluster.local:nan': port 'nan' is not a number",
                 id="port-nan"),
    pytest.param("clu\u202ester.local", "invalid server block key 'clu\\u202ester.local': zone "
                 "'clu\\u202ester.local' holds U+202E (RIGHT-TO-LEFT OVERRIDE), which cannot be part of a zone name",
                 id="bidi-override"),
    pytest.param("clu\u200bster.local", "invalid server block key 'clu\\u200bster.local': zone "
                 "'clu\\u200bster.local' holds U+200B (ZERO WIDTH SPACE), which cannot be part of a zone name",
                 id="zero-width-space"),
])
def test_check_refuses_bad_server_block_keys(tmp_path: Path, key: str, message: str) -> None:
    """Keys CoreDNS would serve as zones no query can match are errors naming the file, line and character."""
    path = tmp_path / "Corefile"
    path.write_text(f"{key} {{\n    log\n}}\n", encoding="utf-8")
    result = check(path, tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"{path}:1: {message}\n"


@pytest.mark.parametrize("option, message", [
    pytest.param("endpoint nan", "kubernetai: invalid endpoint URL 'nan': without a scheme, tls or a port, "
                 "client-go reads it as http://nan:80 (plain HTTP on port 80), which is not where an API "
                 "server listens: write the URL in full, e.g. https://nan:6443", id="endpoint-nan"),
    pytest.param("endpoint https://", "kubernetai: invalid endpoint URL 'https://': not a URL, nor a "
                 "HOST:PORT pair (as client-go reads it)", id="endpoint-no-host"),
    pytest.param("endpoint http://[zz]:80", "kubernetai: invalid endpoint URL 'http://[zz]:80': 'zz' does not "
                 "appear to be an IPv4 or IPv6 address", id="endpoint-bad-brackets"),
    pytest.param("kubeconfig /dev/zero", "kubernetai: cannot read kubeconfig '/dev/zero': not a regular file "
                 "(a character device)", id="kubeconfig-dev-zero"),
    pytest.param("endpoint https://127.0.0.1:6443\n        tls fifo fifo fifo", "kubernetai: unable to read "
                 "client certificate 'fifo': not a regular file (a FIFO)", id="tls-fifo"),
])
def test_check_refuses_bad_connection_options(tmp_path: Path, option: str, message: str) -> None:
    """Connection options that can only fail (or hang) are refused by `check`, at their line."""
    os.mkfifo(tmp_path / "fifo")
    path = tmp_path / "Corefile"
    path.write_text(f".:1053 {{\n    kubernetai cluster.local {{\n        {option}\n    }}\n}}\n")
    result = check(path, tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    line = 4 if "tls" in option else 3
    assert result.stderr == f"{path}:{line}: {message}\n"


def test_check_warns_of_a_startup_timeout_that_means_forever(tmp_path: Path) -> None:
    """startup_timeout 2562047h (Go's longest) is accepted, as by CoreDNS, with a warning saying what it means."""
    path = tmp_path / "Corefile"
    path.write_text(".:1053 {\n    kubernetai cluster.local {\n        endpoint http://127.0.0.1:8080\n"
                    "        startup_timeout 2562047h47m16.854775807s\n    }\n}\n")
    result = check(path, tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert (f"warning: {path}:4: kubernetai: startup_timeout 2562047h47m16.854775807s: until this stanza "
            "has synced, the server answers no query for up to about 292 years (CoreDNS waits as long)"
            ) in result.stdout.splitlines()


def test_reload_of_a_deeply_nested_corefile_logs_one_line(sandbox, tmp_path: Path) -> None:
    """SIGUSR1 with a Corefile of 3,000 nested blocks: one 'reload failed' line naming FILE:LINE, no traceback,
    and the server keeps serving."""
    import signal
    import time

    from conftest import free_dns_port

    path = tmp_path / "Corefile"
    path.write_text(f"a.local {{\n    bind 127.0.0.1\n    kubernetai a.local {{\n        endpoint {sandbox.url}\n"
                    "    }\n}\n")
    log = tmp_path / "twistd.log"
    with log.open("w") as output:
        process = subprocess.Popen([TWISTD, "--nodaemon", "--pidfile=", "kubernetai", "--corefile", str(path),
                                    "--dns-port", str(free_dns_port())], stdout=output, stderr=subprocess.STDOUT,
                                   cwd=tmp_path, env=ENV, preexec_fn=_cap_memory)
    try:
        def logged(text: str) -> bool:
            deadline = time.monotonic() + DEADLINE
            while time.monotonic() < deadline:
                if text in log.read_text():
                    return True
                assert process.poll() is None, log.read_text()[-3000:]
                time.sleep(0.05)
            return False
        assert logged("kubernetai: listening on"), log.read_text()[-3000:]
        path.write_text(nested(3000))
        process.send_signal(signal.SIGUSR1)
        assert logged("reload failed"), log.read_text()[-3000:]
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(30)
    text = log.read_text()
    assert "Traceback" not in text and "RecursionError" not in text
    failed = [line for line in text.splitlines() if "reload failed" in line]
    assert len(failed) == 1 and f"{path}:33: blocks nested too deeply: more than 32 levels of '{{'" in failed[0], failed
