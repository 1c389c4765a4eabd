"""Shared fixtures: a reactor thread, sandboxes, and clients pointed at them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from kubernetai.pkg import reactor_thread
from kubernetai.sandbox.ports import free_port as free_dns_port  # noqa: F401 - tests import it
from kubernetai.sandbox.server import Sandbox

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="session")
def reactor_running() -> None:
    """The global reactor, running in a daemon thread for the whole session."""
    reactor_thread.ensure_running()


@pytest.fixture
def sandbox(reactor_running: None) -> Iterator[Sandbox]:
    """A plain-HTTP sandbox with quick bookmarks and a short history."""
    server = Sandbox(bookmark_interval=0.3, history_size=20)
    server.start()
    yield server
    server.stop()


def client_for(server: Sandbox, directory: Path):
    """An official-client ApiClient configured the way a user would: from a kubeconfig."""
    from kubernetes import config

    path = server.write_kubeconfig(directory / "kubeconfig")
    return config.new_client_from_config(config_file=str(path))


@pytest.fixture
def kube(sandbox: Sandbox, tmp_path: Path):
    """An official-client ApiClient for the `sandbox` fixture."""
    return client_for(sandbox, tmp_path)


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll until predicate() is truthy and return its value; fail after the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


