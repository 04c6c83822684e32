"""Ring: N Fiber processes ranked 0..N-1 that can find each other.

Collective libraries (``torch.distributed`` with gloo, for example) need every
member to know its rank, the world size and an address where rank 0 listens.
A :class:`Ring` starts the N ranks on the selected backend; rank 0 picks a free
port on its host and hands ``(host, port)`` to the others through a queue of
the master; each rank then calls ``initializer(member, *initargs)`` and
``target(member, *args, **kwargs)`` with its :class:`RingMember`, whose fields
are also in the environment as ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT`` (what ``torch.distributed.init_process_group()`` reads).

The master watches the ranks: when one dies or its target raises, it stops the
others (which may be blocked in a collective that would never complete) and
:meth:`Ring.join` raises :class:`RingError` naming the rank and the cause.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from fiber_core.managers import server_host
from fiber_core.process import Process
from fiber_core.queues import Queue

logger = logging.getLogger("fiber")

_WATCH_INTERVAL = 0.05
_STOP_TIMEOUT = 5.0


class RingError(RuntimeError):
    """A rank of a ring died or failed; the other ranks were stopped."""


@dataclass(frozen=True)
class RingMember:
    """What a rank knows of its ring."""

    rank: int
    size: int
    address: str
    """The host of rank 0, reachable by every rank."""
    port: int
    """A free port on rank 0's host, for the collective library's rendezvous."""

    @property
    def init_method(self) -> str:
        """``tcp://ADDRESS:PORT``, as ``torch.distributed.init_process_group`` takes it."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"tcp://{host}:{self.port}"


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _rank_main(rank: int, size: int, rendezvous: Queue, results: Queue,
               target: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any],
               initializer: Optional[Callable[..., Any]], initargs: Sequence[Any]) -> None:
    """The body of every rank."""
    try:
        if rank == 0:
            host = server_host()
            address = (host, _free_port(host))
            for _ in range(size - 1):
                rendezvous.put(address)
        else:
            address = rendezvous.get()
        member = RingMember(rank, size, *address)
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(size),
                          MASTER_ADDR=member.address, MASTER_PORT=str(member.port))
        if initializer is not None:
            initializer(member, *initargs)
        results.put((rank, True, target(member, *args, **kwargs)))
    except BaseException as error:
        results.put((rank, False, f"{type(error).__name__}: {error}\n"
                                  f"{traceback.format_exc()}"))
        raise


class Ring:
    """``processes`` ranks each running ``target(member, *args, **kwargs)`` after
    ``initializer(member, *initargs)``; :meth:`run` returns their results by rank."""

    def __init__(self, processes: int, target: Callable[..., Any], args: Sequence[Any] = (),
                 kwargs: Optional[Mapping[str, Any]] = None,
                 initializer: Optional[Callable[..., Any]] = None,
                 initargs: Sequence[Any] = ()) -> None:
        if processes < 1:
            raise ValueError("a ring needs at least one process")
        self.size = processes
        self._results: Queue = Queue()
        rendezvous: Queue = Queue()
        self.processes = [
            Process(target=_rank_main, name=f"Ring-rank-{rank}", args=(
                rank, processes, rendezvous, self._results, target, tuple(args),
                dict(kwargs or {}), initializer, tuple(initargs)))
            for rank in range(processes)]
        self._outcomes: Dict[int, Tuple[bool, Any]] = {}
        self._started = False

    def start(self) -> None:
        """Start every rank."""
        self._started = True
        for process in self.processes:
            process.start()

    def join(self, timeout: Optional[float] = None) -> List[Any]:
        """Wait for every rank's result; RingError as soon as one fails (the
        others are then stopped), TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self._outcomes) < self.size:
            try:
                rank, ok, value = self._results.get(timeout=_WATCH_INTERVAL)
                self._outcomes[rank] = (ok, value)
                if not ok:
                    self._fail(f"rank {rank} of {self.size} failed:\n{value}")
            except queue.Empty:
                self._check_alive()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the ring did not finish in {timeout} s")
        for process in self.processes:
            process.join()
        return [self._outcomes[rank][1] for rank in range(self.size)]

    def run(self, timeout: Optional[float] = None) -> List[Any]:
        """Start the ranks and return their results (as :meth:`join`)."""
        self.start()
        return self.join(timeout)

    def _check_alive(self) -> None:
        for rank, process in enumerate(self.processes):
            code = process.exitcode
            if code is not None and rank not in self._outcomes:
                try:  # its result may have been sent just before it exited
                    rank, ok, value = self._results.get(timeout=_WATCH_INTERVAL)
                    self._outcomes[rank] = (ok, value)
                    return
                except queue.Empty:
                    self._fail(f"rank {rank} of {self.size} died (exit code {code}) "
                               "before returning")

    def _fail(self, message: str) -> None:
        logger.error("ring: %s; stopping the other ranks", message.splitlines()[0])
        self.terminate()
        raise RingError(f"{message}\nthe other ranks were stopped")

    def terminate(self) -> None:
        """Stop every rank that still runs (SIGTERM, then SIGKILL), and wait for it."""
        if not self._started:
            return
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.join(_STOP_TIMEOUT)
            if process.exitcode is None:
                process.kill()
                process.join()

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.terminate()
