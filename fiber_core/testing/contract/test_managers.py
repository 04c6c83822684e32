"""Managers: SyncManager types, user types, AsyncManager, from any Fiber process."""

from __future__ import annotations

import queue as stdlib_queue
import threading
import time
from multiprocessing import AuthenticationError, connection, managers

import pytest

import fiber_core
from fiber_core.managers import AsyncManager, ManagerLost, Reply, SyncManager
from fiber_core.testing.contract import shared_targets as targets


def _run(target, *args) -> None:
    child = fiber_core.Process(target=target, args=args)
    child.start()
    child.join(60)
    assert child.exitcode == 0


def test_containers_from_children_and_grandchildren() -> None:
    with fiber_core.Manager() as manager:
        assert isinstance(manager, managers.SyncManager)
        d, lst, ns, q = manager.dict(), manager.list(), manager.Namespace(), manager.Queue()
        value, array = manager.Value("i", 0), manager.Array("i", [0, 0])
        args = (d, lst, ns, q, value, array)
        _run(targets.fill_containers, *args)
        _run(targets.run_child, targets.fill_containers, *args)
        names = [q.get(timeout=10) for _ in range(2)]
        assert names == list(lst) and len(names[1]) > len(names[0])
        assert dict(d) == {name: len(name) for name in names}
        assert ns.last == names[1]
        assert value.value == 2 and list(array) == [2, 0]


def test_registered_user_type_in_children() -> None:
    with targets.CounterManager() as manager:
        counter = manager.Counter(5)
        _run(targets.add_to, counter, 10)
        _run(targets.run_child, targets.add_to, counter, 100)
        assert counter.get() == 115


def test_primitives_timeouts_and_errors() -> None:
    with fiber_core.Manager() as manager:
        lock = manager.Lock()
        with pytest.raises(RuntimeError):  # as multiprocessing's managers (threading.Lock)
            lock.release()
        assert lock.acquire(timeout=0.1) and not lock.acquire(timeout=0.2)
        semaphore = manager.BoundedSemaphore(1)
        with pytest.raises(ValueError):
            semaphore.release()
        event = manager.Event()
        start = time.monotonic()
        assert event.wait(0.3) is False and time.monotonic() - start >= 0.25
        barrier = manager.Barrier(2, timeout=0.2)
        with pytest.raises(threading.BrokenBarrierError):
            barrier.wait()
        with pytest.raises(threading.BrokenBarrierError):
            barrier.wait()
        jq = manager.JoinableQueue()
        with pytest.raises(stdlib_queue.Empty):
            jq.get(timeout=0.2)
        jq.put(1)
        jq.get()
        jq.task_done()
        jq.join()
        cond = manager.Condition()
        with cond:
            assert cond.wait(0.1) is False


def test_primitives_across_processes() -> None:
    with fiber_core.Manager() as manager:
        targets.check_primitives_across_processes(
            manager.Lock(), manager.RLock(), manager.Semaphore(1), manager.Event(),
            manager.Barrier(2), manager.Condition())


def test_shutdown_while_a_proxy_is_in_use() -> None:
    manager = fiber_core.Manager()
    q = manager.Queue()
    out = fiber_core.Queue()
    child = fiber_core.Process(target=targets.block_on, args=(q.get, out))
    child.start()
    assert out.get(timeout=30) == "blocking"
    time.sleep(0.2)
    manager.shutdown()
    assert out.get(timeout=30) == "ManagerLost"
    child.join(30)
    with pytest.raises(ManagerLost, match="gone"):
        q.put(1)


def test_strangers_are_refused() -> None:
    with fiber_core.Manager() as manager:
        address = manager.address
        with pytest.raises(AuthenticationError):
            connection.Client(address, authkey=b"not the run's secret")


def test_pool_is_not_hosted() -> None:
    with fiber_core.Manager() as manager, pytest.raises(NotImplementedError, match="Pool"):
        manager.Pool(2)


def test_async_manager_returns_replies() -> None:
    with AsyncManager() as manager:
        d = manager.dict()
        reply = d.update({"a": 1})
        assert isinstance(reply, Reply)
        assert reply.get() is None
        replies = [d.get("a"), d.setdefault("b", 2), d.get("b")]
        assert [r.get() for r in reversed(replies)] == [2, 2, 1]  # any order of get()
        assert d["a"] == 1 and len(d) == 2  # special methods wait
        lock = manager.Lock()
        with lock:
            assert not lock.acquire(False).get()
        q = manager.Queue()
        with pytest.raises(stdlib_queue.Empty):
            q.get(timeout=0.1).get(timeout=10)


def test_async_managers_step_in_parallel() -> None:
    started = [targets.AsyncCounterManager() for _ in range(3)]
    for manager in started:
        manager.start()
    try:
        counters = [manager.Counter() for manager in started]
        _run(targets.add_to, counters[0], 1)  # an async proxy in a child
        assert counters[0].get().get() == 1
        start = time.monotonic()
        replies = [counter.slow_step(0.5) for counter in counters]
        assert [reply.get(timeout=30) for reply in replies] == [2, 1, 1]
        assert time.monotonic() - start < 1.2  # in parallel, not 1.5 s one after another
    finally:
        for manager in started:
            manager.shutdown()


def test_sync_manager_class_is_reusable() -> None:
    manager = SyncManager()
    manager.start()
    try:
        assert manager.list([1, 2])[1] == 2
    finally:
        manager.shutdown()
