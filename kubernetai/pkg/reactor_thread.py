"""Running the Twisted reactor beside blocking code: tests, benchmarks, embedding.

Blocking clients (the official Kubernetes client, dnspython, kubectl in a subprocess) and
the sandbox or DNS server they talk to can share one process only if the reactor runs in
a thread of its own; this module starts it there once and marshals calls onto it.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread
from twisted.python import threadable

# The global reactor, as the reactor thread drives it (its interfaces are many; typed Any).
_reactor: Any = reactor

T = TypeVar("T")

_started = threading.Lock()
_thread: threading.Thread | None = None


def ensure_running() -> None:
    """Start the global reactor in a daemon thread unless it is already running."""
    global _thread
    with _started:
        if _reactor.running or _thread is not None:
            return
        ready = threading.Event()
        _reactor.callWhenRunning(ready.set)
        _thread = threading.Thread(
            target=_reactor.run,
            kwargs={"installSignalHandlers": False},
            name="reactor", daemon=True)
        _thread.start()
        if not ready.wait(30):
            raise RuntimeError("the reactor thread did not start")


def in_reactor(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call fn on the reactor thread and return its (Deferred's) result.

    Called from the reactor thread itself, or with no reactor running, it is a plain call.
    """
    if _reactor.running and not threadable.isInIOThread():
        return blockingCallFromThread(_reactor, fn, *args, **kwargs)
    return fn(*args, **kwargs)
