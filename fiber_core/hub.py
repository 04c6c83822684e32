"""The server every Fiber process runs once it hosts something.

One ROUTER socket, bound at the address the backend's jobs can reach, served by
one thread. Services (child processes, queues, pipes) register a handler per
message kind; handlers run on the hub thread, so the state they keep needs no
locks. A request is ``[kind, request id, *args]``; a reply is
``[request id, *frames]``. Peers announce themselves with pings; one that falls
silent for ``orphan_timeout`` (or says goodbye) is gone, and services that
track holders are told.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Type, TypeVar

import zmq

from fiber_core import transport
from fiber_core.transport import Frame

logger = logging.getLogger("fiber")

S = TypeVar("S")

PING = b"ping"
BYE = b"bye"


@dataclass
class Request:
    """A message from a peer, as a handler receives it."""

    peer: bytes
    id: bytes
    args: List[zmq.Frame]


@dataclass(order=True)
class Timer:
    """A call scheduled on the hub thread; ``cancel()`` it when no longer wanted."""

    deadline: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Hub:
    """A process's server socket and the thread that serves it."""

    def __init__(self, host: str, secret: str, heartbeat: float, peer_timeout: float,
                 encrypt: Optional[bool] = None) -> None:
        ctx = transport.context()
        self._auth = transport.Authenticator(secret)
        self._socket = ctx.socket(zmq.ROUTER)
        self._socket.linger = 0
        self._socket.router_mandatory = True
        self._socket.heartbeat_ivl = int(heartbeat * 1000)
        self._socket.heartbeat_timeout = int(peer_timeout * 1000)
        self.address = transport.bind(self._socket, host, secret, encrypt)
        self._wake_endpoint = f"inproc://fiber-hub-wake-{id(self)}"
        self._wake_in = ctx.socket(zmq.PULL)
        self._wake_in.bind(self._wake_endpoint)
        self._wake_lock = threading.Lock()
        self._wake_out = ctx.socket(zmq.PUSH)
        self._wake_out.connect(self._wake_endpoint)
        self._calls: Deque[Callable[[], None]] = deque()
        self._timers: List[Timer] = []
        self._seq = itertools.count()
        self._handlers: Dict[bytes, Callable[[Request], None]] = {
            PING: lambda request: None, BYE: self._bye}
        self._last_seen: Dict[bytes, float] = {}
        self._gone_listeners: List[Callable[[bytes], None]] = []
        self._peer_timeout = peer_timeout
        self._heartbeat = heartbeat
        self._services: Dict[type, Any] = {}
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name="fiber-hub", daemon=True)
        self._thread.start()
        self.at(time.monotonic() + heartbeat, self._sweep)

    # -- for services -------------------------------------------------------

    def service(self, cls: Type[S]) -> S:
        """The hub's one instance of a service class, made by ``cls(hub)`` on first use."""
        with self._wake_lock:
            if cls not in self._services:
                self._services[cls] = cls(self)  # type: ignore[call-arg]
            service: S = self._services[cls]
            return service

    def handle(self, kind: bytes, handler: Callable[[Request], None]) -> None:
        """Route requests of ``kind`` to ``handler`` (called on the hub thread)."""
        self._handlers[kind] = handler

    def on_peer_gone(self, listener: Callable[[bytes], None]) -> None:
        """Call ``listener(peer)`` on the hub thread when a pinging peer is gone."""
        self._gone_listeners.append(listener)

    def reply(self, request: Request, *frames: Frame) -> bool:
        """Answer ``request``; False when its peer is no longer connected."""
        try:
            self._socket.send_multipart([request.peer, request.id, *frames], copy=False)
            return True
        except zmq.ZMQError as error:
            if error.errno != zmq.EHOSTUNREACH:
                raise
            return False

    def post(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the hub thread soon (from any thread)."""
        with self._wake_lock:
            if self._wake_out.closed:
                return  # the hub has stopped: nothing will run it
            self._calls.append(call)
            self._wake_out.send(b"", zmq.NOBLOCK)

    def at(self, deadline: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` on the hub thread at ``deadline`` (``time.monotonic``).

        Call from the hub thread (from another, wrap it in :meth:`post`)."""
        timer = Timer(deadline, next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def close(self) -> None:
        """Stop serving and close the socket."""
        if self._closing:
            return
        self._closing = True
        self.post(lambda: None)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    # -- the loop ------------------------------------------------------------

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._wake_in, zmq.POLLIN)
        poller.register(self._auth.socket, zmq.POLLIN)
        try:
            while not self._closing:
                events = dict(poller.poll(self._next_timeout()))
                if self._auth.socket in events:
                    self._auth.handle()
                if self._wake_in in events:
                    while self._wake_in.poll(0):
                        self._wake_in.recv()
                while self._calls:
                    self._run(self._calls.popleft())
                if self._socket in events:
                    self._receive()
                self._fire_timers()
        except zmq.ContextTerminated:
            pass
        finally:
            with self._wake_lock:
                for sock in (self._socket, self._wake_in, self._wake_out):
                    sock.close(linger=0)
            self._auth.close()

    def _next_timeout(self) -> int:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return -1
        return max(0, int((self._timers[0].deadline - time.monotonic()) * 1000) + 1)

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0].deadline <= now:
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self._run(timer.callback)

    def _receive(self) -> None:
        for _ in range(1000):  # then let timers and posted calls run
            try:
                peer, kind, request_id, *args = self._socket.recv_multipart(
                    zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            except ValueError:
                continue  # not our protocol (a short message): ignore it
            peer_id = peer.bytes
            self._last_seen[peer_id] = time.monotonic()
            handler = self._handlers.get(kind.bytes)
            if handler is None:
                logger.warning("hub: unknown request kind %r", kind.bytes)
                continue
            self._run(handler, Request(peer_id, request_id.bytes, args))

    @staticmethod
    def _run(call: Callable[..., None], *args: Any) -> None:
        try:
            call(*args)
        except Exception:  # a broken request must not stop the hub
            logger.exception("hub: a request failed")

    def _bye(self, request: Request) -> None:
        self._last_seen.pop(request.peer, None)
        self._gone(request.peer)

    def _gone(self, peer: bytes) -> None:
        for listener in self._gone_listeners:
            self._run(listener, peer)

    def _sweep(self) -> None:
        limit = time.monotonic() - self._peer_timeout
        for peer, seen in list(self._last_seen.items()):
            if seen < limit:
                del self._last_seen[peer]
                self._gone(peer)
        self.at(time.monotonic() + self._heartbeat, self._sweep)

