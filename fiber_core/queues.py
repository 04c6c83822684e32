"""Queue and SimpleQueue, kept by the process that creates them.

The items live in the creator's hub (a deque per queue, kept as pickled frames:
the hub never unpickles). Any process holding the queue (passed as an argument
or through another queue) puts and gets with one request each. A blocked
``get`` or ``put`` waits in the hub, which answers when an item or a slot is
free, or when the timeout ends. The creator must outlive the queue's users.
"""

from __future__ import annotations

import queue
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Tuple

from fiber_core import context, transport
from fiber_core.hub import Hub, Request, Timer

PUT = b"qput"
GET = b"qget"
SIZE = b"qsize"
OK, EMPTY, FULL = b"ok", b"empty", b"full"

Item = List[Any]


def encode_wait(block: bool, timeout: Optional[float]) -> bytes:
    """How long the hub may park a request: ``b""`` for ever, else seconds."""
    if not block:
        return b"0"
    if timeout is None:
        return b""
    return str(max(0.0, float(timeout))).encode()


@dataclass
class _Waiter:
    request: Request
    item: Optional[Item] = None
    timer: Optional[Timer] = None


@dataclass
class _State:
    maxsize: int
    items: Deque[Item] = field(default_factory=deque)
    getters: Deque[_Waiter] = field(default_factory=deque)
    putters: Deque[_Waiter] = field(default_factory=deque)

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self.items)


class QueueService:
    """Hub service: the queues this process created."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.queues: Dict[bytes, _State] = {}
        hub.handle(PUT, self._put)
        hub.handle(GET, self._get)
        hub.handle(SIZE, self._size)

    def create(self, maxsize: int) -> bytes:
        queue_id = uuid.uuid4().bytes
        self.queues[queue_id] = _State(maxsize)
        return queue_id

    def _park(self, waiters: Deque[_Waiter], waiter: _Waiter, wait: bytes,
              answer: bytes) -> None:
        waiters.append(waiter)
        if wait:
            def expire() -> None:
                if waiter in waiters:
                    waiters.remove(waiter)
                    self.hub.reply(waiter.request, answer)
            waiter.timer = self.hub.at(time.monotonic() + float(wait), expire)

    def _put(self, request: Request) -> None:
        queue_id, wait, *item = request.args
        state = self.queues[queue_id.bytes]
        if state.full():
            if wait.bytes == b"0":
                self.hub.reply(request, FULL)
            else:
                self._park(state.putters, _Waiter(request, item), wait.bytes, FULL)
            return
        self._add(state, item)
        self.hub.reply(request, OK)

    def _add(self, state: _State, item: Item) -> None:
        while state.getters:
            getter = state.getters.popleft()
            if getter.timer:
                getter.timer.cancel()
            if self.hub.reply(getter.request, OK, *item):
                return
        state.items.append(item)

    def _get(self, request: Request) -> None:
        queue_id, wait = request.args
        state = self.queues[queue_id.bytes]
        if not state.items:
            if wait.bytes == b"0":
                self.hub.reply(request, EMPTY)
            else:
                self._park(state.getters, _Waiter(request), wait.bytes, EMPTY)
            return
        item = state.items.popleft()
        if not self.hub.reply(request, OK, *item):
            state.items.appendleft(item)  # the getter is gone: keep the item
            return
        while state.putters and not state.full():
            putter = state.putters.popleft()
            if putter.timer:
                putter.timer.cancel()
            assert putter.item is not None
            self._add(state, putter.item)
            self.hub.reply(putter.request, OK)

    def _size(self, request: Request) -> None:
        state = self.queues[request.args[0].bytes]
        self.hub.reply(request, str(len(state.items)).encode())


class Queue:
    """A process-shared FIFO queue (as ``multiprocessing.Queue``)."""

    def __init__(self, maxsize: int = 0) -> None:
        hub = context.runtime().hub
        self._maxsize = maxsize if maxsize > 0 else 0
        self._setstate((hub.address, hub.service(QueueService).create(self._maxsize),
                        self._maxsize))

    def _setstate(self, state: Tuple[str, bytes, int]) -> None:
        self._address, self._id, self._maxsize = state
        self._closed = False

    def __getstate__(self) -> Tuple[str, bytes, int]:
        return self._address, self._id, self._maxsize

    def __setstate__(self, state: Tuple[str, bytes, int]) -> None:
        self._setstate(state)

    def _request(self, kind: bytes, *frames: Any) -> list:
        peer = context.runtime().peers.get(self._address)
        return peer.request(kind, self._id, *frames)

    def _check_closed(self) -> None:
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")

    def put(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Put ``obj``; when the queue is full wait (``block``) up to ``timeout``
        seconds, then raise ``queue.Full``."""
        self._check_closed()
        status, *_ = self._request(PUT, encode_wait(block, timeout), *transport.dumps(obj))
        if status.bytes == FULL:
            raise queue.Full

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Remove and return an item; when empty wait (``block``) up to ``timeout``
        seconds, then raise ``queue.Empty``."""
        self._check_closed()
        status, *frames = self._request(GET, encode_wait(block, timeout))
        if status.bytes == EMPTY:
            raise queue.Empty
        return transport.loads(frames)

    def put_nowait(self, obj: Any) -> None:
        self.put(obj, False)

    def get_nowait(self) -> Any:
        return self.get(False)

    def qsize(self) -> int:
        """The number of items in the queue now."""
        return int(self._request(SIZE)[0].bytes)

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return 0 < self._maxsize <= self.qsize()

    def close(self) -> None:
        """This process will put or get no more (the queue lives on for others)."""
        self._closed = True

    def join_thread(self) -> None:
        """Puts are synchronous: nothing to wait for."""

    def cancel_join_thread(self) -> None:
        """Puts are synchronous: nothing to cancel."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at {self._address} id={self._id.hex()[:8]}>"


class SimpleQueue(Queue):
    """An unbounded queue with only put, get, empty and close (as
    ``multiprocessing.SimpleQueue``)."""

    def __init__(self) -> None:
        super().__init__(0)

    def put(self, obj: Any) -> None:  # type: ignore[override]
        super().put(obj)

    def get(self) -> Any:  # type: ignore[override]
        return super().get()
