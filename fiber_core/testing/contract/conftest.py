"""Fixtures of the contract suite: which backend (``--fiber-backend``, declared in
fiber_core.testing.pytest_plugin), and no process left behind."""

from __future__ import annotations

import os
import time
from typing import Iterator, List

import pytest

import fiber_core
from fiber_core import context


def _backends(config: pytest.Config) -> List[str]:
    chosen: List[str] = config.getoption("--fiber-backend")
    return chosen or [os.environ.get("FIBER_TEST_BACKEND", "local")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", _backends(metafunc.config), scope="session")


@pytest.fixture(autouse=True)
def _use_backend(backend: str) -> Iterator[str]:
    """Run the test on ``backend``; afterwards, fail if it left a child running."""
    fiber_core.init(backend=backend)
    yield backend
    leftovers = fiber_core.active_children()
    deadline = time.monotonic() + 10
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.05)
        leftovers = fiber_core.active_children()
    for child in leftovers:
        child.kill()
        child.join(10)
    assert not leftovers, f"the test left processes running: {leftovers}"
    runtime = context.existing()
    assert runtime is None or runtime.backend.name == backend
