"""Docker tests: build the test image once and point FIBER_IMAGE at it.

``pytest_configure`` builds wheels of fiber-core, fiber-local and fiber-docker
here, gets their dependencies' wheels (cached in ``~/.cache/fiber-ci/wheels``,
so later runs need no network), and builds an image FROM the project's base
image (``tests/docker_images.py``, cached by content hash). Without a Docker
engine every docker test skips with the reason; under CI (``$CI`` set) that is
an error instead.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests"))

import docker_images  # noqa: E402

DISTRIBUTIONS = (REPO, REPO / "plugins" / "fiber-local", REPO / "plugins" / "fiber-docker")
EXTRA_REQUIREMENTS = ("numpy", "pytest")
"""Installed in the image too: the contract suite uses numpy, and its test modules
(importable in the image, pickled by reference) import pytest."""
WHEEL_CACHE = Path(os.environ.get("FIBER_WHEEL_CACHE",
                                  Path.home() / ".cache" / "fiber-ci" / "wheels"))
IMAGE_PYTHON = (3, 11)
"""The Python of the base image (Debian bookworm)."""

_skip_reason: Optional[str] = None


def _pip(*args: str) -> None:
    """Run pip quietly; reproducible wheel timestamps keep the image's hash stable."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True, text=True, env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"})
    if done.returncode:
        raise RuntimeError(f"pip {' '.join(args)} failed:\n{done.stdout[-3000:]}"
                           f"{done.stderr[-3000:]}")


def _requirements(wheel: Path) -> List[str]:
    """The unconditional Requires-Dist of a wheel, except fiber's own distributions."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(name).decode())
    return [req for req in metadata.get_all("Requires-Dist") or []
            if ";" not in req and not req.lower().startswith("fiber-")]


def _dependency_wheels(requirements: List[str]) -> None:
    """Make sure WHEEL_CACHE holds wheels of ``requirements`` and their dependencies."""
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    download = ["download", "--only-binary=:all:", "-d", str(WHEEL_CACHE), *requirements]
    try:
        _pip(*download, "--no-index", "--find-links", str(WHEEL_CACHE))
    except RuntimeError:
        _pip(*download)


def build_image() -> str:
    """Build (or reuse) the test image and return its name."""
    with tempfile.TemporaryDirectory(prefix="fiber-docker-wheels-") as folder:
        wheels = Path(folder)
        _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
             *map(str, DISTRIBUTIONS))
        requirements = sorted({req for wheel in wheels.glob("*.whl")
                               for req in _requirements(wheel)} | set(EXTRA_REQUIREMENTS))
        _dependency_wheels(requirements)
        for wheel in WHEEL_CACHE.glob("*.whl"):
            shutil.copyfile(wheel, wheels / wheel.name)
        names = ["fiber-core", "fiber-local", "fiber-docker", *EXTRA_REQUIREMENTS]
        return docker_images.build_test_image(wheels, names, tag_prefix="fiber-docker-test")


def pytest_configure(config: pytest.Config) -> None:
    global _skip_reason
    _skip_reason = docker_images.docker_available()
    if _skip_reason is None and sys.version_info[:2] != IMAGE_PYTHON:
        _skip_reason = (f"the test image runs Python {'.'.join(map(str, IMAGE_PYTHON))}, "
                        f"this is {sys.version_info.major}.{sys.version_info.minor}")
    if _skip_reason is not None:
        if os.environ.get("CI"):
            raise pytest.UsageError(f"docker tests cannot run under CI: {_skip_reason}")
        return
    os.environ["FIBER_IMAGE"] = build_image()


def pytest_report_header(config: pytest.Config) -> str:
    if _skip_reason is not None:
        return f"fiber-docker: tests skipped: {_skip_reason}"
    return f"fiber-docker: test image {os.environ['FIBER_IMAGE']}"


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    if _skip_reason is None:
        return
    skip = pytest.mark.skip(reason=f"no usable Docker engine: {_skip_reason}")
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("backend") == "docker" or "docker_engine" in getattr(
                item, "fixturenames", ()):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The test image's name; tests that use this fixture need a Docker engine."""
    return os.environ["FIBER_IMAGE"]
