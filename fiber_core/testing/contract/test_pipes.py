"""Pipe and Connection: as multiprocessing, including EOF and errors."""

from __future__ import annotations

import signal
import time

import pytest

import fiber_core
from fiber_core.testing.contract import targets


def test_duplex_echo_with_child_then_eof() -> None:
    ours, theirs = fiber_core.Pipe()
    child = fiber_core.Process(target=targets.echo_pipe, args=(theirs,))
    child.start()
    theirs.close()
    for message in (1, "two", [3]):
        ours.send(message)
        assert ours.recv() == (message, "echo")
    ours.close()
    child.join(30)
    assert child.exitcode == 0


def test_eof_when_child_exits_and_parent_closed_its_copy() -> None:
    ours, theirs = fiber_core.Pipe()
    child = fiber_core.Process(target=_send_and_exit, args=(theirs,))
    child.start()
    theirs.close()
    assert ours.recv() == "last words"
    with pytest.raises(EOFError):
        ours.recv()
    child.join(30)


def _send_and_exit(conn) -> None:
    conn.send("last words")


def test_eof_when_holder_is_killed() -> None:
    ours, theirs = fiber_core.Pipe()
    child = fiber_core.Process(target=_hold_and_sleep, args=(theirs,))
    child.start()
    theirs.close()
    assert ours.recv() == "holding"
    child.kill()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    with pytest.raises(EOFError):
        ours.recv()  # within orphan_timeout of the holder's death


def _hold_and_sleep(conn) -> None:
    conn.send("holding")
    time.sleep(60)


def test_local_close_gives_eof_and_broken_pipe() -> None:
    a, b = fiber_core.Pipe()
    a.send("pending")
    a.close()
    assert b.recv() == "pending"
    with pytest.raises(EOFError):
        b.recv()
    with pytest.raises(BrokenPipeError):
        b.send("nobody listens")


def test_poll_with_timeouts() -> None:
    a, b = fiber_core.Pipe()
    assert not a.poll()
    start = time.monotonic()
    assert not a.poll(0.3)
    assert time.monotonic() - start >= 0.25
    b.send(1)
    assert a.poll(5)
    assert a.poll()  # polling does not consume
    assert a.recv() == 1
    child = fiber_core.Process(target=_send_later, args=(b,))
    child.start()
    assert a.poll(None)
    assert a.recv() == "later"
    child.join(30)


def _send_later(conn) -> None:
    time.sleep(0.3)
    conn.send("later")


def test_bytes_api() -> None:
    a, b = fiber_core.Pipe()
    a.send_bytes(b"hello world", 6, 5)
    assert b.recv_bytes() == b"world"
    a.send_bytes(bytearray(b"abc"))
    buffer = bytearray(10)
    assert b.recv_bytes_into(buffer, 2) == 3
    assert buffer[2:5] == b"abc"
    a.send({"x": 1})
    assert isinstance(b.recv_bytes(), bytes)
    with pytest.raises(ValueError):
        a.send_bytes(b"abc", -1)
    with pytest.raises(ValueError):
        a.send_bytes(b"abc", 1, 5)
    a.send_bytes(b"too long")
    with pytest.raises(OSError, match="bad message length"):
        b.recv_bytes(3)


def test_one_way_pipe() -> None:
    reader, writer = fiber_core.Pipe(duplex=False)
    assert reader.readable and not reader.writable
    assert writer.writable and not writer.readable
    writer.send("one way")
    assert reader.recv() == "one way"
    with pytest.raises(OSError, match="read-only"):
        reader.send(1)
    with pytest.raises(OSError, match="write-only"):
        writer.recv()


def test_closed_connection_raises() -> None:
    a, _ = fiber_core.Pipe()
    a.close()
    assert a.closed
    with pytest.raises(OSError, match="closed"):
        a.send(1)
    with pytest.raises(OSError, match="closed"):
        a.recv()
    a.close()  # closing twice is fine


def test_pipe_end_to_grandchild() -> None:
    ours, theirs = fiber_core.Pipe()
    queue = fiber_core.SimpleQueue()
    child = fiber_core.Process(target=targets.start_child,
                               args=(queue, _send_and_exit, theirs))
    child.start()
    theirs.close()
    assert ours.recv() == "last words"
    assert queue.get() == 0
    child.join(30)
    with pytest.raises(EOFError):
        ours.recv()
