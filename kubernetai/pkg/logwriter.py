"""Query and error log lines written from a thread of their own.

`log` writes a line per query to standard output. If whatever reads that output (journald,
a container runtime, a terminal) falls behind, a write on the reactor thread would block
and every query with it. So lines go into a bounded queue that a writer thread drains; when
the queue is full, lines are dropped and counted, and the count is written when it drains.
"""

from __future__ import annotations

import atexit
import queue
import sys
import threading
import time
from typing import TextIO


class LineWriter:
    """Non-blocking `write(line)` for the reactor thread; one writer thread per stream."""

    def __init__(self, stream: TextIO | None = None, capacity: int = 10_000) -> None:
        self._stream = stream
        self._queue: queue.Queue[str] = queue.Queue(capacity)
        self.dropped = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        self._start()
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self.dropped += 1

    def _start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="log-writer",
                                                    daemon=True)
                    self._thread.start()
                    atexit.register(self.flush)

    def _out(self) -> TextIO:
        return self._stream or sys.stdout

    def _run(self) -> None:
        while True:
            line = self._queue.get()
            try:
                self._write(line)
                if self._queue.empty():
                    self._out().flush()
            finally:
                self._queue.task_done()

    def _write(self, line: str) -> None:
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            self._out().write(f"[WARNING] {dropped} log line(s) dropped: output too slow\n")
        self._out().write(line + "\n")

    def flush(self, timeout: float = 5.0) -> None:
        """Wait (up to `timeout`) until every queued line is written: at exit, and in tests."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.001)
        self._out().flush()


STDOUT = LineWriter()
