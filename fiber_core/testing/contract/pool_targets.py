"""Module-level task functions for the Pool and Executor contract tests."""

from __future__ import annotations

import os
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


def pid(_: Any = None) -> int:
    return os.getpid()


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
