"""Fixtures for the tests kept in the plugin folders (a plugin's tests beside its code)."""

from __future__ import annotations

from typing import Callable

import pytest

from kubernetai.sandbox.ports import free_port as _free_port


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    return _free_port
