"""A `twistd kubernetai` process for end-to-end tests.

Started on a Corefile in the Corefile's folder (its log beside it, `twistd.log`), ready once
the Corefile's `ready` listener answers 200, stopped with SIGTERM (SIGKILL after 30 s).
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

TWISTD = str(Path(sys.executable).parent / "twistd")
ROOT = Path(__file__).resolve().parent.parent
ENV = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}


class TwistdServer:
    """The process; :class:`RuntimeError` with its log if it does not become ready."""

    def __init__(self, corefile: Path, ready: int, *, timeout: float = 90,
                 env: dict[str, str] | None = None) -> None:
        self.ready = ready
        self.log = corefile.parent / "twistd.log"
        self.process = subprocess.Popen(
            [TWISTD, "--nodaemon", "--pidfile=", "kubernetai", "--corefile", str(corefile)],
            cwd=corefile.parent, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            env=ENV if env is None else env)
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start: " + self.log.read_text())
            time.sleep(0.2)

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ready}/ready",
                                        timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
