"""fiber-core: the ``multiprocessing`` API, run on any installed backend.

    import fiber_core as multiprocessing

works where ``import multiprocessing`` did; ``FIBER_BACKEND``, ``.fiberconfig`` or
:func:`init` choose where the processes run.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import Optional

from fiber_core.config import ConfigError
from fiber_core.connection import Connection, Pipe
from fiber_core.context import current_config, init
from fiber_core.managers import AsyncManager, Manager
from fiber_core.meta import meta
from fiber_core.plugins import BackendError
from fiber_core.pool import Pool, TimeoutError, WorkerLostError
from fiber_core.process import (
    Process,
    active_children,
    current_process,
    parent_process,
)
from fiber_core.queues import Queue, SimpleQueue
from fiber_core.ring import Ring
from fiber_core.sharedstate import (
    Array,
    Barrier,
    BoundedSemaphore,
    Condition,
    Event,
    JoinableQueue,
    Lock,
    RLock,
    Semaphore,
    Value,
)

__version__ = "0.1.0"

__all__ = [
    "Array", "AsyncManager", "BackendError", "Barrier", "BoundedSemaphore", "Condition",
    "ConfigError", "Connection", "Event", "JoinableQueue", "Lock", "Manager", "Pipe", "Pool",
    "Process", "Queue", "RLock", "Ring", "Semaphore", "SimpleQueue", "TimeoutError", "Value",
    "WorkerLostError", "active_children", "cpu_count",
    "current_config", "current_process", "freeze_support", "get_context", "get_start_method",
    "init", "meta", "parent_process", "set_start_method",
]


def cpu_count() -> int:
    """The number of CPUs of this machine (as ``multiprocessing.cpu_count``)."""
    count = os.cpu_count()
    if count is None:
        raise NotImplementedError("cannot determine number of cpus")
    return count


def freeze_support() -> None:
    """Accepted for compatibility; nothing to do."""


def get_start_method(allow_none: bool = False) -> str:
    """Fiber has one start method: the backend's."""
    return "fiber"


def set_start_method(method: Optional[str], force: bool = False) -> None:
    """Accepted for compatibility: Fiber always starts fresh interpreters, as 'spawn' does."""


def get_context(method: Optional[str] = None) -> ModuleType:
    """This module, which offers what a ``multiprocessing`` context does."""
    return sys.modules[__name__]
