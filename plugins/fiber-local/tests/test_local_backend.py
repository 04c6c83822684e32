"""What the local backend promises beyond the contract suite."""

from __future__ import annotations

import hashlib
import os
import signal
import sys

import fiber_local
from fiber_core.hookspecs import SECRET_ENV, JobSpec
from fiber_core.plugins import Registry


def spec(*command: str) -> JobSpec:
    return JobSpec(command=command, env={"EXTRA": "1"}, secret="s3cret",
                   name="Process-1", run_id="run")


def test_registered_as_the_lowest_priority_fallback() -> None:
    backend = Registry().backends["local"]
    assert backend.distribution == "fiber-local"
    assert backend.priority == 0 and backend.applies()


def test_master_address_is_loopback() -> None:
    assert fiber_local.master_address(config=None) == "127.0.0.1"


def test_spawn_passes_env_and_secret_but_not_on_the_command_line() -> None:
    expected = hashlib.sha256(b"s3cret").hexdigest()
    code = (f"import hashlib, os, sys; secret = os.environ['{SECRET_ENV}'].encode(); "
            f"sys.exit(0 if hashlib.sha256(secret).hexdigest() == '{expected}' "
            "and os.environ['EXTRA'] == '1' else 3)")
    job = fiber_local.spawn(spec=spec(sys.executable, "-c", code), config=None)
    assert job.pid == int(job.id) and job.pid != os.getpid()
    assert "s3cret" not in " ".join(job.handle.args)
    job.handle.wait(30)
    assert fiber_local.poll(job=job) == 0


def test_terminate_and_kill_report_negative_signals() -> None:
    for force, signum in ((False, signal.SIGTERM), (True, signal.SIGKILL)):
        job = fiber_local.spawn(spec=spec(sys.executable, "-c", "import time; time.sleep(30)"),
                                config=None)
        assert fiber_local.poll(job=job) is None
        fiber_local.terminate(job=job, force=force)
        job.handle.wait(30)
        assert fiber_local.poll(job=job) == -signum
        fiber_local.terminate(job=job, force=True)  # an ended job is no error
