"""Docker images for the tests: the base image and per-test-run images.

Importable without pytest; uses only the standard library and the ``docker``
command-line client.

* :func:`docker_available` says whether a Docker engine answers.
* :func:`ensure_base_image` builds (once) the project's base image with
  ``.ci/base-image.sh``: Debian bookworm from debootstrap, Python 3.11, and a
  virtual environment at ``/opt/venv`` whose ``bin/`` is first on ``PATH``, so
  ``python3`` and ``pip`` in the image are the venv's. Nothing is pulled.
* :func:`build_test_image` builds an image FROM the base image with the given
  requirements installed into ``/opt/venv`` from local wheels only
  (``pip install --no-index --find-links /wheels``). Installing into the venv
  rather than with ``--break-system-packages`` keeps pip from trying to
  upgrade or uninstall Debian's own ``python3-*`` packages.

Both builders are content-addressed: an image is reused when its tag already
exists, which takes well under a second.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
"""The repository root (this file's parent's parent)."""

BASE_IMAGE_SCRIPT: Path = REPO_ROOT / ".ci" / "base-image.sh"
"""The script that builds the base image and prints its name last."""

VENV_IN_IMAGE = "/opt/venv"
"""Where the images' Python environment lives (its bin/ is first on PATH)."""

_DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def _docker() -> str:
    """Return the path of the ``docker`` client, or raise RuntimeError."""
    path = shutil.which("docker")
    if path is None:
        raise RuntimeError("no `docker` client on PATH")
    return path


def _tail(text: str, lines: int = 40) -> str:
    """Return the last ``lines`` lines of ``text``."""
    return "\n".join(text.strip().splitlines()[-lines:])


def _run(
    args: Sequence[str],
    *,
    timeout: float,
    env: Optional[dict] = None,
    what: str = "",
) -> subprocess.CompletedProcess:
    """Run a command capturing its output; raise RuntimeError if it fails."""
    try:
        proc = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(
            "{} timed out after {}s: {}".format(what or args[0], timeout, " ".join(args))
        ) from exc
    if proc.returncode != 0:
        raise RuntimeError(
            f"{what or args[0]} failed (exit {proc.returncode}): {' '.join(args)}\n"
            f"--- stdout (tail) ---\n{_tail(proc.stdout)}\n"
            f"--- stderr (tail) ---\n{_tail(proc.stderr)}")
    return proc


def docker_available() -> Optional[str]:
    """Return None if a Docker engine answers, else a reason string.

    The reason names the engine address that was tried: ``$DOCKER_HOST`` when
    set, else the default socket ``unix:///var/run/docker.sock``.
    """
    host = os.environ.get("DOCKER_HOST")
    where = f"DOCKER_HOST={host}" if host else f"{_DEFAULT_SOCKET} (DOCKER_HOST unset)"
    docker = shutil.which("docker")
    if docker is None:
        return f"no `docker` client on PATH (engine would be {where})"
    if not host and not os.path.exists(_DEFAULT_SOCKET[len("unix://"):]):
        return (f"no Docker engine: socket {where} does not exist "
                "(start one with .ci/docker-engine.sh)")
    try:
        proc = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except subprocess.TimeoutExpired:
        return f"Docker engine at {where} did not answer `docker info` within 15 s"
    version = proc.stdout.strip()
    if proc.returncode != 0 or not version or "<no value>" in version:
        detail = _tail(proc.stderr or proc.stdout, 3) or f"exit {proc.returncode}"
        return f"Docker engine at {where} does not answer: {detail}"
    return None


def image_exists(image: str) -> bool:
    """Return True if ``image`` (name:tag or id) exists in the local engine."""
    proc = subprocess.run(
        [_docker(), "image", "inspect", "--format", "{{.Id}}", image],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
    )
    return proc.returncode == 0


def image_id(image: str) -> str:
    """Return the id (``sha256:...``) of a local image."""
    proc = _run(
        [_docker(), "image", "inspect", "--format", "{{.Id}}", image],
        timeout=30,
        what="docker image inspect",
    )
    return proc.stdout.strip()


