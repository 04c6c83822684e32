"""Contract tests of fiber_core.futures.Executor (concurrent.futures on Fiber)."""

from __future__ import annotations

import concurrent.futures

import pytest

from fiber_core.futures import Executor
from fiber_core.testing.contract import pool_targets as targets

pytestmark = pytest.mark.timeout(120)


def test_submit_and_result() -> None:
    with Executor(2) as executor:
        futures = [executor.submit(targets.add, i, y=1) for i in range(10)]
        assert [f.result(timeout=60) for f in futures] == list(range(1, 11))
        done = list(concurrent.futures.as_completed(futures, timeout=60))
        assert len(done) == 10


def test_exception_in_future() -> None:
    with Executor(2) as executor:
        future = executor.submit(targets.fail_on, 3)
        assert isinstance(future.exception(timeout=60), ValueError)
        with pytest.raises(ValueError):
            future.result()


def test_map_in_order_with_chunks() -> None:
    with Executor(2) as executor:
        assert list(executor.map(targets.add, range(20), range(20), chunksize=3)) == [
            2 * i for i in range(20)]


def test_map_timeout() -> None:
    with Executor(1) as executor:
        results = executor.map(targets.sleep_then, [1, 2], [5.0, 5.0], timeout=0.2)
        with pytest.raises(concurrent.futures.TimeoutError):
            list(results)
        executor.shutdown(cancel_futures=True)


def test_shutdown_refuses_new_work() -> None:
    executor = Executor(1)
    assert executor.submit(targets.square, 3).result(timeout=60) == 9
    executor.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        executor.submit(targets.square, 3)
