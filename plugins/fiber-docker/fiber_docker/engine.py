"""The connection to the Docker engine and the images it holds."""

from __future__ import annotations

import logging
import os
import threading
from typing import Dict

import docker
import docker.errors
from docker.utils import parse_repository_tag

logger = logging.getLogger("fiber")

DEFAULT_HOST = "unix:///var/run/docker.sock"
_clients: Dict[str, docker.APIClient] = {}
_images: Dict[str, str] = {}
"""Images known to be on the engine -> their user."""
_lock = threading.Lock()


class DockerBackendError(RuntimeError):
    """A process cannot be started in a container; the message says how to fix it."""


class EngineUnavailable(DockerBackendError):
    """No Docker engine answers at the configured address."""


class ImageUnavailable(DockerBackendError):
    """The image is not on the engine and cannot be pulled."""


def engine_url() -> str:
    """The engine address this process uses: ``$DOCKER_HOST`` or the default socket."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def _where() -> str:
    host = os.environ.get("DOCKER_HOST")
    return f"DOCKER_HOST={host}" if host else f"{DEFAULT_HOST} (DOCKER_HOST is unset)"


def client() -> docker.APIClient:
    """A client of the engine at :func:`engine_url`, connected on first use."""
    url = engine_url()
    with _lock:
        api = _clients.get(url)
        if api is None:
            try:
                api = docker.from_env(timeout=60, max_pool_size=64,
                                      environment={**os.environ, "DOCKER_HOST": url}).api
            except docker.errors.DockerException as error:
                raise EngineUnavailable(
                    f"cannot reach the Docker engine at {_where()}: {error}. Start the "
                    "engine (`sudo systemctl start docker`, or run `dockerd` in the "
                    "background) or point DOCKER_HOST at a running one; check with "
                    "`docker info`") from None
            _clients[url] = api
        return api


def ensure_image(api: docker.APIClient, image: str, policy: str) -> str:
    """Make sure the engine has ``image``, pulling it as ``policy`` says (``always``:
    once per process); return the image's user (``Config.User``)."""
    with _lock:
        if image in _images:
            return _images[image]
    if policy != "always":
        try:
            return _remember(api, image)
        except docker.errors.ImageNotFound:
            if policy == "never":
                raise ImageUnavailable(
                    f"image {image!r} is not on the Docker engine and docker_pull is "
                    f"'never': build it (docker build -t {image} .) or set FIBER_IMAGE "
                    "to an image that `docker images` lists") from None
    repository, tag = parse_repository_tag(image)
    logger.info("pulling image %s", image)
    try:
        api.pull(repository, tag=tag or "latest")
    except docker.errors.APIError as error:
        raise ImageUnavailable(
            f"image {image!r} is not on the Docker engine and cannot be pulled: "
            f"{error.explanation or error}. Build it (docker build -t {image} .), push "
            "it to a registry the engine can reach, or set FIBER_IMAGE to an image "
            "that `docker images` lists") from None
    return _remember(api, image)


def _remember(api: docker.APIClient, image: str) -> str:
    user: str = (api.inspect_image(image).get("Config") or {}).get("User") or ""
    with _lock:
        _images[image] = user
    return user
