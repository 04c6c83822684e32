"""Process, current_process, parent_process, active_children: as multiprocessing."""

from __future__ import annotations

import os
import pickle
import signal
import threading

import pytest

import fiber_core
from fiber_core.testing.contract import targets


def run(target, *args, **kwargs) -> fiber_core.Process:
    process = fiber_core.Process(target=target, args=args, kwargs=kwargs)
    process.start()
    process.join(60)
    return process


def test_target_runs_with_args_and_kwargs() -> None:
    queue = fiber_core.SimpleQueue()
    process = run(targets.put, queue, value=[1, "two", {3: 4.0}])
    assert queue.get() == [1, "two", {3: 4.0}]
    assert process.exitcode == 0


def test_lifecycle_attributes() -> None:
    process = fiber_core.Process(target=targets.sleep, args=(0.5,), name="sleeper")
    assert process.exitcode is None and process.pid is None and not process.is_alive()
    assert "initial" in repr(process)
    process.start()
    assert process.is_alive()
    assert process in fiber_core.active_children()
    assert process.name == "sleeper" and "started" in repr(process)
    process.join()
    assert not process.is_alive()
    assert process.exitcode == 0
    assert process not in fiber_core.active_children()
    assert "stopped" in repr(process) and "exitcode=0" in repr(process)
    process.close()
    with pytest.raises(ValueError, match="closed"):
        process.is_alive()


def test_join_timeout_returns_while_running() -> None:
    process = fiber_core.Process(target=targets.sleep, args=(30,))
    process.start()
    process.join(0.2)
    assert process.is_alive() and process.exitcode is None
    process.kill()
    process.join(30)
    assert process.exitcode == -signal.SIGKILL


def test_start_twice_and_join_unstarted_fail() -> None:
    process = fiber_core.Process(target=targets.sleep, args=(0,))
    with pytest.raises(AssertionError, match="started"):
        process.join()
    process.start()
    with pytest.raises(AssertionError, match="twice"):
        process.start()
    process.join()


def test_close_while_running_fails() -> None:
    process = fiber_core.Process(target=targets.sleep, args=(30,))
    process.start()
    with pytest.raises(ValueError, match="still running"):
        process.close()
    process.terminate()
    process.join(30)
    process.close()


@pytest.mark.parametrize("code, expected", [(0, 0), (None, 0), (3, 3), ("message", 1)])
def test_exit_codes_of_sys_exit(code: object, expected: int) -> None:
    assert run(targets.exit_with, code).exitcode == expected


def test_exception_gives_exit_code_1() -> None:
    assert run(targets.raise_error, "boom").exitcode == 1


def test_terminate_and_kill_give_negative_signal() -> None:
    for method, signum in (("terminate", signal.SIGTERM), ("kill", signal.SIGKILL)):
        process = fiber_core.Process(target=targets.sleep, args=(30,))
        process.start()
        getattr(process, method)()
        process.join(30)
        assert process.exitcode == -signum


def test_death_by_signal_inside_target() -> None:
    assert run(targets.kill_self, signal.SIGKILL).exitcode == -signal.SIGKILL


def test_names_identity_and_parent() -> None:
    queue = fiber_core.SimpleQueue()
    process = run(targets.put_identity, queue)
    name, pid_matches, parent = queue.get()
    assert name == process.name
    assert pid_matches
    assert parent == "MainProcess"
    assert fiber_core.current_process().name == "MainProcess"
    assert fiber_core.parent_process() is None


def test_default_names_count_up() -> None:
    first = fiber_core.Process(target=targets.sleep, args=(0,))
    second = fiber_core.Process(target=targets.sleep, args=(0,))
    number = int(first.name.split("-")[1])
    assert first.name.startswith("Process-")
    assert second.name == f"Process-{number + 1}"


def test_subclass_with_run_override() -> None:
    queue = fiber_core.SimpleQueue()

    class Worker(fiber_core.Process):
        def __init__(self, queue):
            super().__init__()
            self.queue = queue

        def run(self):
            self.queue.put(("ran", self.name))

    worker = Worker(queue)
    worker.start()
    worker.join(60)
    assert queue.get() == ("ran", worker.name)
    assert worker.name.startswith("Worker-")


def test_lambdas_and_closures_work() -> None:
    queue = fiber_core.SimpleQueue()
    offset = 40
    run(lambda q: q.put(offset + 2), queue)
    assert queue.get() == 42


def test_nested_children() -> None:
    queue = fiber_core.SimpleQueue()
    process = run(targets.start_child, queue, targets.put_identity, queue)
    name, pid_matches, parent = queue.get()
    assert name == process.name + ":1" and pid_matches and parent == process.name
    assert queue.get() == 0
    assert process.exitcode == 0


def test_unpicklable_target_fails_in_start() -> None:
    lock = threading.Lock()
    process = fiber_core.Process(target=targets.put, args=(lock, 1))
    with pytest.raises(pickle.PicklingError, match="cannot send"):
        process.start()
    assert process not in fiber_core.active_children()


def test_daemon_flag_is_inherited_and_settable() -> None:
    process = fiber_core.Process(target=targets.sleep, args=(0,), daemon=True)
    assert process.daemon
    process.daemon = False
    process.start()
    with pytest.raises(AssertionError):
        process.daemon = True
    process.join()


def test_meta_hints_reach_the_job_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    runtime = fiber_core.context.runtime()
    original = runtime.backend.hook.spawn

    def spy(spec, config):
        seen.append(spec)
        return original(spec=spec, config=config)

    monkeypatch.setattr(runtime.backend.hook, "spawn", spy)

    @fiber_core.meta(cpu=2, memory="1G", gpu=0)
    def hinted() -> None:
        pass

    run(hinted)
    assert (seen[0].cpu, seen[0].memory, seen[0].gpu) == (2.0, 1024, 0)
    assert seen[0].secret not in " ".join(seen[0].command)


def test_meta_rejects_unknown_and_bad_hints() -> None:
    with pytest.raises(TypeError, match="unknown resource hint.*gpus.*valid hints: cpu"):
        fiber_core.meta(gpus=1)
    with pytest.raises(ValueError, match="memory"):
        fiber_core.meta(memory="lots")


def test_cpu_count() -> None:
    assert fiber_core.cpu_count() == os.cpu_count()


def test_children_inherit_backend_and_config(backend: str) -> None:
    from fiber_core import context

    previous = context.runtime().config.log_level
    fiber_core.init(log_level="ERROR")
    try:
        queue = fiber_core.SimpleQueue()
        run(targets.start_child, queue, targets.put_config, queue)
        assert queue.get() == (backend, "ERROR", context.runtime().run_id)
        assert queue.get() == 0
    finally:
        fiber_core.init(log_level=previous)
