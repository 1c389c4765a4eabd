"""The process log in CoreDNS's shape (kubernetai.app.logs): the observer's lines, and the
real `twistd kubernetai` writing nothing else to its standard output or --logfile."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python import log as legacy
from twisted.python.failure import Failure

import kubernetai
from kubernetai.app import logs
from kubernetai.app.load import plans_of
from kubernetai.corefile import parse
from kubernetai.pkg.logwriter import LineWriter
from kubernetai.sandbox.ports import free_port

SOURCE = str(Path(__file__).resolve().parent.parent)  # twistd finds its plugin here
TWISTD = str(Path(sys.executable).with_name("twistd"))
TAGGED = re.compile(r"^\[(INFO|WARNING|ERROR|DEBUG|FATAL)\] ")
RELEASE = re.compile(r"^[a-z0-9]+/[a-z0-9_]+, python\d+\.\d+\.\d+\S*, twisted-\S+$")
CHATTER = ("Starting protocol", "Stopping protocol", "starting on", "Starting factory",
           "Stopping factory", "Port ", "Main loop terminated", "Server Shut Down",
           "starting up", "reactor class")


def observed(*, debug: bool = False, banner: tuple[str, ...] = ()
             ) -> tuple[Logger, legacy.LogPublisher, io.StringIO]:
    """A new-style Logger and a legacy publisher feeding one CoreDNSObserver into a buffer."""
    stream = io.StringIO()
    writer = LineWriter(stream)
    writer.debug = debug
    observer = logs.CoreDNSObserver(writer, banner)
    publisher = LogPublisher(observer)
    return (Logger(namespace="kubernetai.test", observer=publisher),
            legacy.LogPublisher(observerPublisher=publisher, publishPublisher=publisher),
            stream)


def a_failure() -> Failure:
    try:
        raise ValueError("the cause")
    except ValueError:
        return Failure()


# -- the observer -----------------------------------------------------------------------


def test_levels_are_coredns_tags() -> None:
    log, _, out = observed()
    log.info("plugin/reload: Running configuration SHA512 = {sha}", sha="ab12")
    log.warn("plugin/kubernetai: starting server with unsynced Kubernetes API")
    log.error("kubernetai: reload failed: {why}", why="x")
    log.critical("Unhandled error in Deferred:")
    assert out.getvalue().splitlines() == [
        "[INFO] plugin/reload: Running configuration SHA512 = ab12",
        "[WARNING] plugin/kubernetai: starting server with unsynced Kubernetes API",
        "[ERROR] kubernetai: reload failed: x",
        "[ERROR] Unhandled error in Deferred:",
    ]


def test_debug_lines_only_when_debug_is_on() -> None:
    log, _, out = observed()
    log.debug("informer {name}: stopped", name="a")
    assert out.getvalue() == ""
    log, _, out = observed(debug=True)
    log.debug("informer {name}: stopped", name="a")
    assert out.getvalue() == "[DEBUG] informer a: stopped\n"


def test_a_failure_is_its_error_line_then_the_traceback() -> None:
    log, _, out = observed()
    log.failure("informer {name}: thread died", a_failure(), name="a")
    lines = out.getvalue().splitlines()
    assert lines[0] == "[ERROR] informer a: thread died"
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1].endswith("ValueError: the cause")
    assert not any(TAGGED.match(line) for line in lines[1:])


def test_a_legacy_error_has_its_traceback_once() -> None:
    _, old, out = observed()
    old.msg(failure=a_failure(), isError=1, why="Unhandled Error")
    text = out.getvalue()
    assert text.startswith("[ERROR] Unhandled Error\nTraceback (most recent call last):\n")
    assert text.count("Traceback") == 1 and text.count("ValueError: the cause") == 1
    assert "\n\n" not in text


def test_twisted_chatter_is_dropped_other_legacy_messages_kept() -> None:
    log, old, out = observed()
    old.msg("Starting protocol <kubernetai.core.dnsserver.DNSDatagramServerProtocol object "
            "at 0x7f0>")
    old.msg("KubernetaiServerFactory starting on 53")
    old.msg("_QuietSite starting on 8080")
    old.msg("(UDP Port 53 Closed)")
    old.msg("(TCP Port 8080 Closed)")
    old.msg("Stopping protocol <x>")
    Logger(namespace="kubernetai.core.dnsserver.KubernetaiServerFactory",
           observer=log.observer).info("Starting factory {factory!r}", factory=object())
    Logger(namespace="twisted.internet.base", observer=log.observer).info(
        "Main loop terminated.")
    old.msg("a message from some library")
    assert out.getvalue() == "[INFO] a message from some library\n"


def test_twistd_start_is_the_banner_and_sigterm_reads_as_coredns() -> None:
    log, _, out = observed(banner=(".:53", "kubernetai-1.0", "linux/amd64, python3.11.7"))
    app = Logger(namespace="twisted.scripts._twistd_unix.UnixAppLogger", observer=log.observer)
    app.info("twistd {version} ({exe} {pyVersion}) starting up.", version="1", exe="p",
             pyVersion="3")
    app.info("reactor class: {reactor}.", reactor="epoll")
    Logger(namespace="twisted.internet.base", observer=log.observer).info(
        "Received SIGTERM, shutting down.")
    app.info("Server Shut Down.")
    assert out.getvalue().splitlines() == [
        ".:53", "kubernetai-1.0", "linux/amd64, python3.11.7",
        "[INFO] SIGTERM: Shutting down servers then terminating"]


def test_printed_lines_pass_through_once_or_get_a_tag() -> None:
    """What lands in Twisted's stdout/stderr proxies: CoreDNS lines untouched, others tagged."""
    log, _, out = observed()
    for namespace, text in [
            ("stdout", '[INFO] 127.0.0.1:5353 - 1 "A IN a. udp 29 false 512" NOERROR '
                       'qr,aa,rd 45 0.0001s'),
            ("stdout", "[ERROR] plugin/errors: 2 a. A: boom"),
            ("stdout", "printed by someone"),
            ("stdout", ""),
            ("stderr", "ValueError: printed to stderr")]:
        level = LogLevel.error if namespace == "stderr" else LogLevel.info
        Logger(namespace=namespace, observer=log.observer).emit(level, "{log_io}", log_io=text)
    assert out.getvalue().splitlines() == [
        '[INFO] 127.0.0.1:5353 - 1 "A IN a. udp 29 false 512" NOERROR qr,aa,rd 45 0.0001s',
        "[ERROR] plugin/errors: 2 a. A: boom",
        "[INFO] printed by someone",
        "[ERROR] ValueError: printed to stderr"]


