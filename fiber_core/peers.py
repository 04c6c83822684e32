"""This process's side of connections to other processes' hubs.

For each hub address a :class:`Peer` keeps one *link* (a DEALER socket for
one-way messages, pings and liveness) and one request socket per thread (zmq
sockets are not thread-safe). One thread, ``fiber-links``, pings every hub and
watches every link: a hub that stays unreachable for ``orphan_timeout`` is lost,
and requests waiting on it fail instead of hanging.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Callable, Dict, List, Optional

import zmq
from zmq.utils.monitor import parse_monitor_message

from fiber_core import hub, transport
from fiber_core.transport import Frame

logger = logging.getLogger("fiber")


class HubLost(ConnectionError):
    """The process hosting an object (a queue, a pipe, the parent) is gone."""


class Peer:
    """Connections from this process to one hub."""

    def __init__(self, address: str, secret: str, heartbeat: float, timeout: float,
                 on_lost: Optional[Callable[[str], None]] = None) -> None:
        self.address = address
        self._secret = secret
        self._heartbeat = heartbeat
        self._timeout = timeout
        self.on_lost = on_lost
        self.lost_reason: Optional[str] = None
        self._down_since: Optional[float] = time.monotonic()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._request_ids = itertools.count()
        self.link = self._socket(heartbeat=True)
        self.link.linger = 2000
        self.monitor = self.link.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        transport.connect(self.link, address, secret)

    def _socket(self, heartbeat: bool = False) -> zmq.Socket:
        sock = transport.context().socket(zmq.DEALER)
        sock.linger = 0
        if heartbeat:
            sock.heartbeat_ivl = int(self._heartbeat * 1000)
            sock.heartbeat_timeout = int(self._timeout * 1000)
        return sock

    @property
    def lost(self) -> bool:
        return self.lost_reason is not None

    def send(self, kind: bytes, *frames: Frame) -> None:
        """Send a one-way message over the link (ordered with other link messages)."""
        with self._lock:
            self.link.send_multipart([kind, b"", *frames], copy=False)

    def request(self, kind: bytes, *frames: Frame,
                timeout: Optional[float] = None) -> List[zmq.Frame]:
        """Send a request and wait for its reply frames.

        Raises TimeoutError after ``timeout`` seconds and :class:`HubLost` when
        the hub is gone."""
        sock = getattr(self._local, "socket", None)
        if sock is None:
            sock = self._local.socket = self._socket()
            transport.connect(sock, self.address, self._secret)
        request_id = str(next(self._request_ids)).encode()
        sock.send_multipart([kind, request_id, *frames], copy=False)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                wait = self._heartbeat if deadline is None else min(
                    self._heartbeat, max(0.0, deadline - time.monotonic()))
                if sock.poll(int(wait * 1000)):
                    reply_id, *reply = sock.recv_multipart(copy=False)
                    if reply_id.bytes == request_id:
                        return reply
                    continue  # the late answer of an abandoned request
                if self.lost:
                    raise HubLost(f"lost the process at {self.address}: {self.lost_reason}")
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"no answer from {self.address} in {timeout} s")
        except BaseException:
            # Abandon this socket: a reply that may still come must not be
            # taken as the answer to a later request.
            sock.close(linger=0)
            self._local.socket = None
            raise

    def check(self, now: float) -> None:
        """Ping the hub and take in the link's events (on the links thread)."""
        while self.monitor.poll(0):
            event = parse_monitor_message(self.monitor.recv_multipart())["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._down_since = None
            elif event == zmq.EVENT_DISCONNECTED and self._down_since is None:
                self._down_since = now
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._lose("it refused our credentials (a different run's secret?)")
        if self._down_since is not None and now - self._down_since > self._timeout:
            self._lose(f"unreachable for {self._timeout:g} s")
        if not self.lost:
            self.send(hub.PING)

    def _lose(self, reason: str) -> None:
        if self.lost:
            return
        self.lost_reason = reason
        logger.info("lost the hub at %s: %s", self.address, reason)
        if self.on_lost is not None:
            self.on_lost(reason)

    def close(self) -> None:
        """Say goodbye and close the link (request sockets close with the context)."""
        if not self.lost:
            self.send(hub.BYE)
        self.monitor.close(linger=0)
        self.link.close()


class Peers:
    """Every :class:`Peer` of this process, and the thread that watches them."""

    def __init__(self, secret: str, heartbeat: float, timeout: float) -> None:
        self._secret = secret
        self._heartbeat = heartbeat
        self._timeout = timeout
        self._peers: Dict[str, Peer] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="fiber-links", daemon=True)
        self._thread.start()

    def configure(self, heartbeat: float, timeout: float) -> None:
        """Use these timings for hubs connected from now on."""
        self._heartbeat, self._timeout = heartbeat, timeout

    def get(self, address: str, on_lost: Optional[Callable[[str], None]] = None) -> Peer:
        """The :class:`Peer` for ``address``, connected on first use."""
        with self._lock:
            peer = self._peers.get(address)
            if peer is None:
                peer = Peer(address, self._secret, self._heartbeat, self._timeout, on_lost)
                self._peers[address] = peer
            elif on_lost is not None:
                peer.on_lost = on_lost
            return peer

    def _watch(self) -> None:
        while not self._closed.wait(self._heartbeat):
            now = time.monotonic()
            with self._lock:
                peers = list(self._peers.values())
            for peer in peers:
                try:
                    peer.check(now)
                except zmq.ZMQError as error:  # closed under us at exit
                    logger.debug("links: %s: %s", peer.address, error)

    def close(self) -> None:
        """Say goodbye to every hub."""
        self._closed.set()
        self._thread.join(timeout=2 * self._heartbeat)
        with self._lock:
            for peer in self._peers.values():
                peer.close()
            self._peers.clear()
