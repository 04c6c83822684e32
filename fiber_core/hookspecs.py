"""The backend contract: the hooks a fiber backend implements.

A backend is a separate distribution that registers a module (or object) in the
entry-point group ``fiber.backends``; the entry point's name is the backend's
name. The module marks its functions with :data:`hookimpl`. Every hook here is
``firstresult``: the core always calls one backend at a time, so exactly one
implementation answers.

The core starts every Fiber process the same way: it builds a :class:`JobSpec`
whose command runs ``python -m fiber_core.worker``; the backend starts that
command somewhere (a local process, a container, a pod, a Slurm job) and returns
a :class:`Job`. The worker connects back to :func:`master_address` over TCP,
proves it holds ``spec.secret`` and runs the target. The core then asks
:func:`poll` for the exit code and calls :func:`terminate` to stop a job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple

import pluggy

if TYPE_CHECKING:
    from fiber_core.config import Config

PROJECT = "fiber.backends"
"""The pluggy project name and the entry-point group of backends."""

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

SECRET_ENV = "FIBER_WORKER_SECRET"
"""The worker reads the job secret from this environment variable ..."""
SECRET_FILE_ENV = "FIBER_WORKER_SECRET_FILE"
"""... or, when that is unset, from the file this one names (for backends that
mount the secret rather than put it in the job's environment)."""


@dataclass(frozen=True)
class ConfigKey:
    """A configuration key: settable in ``.fiberconfig``, ``FIBER_<NAME>`` or ``init()``."""

    name: str
    type: Callable[[Any], Any]
    """Parses a string from a file or the environment, or checks a value given
    in code (see the types in fiber_core.config: boolean, size, ...)."""
    default: Any
    help: str


@dataclass(frozen=True)
class BackendInfo:
    """What a backend says about itself (the answer of :func:`backend_info`)."""

    priority: int
    """Order of the automatic choice: highest first. local is 0; docker 50,
    kubernetes 100. A third-party backend picks its own."""
    description: str = ""
    config_keys: Sequence[ConfigKey] = ()
    """The configuration keys this backend adds to the core's."""


@dataclass(frozen=True)
class JobSpec:
    """Everything a backend needs to start one Fiber process."""

    command: Tuple[str, ...]
    """argv: the interpreter (``sys.executable`` of the master; image-based
    backends swap in the image's interpreter) then ``-m fiber_core.worker``."""
    env: Dict[str, str]
    """Variables the worker needs (its master's address, its identity); the
    backend adds them to the job's environment."""
    secret: str
    """The run's secret. Deliver it as ``SECRET_ENV`` in the job's environment or
    as a file named by ``SECRET_FILE_ENV``; never on a command line or in a
    place other users can read."""
    name: str
    """The process name (``Process-1:2``); make the job's name from it."""
    run_id: str
    """Identifies the whole run (the master and all its descendants): label jobs
    with it so that they can be found and cleaned up."""
    image: Optional[str] = None
    cpu: Optional[float] = None
    """CPU cores from ``@meta(cpu=...)``."""
    memory: Optional[int] = None
    """MiB from ``@meta(memory=...)``."""
    gpu: Optional[int] = None
    """GPUs from ``@meta(gpu=...)``."""
    volumes: Dict[str, str] = field(default_factory=dict)
    """Source (host path, volume or claim name) -> mount path in the job."""


@dataclass
class Job:
    """A started job, as :func:`spawn` returns it; the core hands it back to the other hooks."""

    id: str
    """The backend's id for it: a PID, a container id, a pod name, a Slurm job id."""
    pid: Optional[int] = None
    """The OS process id when the master's host can see it, else None."""
    handle: Any = None
    """Anything the backend keeps for itself (a Popen, a container object)."""


@hookspec(firstresult=True)
def backend_info() -> BackendInfo:  # type: ignore[empty-body]
    """Describe this backend: its priority and its configuration keys."""


@hookspec(firstresult=True)
def detect_environment() -> bool:  # type: ignore[empty-body]
    """Say whether this backend applies here without being chosen (for example:
    are we inside a pod?). Called in priority order until one says True; must be
    cheap and must not fail when the backend's service is absent."""


@hookspec(firstresult=True)
def master_address(config: Config) -> str:  # type: ignore[empty-body]
    """Return the IP address of this host that this backend's jobs can reach it
    at; the core binds its server there. Loopback when jobs run on this host."""


@hookspec(firstresult=True)
def spawn(spec: JobSpec, config: Config) -> Job:  # type: ignore[empty-body]
    """Start ``spec.command`` as a new job and return at once with its handle.

    Raise an exception whose message says how to fix it when the job cannot be
    started (service unreachable, image missing, bad resource request)."""


@hookspec(firstresult=True)
def poll(job: Job) -> Optional[int]:
    """Return the job's exit code, or None while it runs (or has not started).

    A job killed by signal N returns -N, as ``multiprocessing`` does. Must be
    cheap: the core calls it repeatedly while it waits."""


@hookspec(firstresult=True)
def terminate(job: Job, force: bool) -> None:
    """Stop the job: SIGTERM (or the backend's graceful stop) when ``force`` is
    False, SIGKILL when True. Return at once; a job that has ended is no error."""


@hookspec(firstresult=True)
def job_output(job: Job) -> Optional[str]:
    """Optional. Return the last lines the job wrote (stdout and stderr), or None.

    The core quotes them when a job fails before connecting back (a missing
    module or a wrong interpreter in an image, say)."""


@hookspec(firstresult=True)
def shutdown(run_id: str) -> None:
    """Release what the backend holds for this run (shared secrets, clients).

    Called once, at exit of each process that used the backend, after its jobs
    have ended or been terminated."""
