"""fiber-k8s: every Fiber process is a Kubernetes pod.

Applies by itself inside a pod (service-account token and KUBERNETES_SERVICE_HOST);
outside a cluster it is used when chosen (``FIBER_BACKEND=kubernetes``) with the
current kubeconfig context. Also adds the ``fiber run`` command (:mod:`fiber_k8s.cli`).
The kubernetes client is imported on first use, so that processes which never
start one (most workers) do not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from fiber_core.config import Config
from fiber_core.hookspecs import BackendInfo, Job, JobSpec, hookimpl
from fiber_k8s.environment import in_cluster
from fiber_k8s.errors import PodPendingError
from fiber_k8s.settings import CONFIG_KEYS

if TYPE_CHECKING:
    from fiber_k8s.backend import KubernetesBackend

PRIORITY = 100
__all__ = ["PRIORITY", "PodPendingError"]

_backend: Optional[KubernetesBackend] = None


def _state() -> KubernetesBackend:
    global _backend
    if _backend is None:
        from fiber_k8s.backend import KubernetesBackend
        _backend = KubernetesBackend()
    return _backend


@hookimpl
def backend_info() -> BackendInfo:
    return BackendInfo(priority=PRIORITY, description="one Kubernetes pod per process",
                       config_keys=CONFIG_KEYS)


@hookimpl
def detect_environment() -> bool:
    return in_cluster()


@hookimpl
def master_address(config: Config) -> str:
    return _state().master_address(config)


@hookimpl
def spawn(spec: JobSpec, config: Config) -> Job:
    return _state().spawn(spec, config)


@hookimpl
def poll(job: Job) -> Optional[int]:
    return _state().poll(job)


@hookimpl
def terminate(job: Job, force: bool) -> None:
    _state().terminate(job, force)


@hookimpl
def shutdown(run_id: str) -> None:
    if _backend is not None:
        _backend.shutdown(run_id)
