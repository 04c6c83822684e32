"""Module-level targets for the contract suite (importable wherever fiber-core is)."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import fiber_core


def put(queue: Any, value: Any) -> None:
    queue.put(value)


def put_identity(queue: Any) -> None:
    me = fiber_core.current_process()
    parent = fiber_core.parent_process()
    queue.put((me.name, me.pid == os.getpid(), parent.name if parent else None))


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def exit_with(code: Any) -> None:
    sys.exit(code)


def raise_error(message: str) -> None:
    raise ValueError(message)


def kill_self(signum: int = signal.SIGKILL) -> None:
    os.kill(os.getpid(), signum)


def echo_pipe(conn: Any) -> None:
    """Answer each object received with (object, 'echo') until EOF."""
    try:
        while True:
            conn.send((conn.recv(), "echo"))
    except EOFError:
        pass


def start_child(queue: Any, target: Any, *args: Any) -> None:
    """Start a grandchild running ``target(*args)`` and report its exit code."""
    child = fiber_core.Process(target=target, args=args)
    child.start()
    child.join()
    queue.put(child.exitcode)


def put_config(queue: Any) -> None:
    """Report the backend and configuration this process inherited."""
    from fiber_core import context

    runtime = context.runtime()
    queue.put((runtime.backend.name, runtime.config.log_level, runtime.run_id))