def test_server_lines_are_coredns_start_up_lines() -> None:
    """`ZONE:PORT`, or `ZONE:PORT on ADDR` under `bind`; zones sorted per server."""
    blocks = parse("c.example:1053 a.example:1053 {\n    whoami\n}\n"
                   "b.example:1053 {\n    whoami\n}\n"
                   ".:2053 {\n    bind 127.0.0.1 ::1\n    whoami\n}\n", "Corefile")
    assert logs.server_lines(plans_of(blocks)) == [
        "a.example.:1053", "b.example.:1053", "c.example.:1053",
        ".:2053 on 127.0.0.1", ".:2053 on ::1"]


def test_banner_names_kubernetai_and_its_platform() -> None:
    lines = logs.banner(["example.org.:53"])
    assert lines[:2] == ["example.org.:53", f"kubernetai-{kubernetai.__version__}"]
    assert RELEASE.match(lines[2]), lines[2]


def test_importing_installs_nothing() -> None:
    """An application that embeds kubernetai keeps its own logging: importing the package,
    the twistd options and this module adds no observer, handler or stream redirection."""
    code = (
        "import logging, sys\n"
        "from twisted.logger import globalLogPublisher\n"
        "before = list(globalLogPublisher._observers)\n"
        "import kubernetai.embed, kubernetai.app.tap, kubernetai.app.logs\n"
        "from kubernetai.pkg.logwriter import STDOUT\n"
        "assert list(globalLogPublisher._observers) == before\n"
        "assert logging.getLogger().handlers == []\n"
        "assert STDOUT._stream is None and sys.stdout is sys.__stdout__\n"
        "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=SOURCE)
    assert result.stdout == "ok\n", result.stderr


# -- the real twistd --------------------------------------------------------------------


def _query(port: int, name: str = "who.example.org") -> dns.message.Message:
    query = dns.message.make_query(name, "A")
    reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
    assert reply.rcode() == dns.rcode.NOERROR
    return query


def _wait_for(path: Path, text: str, process: subprocess.Popen | None = None,
              timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        seen = path.read_text() if path.exists() else ""
        if text in seen:
            return seen
        if process is not None and process.poll() is not None:
            raise AssertionError(f"twistd exited {process.returncode}:\n{seen}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} in:\n{seen}")
        time.sleep(0.1)


def _corefile(directory: Path, dns_port: int, http_port: int) -> Path:
    path = directory / "Corefile"
    path.write_text(
        "import no-such-snippets-*\n"            # a warning from the parser (stdlib logging)
        f"example.org:{dns_port} {{\n    bind 127.0.0.1\n    health 127.0.0.1:{http_port}\n"
        "    errors\n    log\n    whoami\n}\n")
    return path


def _assert_coredns_shape(lines: list[str], dns_port: int) -> None:
    """The banner once, then only tagged lines (traceback lines only after an [ERROR])."""
    banner = [f"example.org.:{dns_port} on 127.0.0.1", f"kubernetai-{kubernetai.__version__}"]
    start = lines.index(banner[0])
    assert lines[start:start + 2] == banner and RELEASE.match(lines[start + 2]), lines
    rest = lines[:start] + lines[start + 3:]
    in_error = False
    for line in rest:
        if TAGGED.match(line):
            in_error = line.startswith("[ERROR] ")
        else:
            assert in_error, f"not in CoreDNS's shape: {line!r}\n" + "\n".join(lines)
    for noise in CHATTER:
        assert not [line for line in lines if noise in line], (noise, lines)


def test_twistd_writes_only_coredns_lines(tmp_path: Path) -> None:
    """Start, a query, a reload and SIGTERM under `twistd --nodaemon`: the banner, tagged
    lines, the query's line exactly once, CoreDNS's SIGTERM line; no Twisted prefix or
    chatter."""
    dns_port, http_port = free_port(), free_port()
    corefile = _corefile(tmp_path, dns_port, http_port)
    out = tmp_path / "stdout"
    with out.open("w") as stdout, (tmp_path / "stderr").open("w") as stderr:
        process = subprocess.Popen(
            [TWISTD, "--nodaemon", "--pidfile=", "kubernetai", "--corefile", str(corefile)],
            cwd=tmp_path, stdout=stdout, stderr=stderr, env={**os.environ, "PYTHONPATH": SOURCE})
    try:
        _wait_for(out, "kubernetai: listening on UDP", process)
        query = _query(dns_port)
        _wait_for(out, f" - {query.id} ", process)
        process.send_signal(signal.SIGUSR1)
        _wait_for(out, "reloaded", process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    lines = out.read_text().splitlines()
    _assert_coredns_shape(lines, dns_port)
    logged = [line for line in lines if f" - {query.id} " in line]
    assert len(logged) == 1, lines
    assert re.fullmatch(rf'\[INFO\] 127\.0\.0\.1:\d+ - {query.id} "A IN who\.example\.org\. '
                        r'udp \d+ false \d+" NOERROR qr,aa,rd \d+ [0-9.e-]+s', logged[0])
    assert "[INFO] plugin/health: serving /health on " f"127.0.0.1:{http_port}" in lines
    assert "[INFO] SIGTERM: Shutting down servers then terminating" in lines
    warnings = [line for line in lines if "no files match import glob pattern" in line]
    assert warnings and all(line.startswith("[WARNING] ") for line in warnings), lines
    assert (tmp_path / "stderr").read_text() == ""


def test_daemon_logfile_has_the_same_shape(tmp_path: Path) -> None:
    """Daemonized with --logfile, the file gets the same lines as stdout would."""
    dns_port, http_port = free_port(), free_port()
    corefile = _corefile(tmp_path, dns_port, http_port)
    logfile, pidfile = tmp_path / "kubernetai.log", tmp_path / "twistd.pid"
    started = subprocess.run(
        [TWISTD, f"--pidfile={pidfile}", f"--logfile={logfile}", "kubernetai",
         "--corefile", str(corefile)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": SOURCE})
    assert started.returncode == 0, started.stderr
    pid = None
    try:
        _wait_for(logfile, "kubernetai: listening on UDP")
        pid = int(pidfile.read_text())
        query = _query(dns_port)
        _wait_for(logfile, f" - {query.id} ")
    finally:
        if pid is None and pidfile.exists():
            pid = int(pidfile.read_text())
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while pidfile.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
    lines = _wait_for(logfile, "[INFO] SIGTERM: ").splitlines()
    _assert_coredns_shape(lines, dns_port)
    assert len([line for line in lines if f" - {query.id} " in line]) == 1