def ensure_base_image() -> str:
    """Build the base image if needed and return its name (``fiber-base:<hash>``).

    Runs ``.ci/base-image.sh``, which also starts the Docker engine if it is
    not running (``.ci/docker-engine.sh``). A cold build (debootstrap) takes
    about a minute; with the image present it returns in well under a second.
    """
    proc = _run(
        ["bash", str(BASE_IMAGE_SCRIPT)],
        timeout=1800,
        what=str(BASE_IMAGE_SCRIPT.relative_to(REPO_ROOT)),
    )
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"{BASE_IMAGE_SCRIPT} printed no image name")
    return lines[-1]


def _file_sha256(path: Path) -> str:
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _dockerfile(base_image: str, requirements: List[str]) -> str:
    """Return the Dockerfile text of a test image."""
    install = ["python3", "-m", "pip", "install", "--no-index", "--find-links", "/wheels",
               "--no-cache-dir", "--disable-pip-version-check", *requirements]
    # Exec form (JSON): requirement specifiers such as "pkg>=1" need no quoting.
    return f"FROM {base_image}\nCOPY wheels /wheels\nRUN {json.dumps(install)}\n"


def build_test_image(
    wheel_dir: Path,
    requirements: List[str],
    tag_prefix: str = "fiber-test",
) -> str:
    """Build (or reuse) an image with ``requirements`` installed from local wheels.

    The image is FROM the base image (:func:`ensure_base_image`). Every ``*.whl``
    in ``wheel_dir`` is copied to ``/wheels`` in the image and the requirements
    (names or specifiers, e.g. ``["fiber-core", "cloudpickle"]``) are installed
    with ``pip install --no-index --find-links /wheels`` into ``/opt/venv``:
    nothing is fetched from a network, so every dependency must have a wheel
    in ``wheel_dir``. The build runs ``docker build --network host``.

    The tag is ``<tag_prefix>:<hash>``, the hash covering the base image id,
    the wheels (sorted file names and sha256 of their bytes) and the
    requirement list; an existing image with that tag is reused.

    Returns the image name, e.g. ``fiber-test:0123456789abcdef``.
    """
    wheel_dir = Path(wheel_dir)
    if not requirements:
        raise ValueError("build_test_image needs at least one requirement")
    wheels = sorted(wheel_dir.glob("*.whl"), key=lambda p: p.name)
    if not wheels:
        raise ValueError(f"no *.whl files in {wheel_dir}")

    base = ensure_base_image()
    key = hashlib.sha256()
    key.update(b"fiber-test-image v1\n")
    key.update(image_id(base).encode() + b"\n")
    for wheel in wheels:
        key.update((f"wheel {wheel.name} {_file_sha256(wheel)}\n").encode())
    for requirement in requirements:
        key.update((f"req {requirement}\n").encode())
    digest = key.hexdigest()[:16]
    image = f"{tag_prefix}:{digest}"
    if image_exists(image):
        return image

    # Serialise builds of the same image between processes; re-check under lock.
    lock_path = Path(tempfile.gettempdir()) / (f"fiber-test-image-{digest}.lock")
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image_exists(image):
            return image
        with tempfile.TemporaryDirectory(prefix="fiber-test-image-") as ctx_name:
            ctx = Path(ctx_name)
            (ctx / "wheels").mkdir()
            for wheel in wheels:
                shutil.copyfile(str(wheel), str(ctx / "wheels" / wheel.name))
            (ctx / "Dockerfile").write_text(_dockerfile(base, requirements))
            env = dict(os.environ)
            # The classic builder: no buildx plugin is needed, and
            # `--network host` needs no BuildKit entitlement.
            env["DOCKER_BUILDKIT"] = "0"
            _run(
                [
                    _docker(), "build", "--network", "host",
                    "--label", f"org.fiber.test-image.key={digest}",
                    "-t", image, str(ctx),
                ],
                timeout=1800,
                env=env,
                what=f"docker build of {image}",
            )
    return image
