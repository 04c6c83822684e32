"""Module-level targets for the shared-state, manager and ring tests."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any, Callable

import fiber_core
from fiber_core.managers import AsyncManager, BaseManager


def run_child(target: Callable[..., Any], *args: Any) -> None:
    """Start ``target(*args)`` in a child of this process and fail if it fails
    (so a grandchild does the work)."""
    child = fiber_core.Process(target=target, args=args)
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"grandchild failed with exit code {child.exitcode}")


def fill_containers(d: Any, lst: Any, ns: Any, q: Any, value: Any, array: Any) -> None:
    """Use a manager's dict, list, Namespace, Queue, Value and Array."""
    name = fiber_core.current_process().name
    d[name] = len(name)
    lst.append(name)
    ns.last = name
    q.put(name)
    value.value += 1  # the test runs one process at a time
    array[0] = array[0] + 1
    assert sorted(k for k in d) == sorted(d.keys())  # iteration: a proxy returned


def count_up(value: Any, times: int) -> None:
    """Increment a shared value under its lock."""
    for _ in range(times):
        with value.get_lock():
            value.value += 1


def use_primitives(lock: Any, rlock: Any, semaphore: Any, event: Any, barrier: Any,
                   cond: Any, out: Any) -> None:
    """Exercise each primitive from another process and report what it saw."""
    with rlock:
        with rlock:
            out.put("rlock")
    assert lock.acquire(timeout=30)
    out.put("locked")
    event.wait(30)
    lock.release()
    semaphore.acquire()
    out.put(("index", barrier.wait(30)))
    with cond:
        cond.notify_all()


def check_primitives_across_processes(lock: Any, rlock: Any, semaphore: Any, event: Any,
                                      barrier: Any, cond: Any) -> None:
    """Run :func:`use_primitives` in a child and check each step from here."""
    out = fiber_core.Queue()
    child = fiber_core.Process(target=use_primitives, args=(
        lock, rlock, semaphore, event, barrier, cond, out))
    child.start()
    assert out.get(timeout=30) == "rlock" and out.get(timeout=30) == "locked"
    assert not lock.acquire(timeout=0.1)  # the child holds it
    event.set()
    assert lock.acquire(timeout=30)
    assert barrier.wait(30) in (0, 1)
    assert out.get(timeout=30)[0] == "index"
    assert not semaphore.acquire(timeout=0.1)  # the child took the only one
    child.join(30)
    assert child.exitcode == 0


def wait_on_condition(cond: Any, flag: Any, out: Any) -> None:
    with cond:
        out.put("waiting")
        out.put(cond.wait_for(lambda: flag.value == 1, 30))


def barrier_wait(barrier: Any, out: Any) -> None:
    try:
        barrier.wait(30)
        out.put("passed")
    except threading.BrokenBarrierError:
        out.put("broken")


def work_queue(jq: Any, out: Any) -> None:
    """Consume a joinable queue until None, acknowledging each item."""
    while True:
        item = jq.get(timeout=30)
        jq.task_done()
        if item is None:
            return
        out.put(item * 2)


def block_on(getter: Callable[[], Any], out: Any) -> None:
    """Report what happens to a call blocked when its manager goes away."""
    out.put("blocking")
    try:
        getter()
        out.put("returned")
    except Exception as error:
        out.put(type(error).__name__)


def create_and_exit(out: Any) -> None:
    """Create shared objects in this process, hand them out, then exit."""
    objects = (fiber_core.Lock(), fiber_core.Value("i", 5))
    out.put(objects)
    time.sleep(0.5)  # hold them until the receiver holds its own references


class Counter:
    """A user type for BaseManager.register."""

    def __init__(self, start: int = 0) -> None:
        self.n = start

    def add(self, k: int) -> int:
        self.n += k
        return self.n

    def get(self) -> int:
        return self.n

    def slow_step(self, seconds: float) -> int:
        time.sleep(seconds)
        self.n += 1
        return self.n


class CounterManager(BaseManager):
    """A manager with a user type."""


CounterManager.register("Counter", Counter)


class AsyncCounterManager(AsyncManager):
    """An async manager with a user type."""


AsyncCounterManager.register("Counter", Counter)


def add_to(counter: Any, k: int) -> None:
    counter.add(k)


def member_info(member: Any) -> Any:
    return (member.rank, member.size, member.address, member.port,
            os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["MASTER_PORT"])


def die_at_rank(member: Any, rank: int) -> None:
    """Rank ``rank`` dies by SIGKILL; the others would wait for ever."""
    if member.rank == rank:
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(120)


def raise_at_rank(member: Any, rank: int) -> int:
    if member.rank == rank:
        raise ValueError(f"rank {rank} refuses")
    time.sleep(120)
    return member.rank


def gloo_setup(member: Any) -> None:
    """Join the torch.distributed gloo group of the ring (on loopback, say so)."""
    import torch.distributed as dist

    from fiber_core import transport

    if transport.is_loopback(member.address):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=member.init_method, rank=member.rank,
                            world_size=member.size)


def all_reduce(member: Any) -> Any:
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([float(member.rank + 1)] * 3)
    dist.all_reduce(tensor)
    dist.destroy_process_group()
    return tensor.tolist()
