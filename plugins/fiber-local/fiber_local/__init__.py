"""fiber-local: every Fiber process is a local OS process.

The fallback backend: it always applies, with the lowest priority, so that
``import fiber_core as multiprocessing`` works on a laptop with nothing chosen.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Optional

from fiber_core.config import Config
from fiber_core.hookspecs import SECRET_ENV, BackendInfo, Job, JobSpec, hookimpl

PRIORITY = 0


@hookimpl
def backend_info() -> BackendInfo:
    return BackendInfo(priority=PRIORITY, description="local processes on this machine")


@hookimpl
def detect_environment() -> bool:
    return True


@hookimpl
def master_address(config: Config) -> str:
    return "127.0.0.1"


@hookimpl
def spawn(spec: JobSpec, config: Config) -> Job:
    env = {**os.environ, **spec.env, SECRET_ENV: spec.secret}
    process = subprocess.Popen(spec.command, env=env, stdin=subprocess.DEVNULL)
    return Job(id=str(process.pid), pid=process.pid, handle=process)


@hookimpl
def poll(job: Job) -> Optional[int]:
    code: Optional[int] = job.handle.poll()
    return code


@hookimpl
def terminate(job: Job, force: bool) -> None:
    process: subprocess.Popen = job.handle
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGKILL if force else signal.SIGTERM)
        except ProcessLookupError:
            pass
