"""Log lines written to standard output (or wherever the process logs) a whole line at a time.

`log` writes a line per query to standard output. If whatever reads that output (journald,
a container runtime, a terminal) falls behind, a write on the reactor thread would block
and every query with it. So query lines go into a bounded queue that a writer thread
drains; when the queue is full, lines are dropped and counted, and the count is written
when it drains.

The server's own messages (`[INFO] ...`, `[ERROR] ...` from the Twisted log, see
kubernetai.app.logs) are few and must neither be dropped nor lost when the process exits
at once, so they are written at the moment they are logged (`write_now`). Both paths take
one lock per line, so lines from the reactor, the writer thread and informer threads never
interleave within a line.
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
        self._io = threading.RLock()
        #: Whether `[DEBUG]` lines are written: off, as in CoreDNS until its `debug` plugin
        #: turns it on (the observer of kubernetai.app.logs reads it at each event).
        self.debug = False

    def __call__(self, line: str) -> None:
        self._start()
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self.dropped += 1

    def use(self, stream: TextIO | None) -> None:
        """Write to `stream` from now on; None: to whatever `sys.stdout` is at each write.

        `twistd kubernetai` points this at the real standard output (or its --logfile)
        before Twisted replaces `sys.stdout` with a logging proxy, so query lines go out
        as they are, neither re-prefixed nor passed through the Twisted log.
        """
        with self._io:
            self._stream = stream

    def write_now(self, text: str) -> None:
        """Write `text` (one or more lines) now, flushed: for rare lines that must not be
        dropped, such as the server's own messages. Blocks while the output does."""
        with self._io:
            out = self._out()
            out.write(text + "\n")
            out.flush()

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
                with self._io:
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
        # Not past the deadline if the writer thread is stuck writing (a full pipe).
        if self._io.acquire(timeout=max(0.0, deadline - time.monotonic())):
            try:
                self._out().flush()
            finally:
                self._io.release()


STDOUT = LineWriter()
"""Standard output's writer: the `log` and `errors` plugins and, under twistd, the server's
own messages."""
