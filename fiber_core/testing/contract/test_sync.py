"""Module-level Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event,
Barrier, Value, Array and JoinableQueue: multiprocessing's semantics, between
any Fiber processes."""

from __future__ import annotations

import queue as stdlib_queue
import threading
import time

import pytest

import fiber_core
from fiber_core.managers import ManagerLost
from fiber_core.testing.contract import shared_targets as targets


def _start(target, *args) -> fiber_core.Process:
    child = fiber_core.Process(target=target, args=args)
    child.start()
    return child


def _joined(*children: fiber_core.Process) -> list:
    for child in children:
        child.join(60)
    return [child.exitcode for child in children]


def test_value_under_its_lock_from_children_and_grandchildren() -> None:
    value = fiber_core.Value("i", 0)
    children = [_start(targets.count_up, value, 50),
                _start(targets.run_child, targets.count_up, value, 50)]
    targets.count_up(value, 50)
    assert _joined(*children) == [0, 0]
    assert value.value == 150


def test_lock_errors_and_timeouts_as_multiprocessing() -> None:
    lock = fiber_core.Lock()
    with pytest.raises(ValueError, match="released too many times"):
        lock.release()
    assert lock.acquire() and not lock.acquire(False)
    start = time.monotonic()
    assert not lock.acquire(timeout=0.3)
    assert time.monotonic() - start >= 0.25
    lock.release()
    rlock = fiber_core.RLock()
    with pytest.raises(AssertionError):
        rlock.release()
    with rlock, rlock:
        pass
    bounded = fiber_core.BoundedSemaphore(2)
    bounded.acquire()
    bounded.release()
    with pytest.raises(ValueError):
        bounded.release()
    semaphore = fiber_core.Semaphore(0)
    semaphore.release()
    assert semaphore.get_value() == 1


def test_primitives_across_processes() -> None:
    targets.check_primitives_across_processes(
        fiber_core.Lock(), fiber_core.RLock(), fiber_core.Semaphore(1), fiber_core.Event(),
        fiber_core.Barrier(2), fiber_core.Condition())


def test_condition_with_a_shared_lock() -> None:
    cond, flag, out = fiber_core.Condition(fiber_core.RLock()), fiber_core.Value("i", 0), \
        fiber_core.Queue()
    with cond:
        assert cond.wait(0.1) is False
    child = _start(targets.wait_on_condition, cond, flag, out)
    assert out.get(timeout=30) == "waiting"
    with cond:
        flag.value = 1
        cond.notify_all()
    assert out.get(timeout=30) is True
    assert _joined(child) == [0]


def test_broken_barrier() -> None:
    barrier, out = fiber_core.Barrier(3), fiber_core.Queue()
    child = _start(targets.barrier_wait, barrier, out)
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait(0.5)  # only two of three arrived
    assert out.get(timeout=30) == "broken"
    assert barrier.broken
    barrier.reset()
    assert not barrier.broken and barrier.parties == 3
    assert _joined(child) == [0]


def test_event_wait_timeout() -> None:
    event = fiber_core.Event()
    start = time.monotonic()
    assert event.wait(0.3) is False and time.monotonic() - start >= 0.25
    event.set()
    assert event.is_set() and event.wait(0)


def test_arrays() -> None:
    numbers = fiber_core.Array("d", [1.0, 2.0, 3.0])
    assert len(numbers) == 3 and numbers[1] == 2.0 and numbers[:] == [1.0, 2.0, 3.0]
    numbers[1:3] = [5.0, 6.0]
    assert list(numbers) == [1.0, 5.0, 6.0]
    zeros = fiber_core.Array("i", 4, lock=fiber_core.Lock())
    with zeros.get_lock():
        zeros[0] = 1
    assert zeros[:] == [1, 0, 0, 0]
    text = fiber_core.Array("c", b"fiber")
    assert text.value == b"fiber"
    text.value = b"ok"
    assert text.raw == b"ok\x00er"


def test_joinable_queue() -> None:
    jq, out = fiber_core.JoinableQueue(), fiber_core.Queue()
    children = [_start(targets.work_queue, jq, out) for _ in range(2)]
    for i in range(6):
        jq.put(i)
    jq.join()
    assert sorted(out.get(timeout=10) for _ in range(6)) == [0, 2, 4, 6, 8, 10]
    for _ in children:
        jq.put(None)
    jq.join()
    assert _joined(*children) == [0, 0]
    with pytest.raises(stdlib_queue.Empty):
        jq.get(timeout=0.2)
    with pytest.raises(ValueError):
        jq.task_done()
    bounded = fiber_core.JoinableQueue(1)
    bounded.put(1)
    with pytest.raises(stdlib_queue.Full):
        bounded.put(2, timeout=0.1)
    bounded.close()
    bounded.join_thread()


def test_objects_of_an_exited_creator_fail_clearly() -> None:
    out = fiber_core.Queue()
    child = _start(targets.create_and_exit, out)
    lock, value = out.get(timeout=30)
    assert value.value == 5
    assert _joined(child) == [0]
    with pytest.raises(ManagerLost, match="gone"):
        lock.acquire(timeout=1)
