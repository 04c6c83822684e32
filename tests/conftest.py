"""Helpers for the core tests: fake installed distributions."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Callable, Dict, Iterator

import pytest

GOOD_BACKEND = '''
from fiber_core.hookspecs import BackendInfo, ConfigKey, hookimpl

@hookimpl
def backend_info():
    return BackendInfo(priority={priority}, config_keys=[ConfigKey("flavour", str, "plain", "")])

@hookimpl
def detect_environment():
    return {applies}

@hookimpl
def master_address(config):
    return "127.0.0.1"

@hookimpl
def spawn(spec, config):
    raise RuntimeError("not for running")

@hookimpl
def poll(job):
    return 0

@hookimpl
def terminate(job, force):
    pass
'''


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Install a fake distribution: ``install(dist, {entry name: module}, {module: source})``."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(dist: str, entry_points: Dict[str, str], modules: Dict[str, str]) -> None:
        info = tmp_path / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[fiber.backends]\n{lines}")
        for module, source in modules.items():
            (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))

    yield make
    for module in [name for name in sys.modules if name.startswith("fake_")]:
        del sys.modules[module]


@pytest.fixture
def good_backend() -> Callable[..., str]:
    """The source of a complete fake backend module."""

    def source(priority: int = 10, applies: bool = True) -> str:
        return GOOD_BACKEND.format(priority=priority, applies=applies)

    return source
