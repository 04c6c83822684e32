"""Module-level task functions for the Pool and Executor contract tests."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from typing import Any, Iterator, List, Optional

import fiber_core

_initialized: Optional[Any] = None


def square(x: int) -> int:
    return x * x


def identity(x: Any) -> Any:
    return x


def add(x: int, y: int) -> int:
    return x + y


def pid(_: Any = None) -> str:
    """Which worker ran the task. Its process name, not os.getpid(): OS pids repeat
    across containers and hosts (every container's worker may be pid 7)."""
    return fiber_core.current_process().name


def sleep_then(x: Any, seconds: float = 0.05) -> Any:
    time.sleep(seconds)
    return x


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def fail_on(x: int, bad: int = 3) -> int:
    if x == bad:
        raise ValueError(f"bad value {x}")
    return x


def raise_error(message: str) -> None:
    raise KeyError(message)


def unpicklable_result(_: Any = None) -> Any:
    return threading.Lock()


def initialize(value: Any) -> None:
    global _initialized
    _initialized = value


def initialized(_: Any = None) -> Any:
    return _initialized


def kill_self_on(x: int, bad: int = 13) -> int:
    """A poison task: kills the worker that runs it."""
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.01)
    return x


@fiber_core.meta(cpu=1, memory="256M")
def sized(x: int) -> int:
    return x


def counting(drawn: List[int]) -> Iterator[int]:
    """An endless generator that records how far it was drawn."""
    n = 0
    while True:
        drawn[0] = n
        yield n
        n += 1


def dies_after_a_result(x: int, started: Any, go: Any) -> int:
    """For the test of a worker that dies holding a chunk just after sending a result:
    0 sets the job's chunk time (so workers are sent a chunk ahead); 1 says it runs,
    then waits for ``go``; 2 says it runs, then hangs (to be killed) unless ``go``
    holds a token (its retry); the others return at once."""
    if x == 0:
        time.sleep(0.05)
    elif x == 1:
        started.put(1)
        go.get(timeout=60)
        time.sleep(0.01)  # past the worker's FLUSH_SECONDS: the result goes before 2 runs
    elif x == 2:
        try:
            go.get_nowait()
        except queue.Empty:
            started.put(2)
            time.sleep(600)
    return x
