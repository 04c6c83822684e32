"""What a container of a Fiber process looks like: command, name, labels, mounts,
limits, and the run's secret delivered as a file (never in its environment)."""

from __future__ import annotations

import io
import os
import re
import tarfile
import time
import uuid
from typing import Any, Dict, List, Optional

import docker
from docker.types import DeviceRequest, Mount

from fiber_core.config import Config
from fiber_core.hookspecs import SECRET_FILE_ENV, JobSpec
from fiber_docker import engine

RUN_LABEL = "fiber.run"
"""Label with the run id: ``docker ps --filter label=fiber.run=<id>``."""
PROCESS_LABEL = "fiber.process"
"""Label with the Fiber process name (``Process-1:2``)."""
CONTAINER_ENV = "FIBER_WORKER_DOCKER_RUN"
"""Set (to the run id) in every container fiber-docker starts: ``detect_environment``
looks for it. The ``FIBER_WORKER_`` prefix keeps it out of the configuration keys."""
SECRET_DIR = ".fiber"
SECRET_PATH = f"/{SECRET_DIR}/secret"
ENGINE_SOCKET_PREFIX = "unix://"


class ImageNotSet(engine.DockerBackendError):
    """The docker backend was chosen but no image was configured."""


def container_name(process_name: str) -> str:
    """A readable, unique container name: ``fiber-Process-1.2-<8 hex>``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", ".", process_name)[:60]
    return f"fiber-{safe}-{uuid.uuid4().hex[:8]}"


def image_of(spec: JobSpec, config: Config) -> str:
    """The image of the job, or ImageNotSet with how to set one."""
    image: Optional[str] = spec.image or config.get("image")
    if not image:
        raise ImageNotSet(
            "the docker backend needs an image to run processes in: set FIBER_IMAGE="
            "myapp:1 in the environment, `image = myapp:1` under [default] in "
            ".fiberconfig, or call fiber_core.init(image='myapp:1'); see "
            "docs/backends/docker.md for building one")
    return image


def _mounts(spec: JobSpec, config: Config, environment: Dict[str, str]) -> List[Mount]:
    mounts = [Mount(target, source, type="bind" if source.startswith("/") else "volume",
                    read_only=read_only)
              for source, target, read_only in config.docker_mounts]
    mounts += [Mount(target, source, type="bind" if source.startswith("/") else "volume")
               for source, target in spec.volumes.items()]
    if config.docker_nested:
        url = engine.engine_url()
        if url.startswith(ENGINE_SOCKET_PREFIX):
            socket = url[len(ENGINE_SOCKET_PREFIX):]
            mounts.append(Mount(socket, socket, type="bind"))
        environment["DOCKER_HOST"] = url
    return mounts


def create_args(spec: JobSpec, config: Config) -> Dict[str, Any]:
    """The arguments of ``APIClient.create_container`` for this job, with
    ``host_config`` as the arguments of ``APIClient.create_host_config``."""
    environment = {**spec.env, SECRET_FILE_ENV: SECRET_PATH, CONTAINER_ENV: spec.run_id,
                   "PYTHONUNBUFFERED": "1"}
    mounts = _mounts(spec, config, environment)
    working_dir = None
    cwd = os.getcwd()
    if config.docker_mount_cwd and cwd != "/":
        mounts.append(Mount(cwd, cwd, type="bind"))
        working_dir = cwd
    limits: Dict[str, Any] = {}
    if spec.cpu:
        limits["nano_cpus"] = int(spec.cpu * 1e9)
    if spec.memory:
        limits["mem_limit"] = spec.memory * 1024 * 1024
    if spec.gpu:
        limits["device_requests"] = [
            DeviceRequest(driver="nvidia", count=spec.gpu, capabilities=[["gpu"]])]
    return {
        "image": image_of(spec, config),
        "command": [config.docker_python, *spec.command[1:]],
        "name": container_name(spec.name),
        "environment": environment,
        "labels": {RUN_LABEL: spec.run_id, PROCESS_LABEL: spec.name},
        "working_dir": working_dir,
        "host_config": {"auto_remove": True, "init": True,
                        "network_mode": config.docker_network, "mounts": mounts, **limits},
    }


def secret_archive(secret: str, image_user: str) -> bytes:
    """A tar holding the secret as ``SECRET_PATH``, readable by the image's user only
    (or by all of the container's users when that user is not root: its uid is
    unknown here)."""
    as_root = image_user in ("", "root", "0") or image_user.startswith(("root:", "0:"))
    data = secret.encode()
    folder = tarfile.TarInfo(SECRET_DIR)
    folder.type = tarfile.DIRTYPE
    folder.mode = 0o700 if as_root else 0o755
    member = tarfile.TarInfo(SECRET_PATH.lstrip("/"))
    member.size = len(data)
    member.mode = 0o400 if as_root else 0o444
    folder.mtime = member.mtime = int(time.time())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.addfile(folder)
        archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def create(api: docker.APIClient, spec: JobSpec, config: Config) -> Dict[str, Any]:
    """Create (not start) the job's container with the secret inside; return the
    ``create_container`` answer plus its ``Name``."""
    args = create_args(spec, config)
    image_user = engine.ensure_image(api, args["image"], config.docker_pull)
    host_config = api.create_host_config(**args.pop("host_config"))
    created: Dict[str, Any] = api.create_container(host_config=host_config,
                                                   use_config_proxy=False, **args)
    try:
        api.put_archive(created["Id"], "/", secret_archive(spec.secret, image_user))
    except Exception:
        api.remove_container(created["Id"], force=True)
        raise
    return {**created, "Name": args["name"]}
