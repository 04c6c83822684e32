"""Queue and SimpleQueue: as multiprocessing, between any Fiber processes."""

from __future__ import annotations

import queue as stdlib_queue
import time

import pytest

import fiber_core
from fiber_core.testing.contract import targets


def test_fifo_order_across_processes() -> None:
    q = fiber_core.Queue()
    children = [fiber_core.Process(target=targets.put, args=(q, i)) for i in range(3)]
    for child in children:
        child.start()
    got = sorted(q.get(timeout=60) for _ in range(3))
    for child in children:
        child.join()
    assert got == [0, 1, 2]
    for i in range(5):
        q.put(i)
    assert [q.get() for _ in range(5)] == list(range(5))


def test_get_timeout_and_nowait_raise_empty() -> None:
    q = fiber_core.Queue()
    start = time.monotonic()
    with pytest.raises(stdlib_queue.Empty):
        q.get(timeout=0.3)
    assert time.monotonic() - start >= 0.25
    with pytest.raises(stdlib_queue.Empty):
        q.get_nowait()
    with pytest.raises(stdlib_queue.Empty):
        q.get(block=False)


def test_maxsize_put_raises_full() -> None:
    q = fiber_core.Queue(maxsize=2)
    q.put(1)
    q.put_nowait(2)
    assert q.full() and q.qsize() == 2
    with pytest.raises(stdlib_queue.Full):
        q.put(3, timeout=0.2)
    with pytest.raises(stdlib_queue.Full):
        q.put_nowait(3)
    assert q.get() == 1
    q.put(3)
    assert [q.get(), q.get()] == [2, 3]
    assert q.empty()


def test_blocked_put_completes_when_space_frees() -> None:
    q = fiber_core.Queue(maxsize=1)
    q.put("first")
    child = fiber_core.Process(target=targets.put, args=(q, "second"))
    child.start()
    time.sleep(0.5)
    assert child.is_alive()  # blocked on the full queue
    assert q.get(timeout=30) == "first"
    assert q.get(timeout=30) == "second"
    child.join(30)
    assert child.exitcode == 0


def test_blocked_get_wakes_on_put() -> None:
    q = fiber_core.Queue()
    back = fiber_core.Queue()
    child = fiber_core.Process(target=_relay, args=(q, back))
    child.start()
    time.sleep(0.3)
    q.put("ping")
    assert back.get(timeout=30) == ("ping", "relayed")
    child.join(30)


def _relay(source, sink) -> None:
    sink.put((source.get(), "relayed"))


def test_queue_passed_to_grandchild() -> None:
    q = fiber_core.Queue()
    child = fiber_core.Process(target=targets.start_child, args=(q, targets.put, q, "deep"))
    child.start()
    assert q.get(timeout=60) == "deep"
    assert q.get(timeout=60) == 0
    child.join(30)


def test_queue_sent_through_a_queue() -> None:
    outer, inner = fiber_core.Queue(), fiber_core.Queue()
    outer.put(inner)
    received = outer.get()
    received.put("via copy")
    assert inner.get(timeout=10) == "via copy"


def test_large_numpy_payload_round_trip() -> None:
    numpy = pytest.importorskip("numpy")
    q = fiber_core.Queue()
    array = numpy.arange(2_000_000, dtype=numpy.float64)
    child = fiber_core.Process(target=targets.put, args=(q, array))
    child.start()
    got = q.get(timeout=60)
    child.join(30)
    assert numpy.array_equal(got, array)
    got[0] = -1.0  # arrays that arrive are writable, as with multiprocessing


def test_closed_queue_refuses_use() -> None:
    q = fiber_core.Queue()
    q.close()
    q.join_thread()
    with pytest.raises(ValueError, match="closed"):
        q.put(1)


def test_simple_queue() -> None:
    q = fiber_core.SimpleQueue()
    assert q.empty()
    child = fiber_core.Process(target=targets.put, args=(q, {"a": 1}))
    child.start()
    assert q.get() == {"a": 1}
    child.join()
    assert q.empty()
    q.close()
