"""Contract tests of Pool: multiprocessing's semantics on every backend, plus
resilience to workers that die (the ideas of CPython's test_multiprocessing
Pool tests, and the kill and poison-task tests of issue 3)."""

from __future__ import annotations

import itertools
import pickle
import threading
import time
from typing import Any, Iterator, List

import pytest

import fiber_core
from fiber_core import pool as pool_module
from fiber_core.meta import get_meta
from fiber_core.poolworker import STOP
from fiber_core.testing.contract import pool_targets as targets

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def pool() -> Iterator[fiber_core.Pool]:
    with fiber_core.Pool(3) as p:
        yield p


def wait_for(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the condition"
        time.sleep(0.05)


def test_apply(pool: fiber_core.Pool) -> None:
    assert pool.apply(targets.square, (5,)) == 25
    assert pool.apply(targets.add, (2,), {"y": 3}) == 5


def test_apply_async_result_api(pool: fiber_core.Pool) -> None:
    result = pool.apply_async(targets.sleep_then, (7, 0.5))
    with pytest.raises(ValueError):
        result.successful()
    with pytest.raises(fiber_core.TimeoutError):
        result.get(timeout=0.01)
    result.wait()
    assert result.ready() and result.successful()
    assert result.get(timeout=0) == 7


def test_timeout_error_is_multiprocessings() -> None:
    import multiprocessing

    assert fiber_core.TimeoutError is multiprocessing.TimeoutError


@pytest.mark.parametrize("chunksize", [None, 1, 3, 100])
def test_map_order(pool: fiber_core.Pool, chunksize: Any) -> None:
    assert pool.map(targets.square, range(50), chunksize) == [x * x for x in range(50)]


def test_map_empty_and_generator(pool: fiber_core.Pool) -> None:
    assert pool.map(targets.square, []) == []
    assert pool.map(targets.square, (x for x in range(10))) == [x * x for x in range(10)]
    assert pool.map_async(targets.square, []).get() == []


def test_map_rejects_bad_chunksize(pool: fiber_core.Pool) -> None:
    with pytest.raises(ValueError):
        pool.map(targets.square, range(3), chunksize=0)
    with pytest.raises(ValueError):
        pool.imap(targets.square, range(3), chunksize=0)


def test_starmap(pool: fiber_core.Pool) -> None:
    pairs = [(i, i + 1) for i in range(20)]
    assert pool.starmap(targets.add, pairs) == [a + b for a, b in pairs]
    assert pool.starmap_async(targets.add, pairs, 3).get() == [a + b for a, b in pairs]


def test_lambdas_and_closures(pool: fiber_core.Pool) -> None:
    offset = 10
    assert pool.map(lambda x: x + offset, range(5)) == [10, 11, 12, 13, 14]


@pytest.mark.parametrize("chunksize", [1, 4])
def test_imap_order(pool: fiber_core.Pool, chunksize: int) -> None:
    assert list(pool.imap(targets.square, range(30), chunksize)) == [x * x for x in range(30)]
    it = pool.imap(targets.square, range(5), chunksize)
    assert [it.next() for _ in range(5)] == [0, 1, 4, 9, 16]
    with pytest.raises(StopIteration):
        it.next()


def test_imap_unordered(pool: fiber_core.Pool) -> None:
    assert sorted(pool.imap_unordered(targets.square, range(40), 3)) == sorted(
        x * x for x in range(40))


def test_imap_next_timeout(pool: fiber_core.Pool) -> None:
    it = pool.imap(targets.sleep_then, [1, 2], 1)
    with pytest.raises(fiber_core.TimeoutError):
        it.next(timeout=0.001)
    assert list(it) == [1, 2]


def test_imap_error_at_its_position(pool: fiber_core.Pool) -> None:
    it = pool.imap(targets.fail_on, range(6))
    assert [it.next(), it.next(), it.next()] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad value 3"):
        it.next()
    assert list(it) == [4, 5]


def test_imap_of_a_failing_generator(pool: fiber_core.Pool) -> None:
    def generate() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("generator broke")

    it = pool.imap(targets.identity, generate())
    assert [it.next(), it.next()] == [1, 2]
    with pytest.raises(OSError, match="generator broke"):
        it.next()
    with pytest.raises(StopIteration):
        it.next()


def test_imap_slow_consumer_is_lazy_and_bounded(pool: fiber_core.Pool) -> None:
    drawn = [0]
    it = pool.imap(targets.identity, targets.counting(drawn))
    for expected in range(20):
        assert it.next() == expected
        time.sleep(0.01)
    time.sleep(0.5)
    bound = 20 + pool._window() + pool_module.FEED_BATCH
    assert drawn[0] <= bound
    assert it.next() == 20


def test_infinite_generator_with_islice(pool: fiber_core.Pool) -> None:
    results = pool.imap(targets.square, itertools.count(), chunksize=2)
    assert list(itertools.islice(results, 10)) == [x * x for x in range(10)]
    unordered = pool.imap_unordered(targets.square, itertools.count())
    assert len(list(itertools.islice(unordered, 10))) == 10


def test_callbacks(pool: fiber_core.Pool) -> None:
    got: List[Any] = []
    errors: List[BaseException] = []
    pool.apply_async(targets.square, (3,), callback=got.append).wait()
    pool.map_async(targets.square, range(4), callback=got.append).wait()
    pool.apply_async(targets.fail_on, (3,), error_callback=errors.append).wait()
    pool.map_async(targets.fail_on, range(5), error_callback=errors.append).wait()
    pool.starmap_async(targets.add, [(1, 2)], callback=got.append).wait()
    assert got == [9, [0, 1, 4, 9], [3]]
    assert len(errors) == 2 and all(isinstance(e, ValueError) for e in errors)


def test_exception_has_remote_traceback(pool: fiber_core.Pool) -> None:
    with pytest.raises(KeyError) as info:
        pool.apply(targets.raise_error, ("lost key",))
    cause = info.value.__cause__
    assert isinstance(cause, fiber_core.pool.RemoteTraceback)
    assert "raise_error" in str(cause) and "Traceback" in str(cause)
    result = pool.map_async(targets.fail_on, range(10), 2)
    result.wait()
    assert not result.successful()
    with pytest.raises(ValueError):
        result.get()
    assert pool.map(targets.square, range(3)) == [0, 1, 4]


def test_unpicklable_argument_fails_clearly(pool: fiber_core.Pool) -> None:
    with pytest.raises(pickle.PicklingError, match="cannot send the arguments"):
        pool.apply(targets.identity, (threading.Lock(),))
    with pytest.raises(pickle.PicklingError):
        pool.map(targets.identity, [1, threading.Lock(), 3])
    assert pool.map(targets.square, range(4)) == [0, 1, 4, 9]


def test_unpicklable_function_fails_clearly(pool: fiber_core.Pool) -> None:
    lock = threading.Lock()
    with pytest.raises(pickle.PicklingError, match="cannot send"):
        pool.apply(lambda: lock)
    assert pool.apply(targets.square, (4,)) == 16


def test_unpicklable_result(pool: fiber_core.Pool) -> None:
    with pytest.raises(fiber_core.pool.MaybeEncodingError):
        pool.apply(targets.unpicklable_result)
    assert pool.apply(targets.square, (2,)) == 4


def test_initializer() -> None:
    with fiber_core.Pool(2, initializer=targets.initialize, initargs=("ready",)) as pool:
        assert pool.map(targets.initialized, range(4)) == ["ready"] * 4


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        fiber_core.Pool(0)
    with pytest.raises(TypeError):
        fiber_core.Pool(1, initializer=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        fiber_core.Pool(1, maxtasksperchild=0)
    with pytest.raises(pickle.PicklingError):
        fiber_core.Pool(1, initializer=targets.initialize, initargs=(threading.Lock(),))


def test_maxtasksperchild_recycles_workers() -> None:
    with fiber_core.Pool(2, maxtasksperchild=2) as pool:
        pids = pool.map(targets.pid, range(12), chunksize=1)
        assert len(set(pids)) >= 6
        assert all(pids.count(p) <= 2 for p in set(pids))
        wait_for(lambda: len(pool._pool) == 2)


def test_close_then_join() -> None:
    pool = fiber_core.Pool(2)
    result = pool.map_async(targets.sleep_then, range(6), 1)
    with pytest.raises(ValueError, match="still running"):
        pool.join()
    pool.close()
    with pytest.raises(ValueError, match="not running"):
        pool.apply(targets.square, (1,))
    pool.join()
    assert result.get(timeout=0) == list(range(6))
    assert not any(p.is_alive() for p in pool._pool)


def test_close_join_without_tasks() -> None:
    pool = fiber_core.Pool(2)
    pool.close()
    pool.join()


def test_terminate_while_busy() -> None:
    pool = fiber_core.Pool(2)
    result = pool.map_async(targets.sleep, [30.0] * 4, 1)
    wait_for(lambda: len(pool._pool) == 2)
    time.sleep(0.5)
    pool.terminate()
    assert result.ready()
    with pytest.raises(RuntimeError, match="terminated"):
        result.get()
    pool.join()
    assert not any(p.is_alive() for p in pool._pool)


def test_context_manager_terminates() -> None:
    with fiber_core.Pool(2) as pool:
        assert pool.apply(targets.square, (3,)) == 9
    with pytest.raises(ValueError):
        pool.apply(targets.square, (3,))


def test_meta_hints_size_the_workers() -> None:
    with fiber_core.Pool(2) as pool:
        assert pool.map(targets.sized, range(4)) == list(range(4))
        assert all(get_meta(p._target) == {"cpu": 1.0, "memory": 256} for p in pool._pool)


def test_pool_cannot_be_pickled(pool: fiber_core.Pool) -> None:
    with pytest.raises(NotImplementedError):
        pickle.dumps(pool)


# -- resilience ---------------------------------------------------------------


def test_killed_workers_mid_map_lose_nothing() -> None:
    with fiber_core.Pool(3) as pool:
        results = pool.imap(targets.sleep_then, range(60), 1)
        got = []
        for value in results:
            got.append(value)
            if value in (5, 25):
                victim = pool._pool[0]
                victim.kill()
        assert got == list(range(60))
        wait_for(lambda: len(pool._pool) == 3 and all(p.is_alive() for p in pool._pool))
        assert pool.map(targets.square, range(10), 1) == [x * x for x in range(10)]


def test_killed_worker_during_map_async() -> None:
    with fiber_core.Pool(3) as pool:
        result = pool.map_async(targets.sleep_then, range(40), 1)
        wait_for(lambda: len(pool._pool) == 3)
        time.sleep(0.3)
        for process in pool._pool[:2]:
            process.kill()
        assert result.get(timeout=60) == list(range(40))
        wait_for(lambda: len(pool._pool) == 3 and all(p.is_alive() for p in pool._pool))


def test_worker_dying_just_after_a_result_loses_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker holding chunks 1 and 2 sends 1's result and dies. The dispatcher
    reads that result only afterwards (it was busy), when its ROUTER already knows
    the worker is gone, so the next chunk it sends the worker fails: chunk 2 must
    still run again when the worker is reported lost. (The dispatcher is held up on
    purpose, and the exit-code polling held back, to get exactly that order.)"""
    monkeypatch.setattr(pool_module, "WORKER_POLL", 3600)  # reap only when told to
    started, go = fiber_core.Queue(), fiber_core.Queue()
    held_up, dead = threading.Event(), threading.Event()
    with fiber_core.Pool(1) as pool:
        result = pool.starmap_async(targets.dies_after_a_result,
                                    [(x, started, go) for x in range(5)], 1)
        assert started.get(timeout=60) == 1  # the worker holds chunks 1 and 2
        dispatcher = pool._dispatcher
        worker_id, victim = next(iter(pool._workers.items()))

        def hold_up() -> None:  # on the dispatcher thread, until its ROUTER drops the worker
            held_up.set()
            dead.wait(60)
            deadline = time.monotonic() + 60
            while dispatcher._send(worker_id, [STOP]) and time.monotonic() < deadline:
                time.sleep(0.01)

        dispatcher.post(hold_up)
        assert held_up.wait(60)
        go.put("go")  # chunk 1 returns (its result waits, unread); chunk 2 starts
        assert started.get(timeout=60) == 2
        victim.kill()
        victim.join()
        dead.set()
        wait_for(lambda: result._number_left == 3)  # chunk 1's result was read
        go.put("retry")
        pool._workers_changed.set()  # now reap the worker (and start another)
        assert result.get(timeout=30) == list(range(5))


def test_poison_task_fails_after_bounded_attempts() -> None:
    with fiber_core.Pool(3) as pool:
        results = [pool.apply_async(targets.kill_self_on, (i,)) for i in range(30)]
        for i, result in enumerate(results):
            if i == 13:
                with pytest.raises(fiber_core.WorkerLostError, match="SIGKILL"):
                    result.get(timeout=60)
            else:
                assert result.get(timeout=60) == i
        wait_for(lambda: len(pool._pool) == 3)


def test_retries_off_fails_the_poison_task_at_once() -> None:
    fiber_core.init(pool_max_attempts=1)
    try:
        with fiber_core.Pool(2) as pool:
            results = [pool.apply_async(targets.kill_self_on, (i,)) for i in range(20)]
            with pytest.raises(fiber_core.WorkerLostError, match="tried 1 time"):
                results[13].get(timeout=60)
            for i, result in enumerate(results):
                result.wait(60)
                assert result.ready()
                if result.successful():
                    assert result.get() == i
    finally:
        fiber_core.init(pool_max_attempts=3)


def test_poison_task_in_imap_other_tasks_complete() -> None:
    with fiber_core.Pool(3) as pool:
        it = pool.imap(targets.kill_self_on, range(30), 1)
        got = []
        while True:
            try:
                got.append(it.next(timeout=60))
            except StopIteration:
                break
            except fiber_core.WorkerLostError:
                got.append("lost")
        assert got == [*range(13), "lost", *range(14, 30)]
