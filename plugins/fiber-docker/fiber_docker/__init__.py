"""fiber-docker: every Fiber process is a Docker container.

One container per process, from the configured image, created with the run's
labels, given the run's secret as a file, then started with ``--init`` and
auto-removal. One ``docker events`` stream per run brings the exit codes; one
attach stream per container forwards its output to this process's stdout and
stderr. Workers exit when they lose their parent, so a killed master leaves no
container behind either.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Dict, Optional

import docker
import docker.errors

from fiber_core.config import Config
from fiber_core.hookspecs import BackendInfo, Job, JobSpec, hookimpl
from fiber_docker import containers, engine
from fiber_docker.settings import CONFIG_KEYS
from fiber_docker.watch import Exits, Output, exit_code

logger = logging.getLogger("fiber")

PRIORITY = 50
OUTPUT_WAIT = 2.0
"""Seconds to wait, once a container has exited, for the rest of its output."""


@dataclass
class Container:
    """``Job.handle`` of a started container."""

    id: str
    name: str
    output: Output
    run: _Run


@dataclass
class _Run:
    """The containers this process started in one run, and their exit codes."""

    exits: Exits
    containers: Dict[str, Container] = field(default_factory=dict)


_runs: Dict[str, _Run] = {}
_lock = threading.Lock()


@hookimpl
def backend_info() -> BackendInfo:
    return BackendInfo(priority=PRIORITY, description="one Docker container per process",
                       config_keys=CONFIG_KEYS)


@hookimpl
def detect_environment() -> bool:
    return bool(os.environ.get(containers.CONTAINER_ENV))


@hookimpl
def master_address(config: Config) -> str:
    if config.docker_network == "host":
        return "127.0.0.1"
    if detect_environment():
        return socket.gethostbyname(socket.gethostname())
    network = engine.client().inspect_network(config.docker_network)
    gateways = [entry["Gateway"] for entry in (network.get("IPAM") or {}).get("Config") or []
                if entry.get("Gateway")]
    if not gateways:
        raise engine.DockerBackendError(
            f"Docker network {config.docker_network!r} has no gateway at which its "
            "containers could reach this process; use docker_network=host")
    return str(gateways[0]).split("/")[0]


def _run(api: docker.APIClient, run_id: str) -> _Run:
    with _lock:
        run = _runs.get(run_id)
        if run is None:
            run = _runs[run_id] = _Run(Exits(api, run_id))
        return run


@hookimpl
def spawn(spec: JobSpec, config: Config) -> Job:
    api = engine.client()
    run = _run(api, spec.run_id)
    try:
        created = containers.create(api, spec, config)
    except docker.errors.APIError as error:
        raise engine.DockerBackendError(
            f"cannot create a container for {spec.name} from image "
            f"{containers.image_of(spec, config)!r}: {error.explanation or error}") from None
    container_id, name = created["Id"], created["Name"]
    run.exits.watch(container_id)
    try:
        output = Output(api, container_id)
        api.start(container_id)
    except Exception as error:
        run.exits.forget(container_id)
        _remove(api, container_id)
        if not isinstance(error, docker.errors.APIError):
            raise
        hint = (" (@meta(gpu=...) asks for NVIDIA GPUs: the engine needs them and the "
                "NVIDIA Container Toolkit)" if spec.gpu else "")
        raise engine.DockerBackendError(
            f"cannot start container {name} for {spec.name}: "
            f"{error.explanation or error}{hint}") from None
    output.start()
    container = Container(container_id, name, output, run)
    run.containers[container_id] = container
    logger.debug("started container %s for %s", name, spec.name)
    return Job(id=container_id, handle=container)


def _remove(api: docker.APIClient, container_id: str) -> None:
    try:
        api.remove_container(container_id, force=True)
    except docker.errors.APIError as error:
        logger.warning("cannot remove container %s: %s", container_id[:12], error)


@hookimpl
def poll(job: Job) -> Optional[int]:
    container: Container = job.handle
    status = container.run.exits.code(job.id)
    if status is None:
        return None
    container.output.join(OUTPUT_WAIT)
    container.run.containers.pop(job.id, None)
    return exit_code(status)


@hookimpl
def terminate(job: Job, force: bool) -> None:
    container: Container = job.handle
    try:
        container.run.exits.api.kill(job.id, signal="SIGKILL" if force else "SIGTERM")
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as error:
        if error.status_code != 409:  # 409: not running any more
            raise


@hookimpl
def job_output(job: Job) -> Optional[str]:
    container: Container = job.handle
    container.output.join(OUTPUT_WAIT)
    return container.output.last_lines() or None


@hookimpl
def shutdown(run_id: str) -> None:
    with _lock:
        run = _runs.pop(run_id, None)
    if run is None:
        return
    api = run.exits.api
    for container_id in run.exits.running():
        logger.warning("killing container %s left running at exit", container_id[:12])
        try:
            api.kill(container_id)
        except docker.errors.APIError:
            pass  # it has just ended
    for container in list(run.containers.values()):
        container.output.join(OUTPUT_WAIT)
    run.exits.close()
