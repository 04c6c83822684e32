"""Pipe and Connection, brokered by the process that creates the pipe.

The creator's hub keeps one mailbox per end. ``send`` delivers to the other
end's mailbox, ``recv`` takes from this end's. Like a file descriptor, each
copy of an end (the original, and each unpickled copy in another process) is a
*holder*, identified by a token and owned by the process that has it; when every
holder of an end has closed or its process has gone, the other end reads
EOFError once its mailbox is empty, and its sends raise BrokenPipeError.
"""

from __future__ import annotations

import pickle
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Tuple

from fiber_core import context, transport
from fiber_core.hub import Hub, Request, Timer
from fiber_core.queues import encode_wait

SEND = b"psend"
RECV = b"precv"
HOLD = b"phold"
OK, EMPTY, EOF, BROKEN = b"ok", b"empty", b"eof", b"broken"
OBJECT, RAW = b"o", b"r"
TAKE, PEEK = b"take", b"peek"
ADOPT, DROP = b"adopt", b"drop"

Message = List[Any]


@dataclass
class _End:
    mailbox: Deque[Message] = field(default_factory=deque)
    holders: Dict[bytes, Optional[bytes]] = field(default_factory=dict)
    """token -> the peer that owns it (None until a process adopts it)."""
    readers: Deque[Tuple[Request, bytes, Optional[Timer]]] = field(default_factory=deque)


class PipeService:
    """Hub service: the pipes this process created."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.pipes: Dict[bytes, Tuple[_End, _End]] = {}
        hub.handle(SEND, self._send)
        hub.handle(RECV, self._recv)
        hub.handle(HOLD, self._hold)
        hub.on_peer_gone(self._peer_gone)

    def create(self) -> Tuple[bytes, bytes, bytes]:
        """A new pipe and an unowned holder token for each end."""
        pipe_id, tokens = uuid.uuid4().bytes, (uuid.uuid4().bytes, uuid.uuid4().bytes)
        ends = (_End(), _End())
        for end, token in zip(ends, tokens):
            end.holders[token] = None
        self.pipes[pipe_id] = ends
        return pipe_id, tokens[0], tokens[1]

    def _send(self, request: Request) -> None:
        pipe_id, side, *message = request.args
        ends = self.pipes[pipe_id.bytes]
        target = ends[1 - int(side.bytes)]
        if not target.holders:
            self.hub.reply(request, BROKEN)
            return
        while target.readers:
            reader, mode, timer = target.readers.popleft()
            if timer:
                timer.cancel()
            if mode == PEEK:
                target.mailbox.append(message)
                self.hub.reply(reader, OK)
                break
            if self.hub.reply(reader, OK, *message):
                break
        else:
            target.mailbox.append(message)
        self.hub.reply(request, OK)

    def _recv(self, request: Request) -> None:
        pipe_id, side, mode, wait = request.args
        ends = self.pipes[pipe_id.bytes]
        end, other = ends[int(side.bytes)], ends[1 - int(side.bytes)]
        if end.mailbox:
            if mode.bytes == PEEK:
                self.hub.reply(request, OK)
            else:
                message = end.mailbox.popleft()
                if not self.hub.reply(request, OK, *message):
                    end.mailbox.appendleft(message)
        elif not other.holders:
            self.hub.reply(request, EOF)
        elif wait.bytes == b"0":
            self.hub.reply(request, EMPTY)
        else:
            entry: Tuple[Request, bytes, Optional[Timer]] = (request, mode.bytes, None)
            if wait.bytes:
                def expire() -> None:
                    if entry in end.readers:
                        end.readers.remove(entry)
                        self.hub.reply(request, EMPTY)
                entry = (request, mode.bytes, self.hub.at(
                    time.monotonic() + float(wait.bytes), expire))
            end.readers.append(entry)

    def _hold(self, request: Request) -> None:
        pipe_id, side, token, action = (frame.bytes for frame in request.args)
        ends = self.pipes.get(pipe_id)
        if ends is None:
            return
        end = ends[int(side)]
        if action == ADOPT:
            end.holders[token] = request.peer
        elif action == DROP:
            end.holders.pop(token, None)
            self._check_eof(ends[1 - int(side)], end)
        else:  # a new copy, owned by its pickler until a process adopts it
            end.holders.setdefault(token, request.peer)

    def _peer_gone(self, peer: bytes) -> None:
        for ends in self.pipes.values():
            for side, end in enumerate(ends):
                lost = [token for token, owner in end.holders.items() if owner == peer]
                for token in lost:
                    del end.holders[token]
                if lost:
                    self._check_eof(ends[1 - side], end)

    def _check_eof(self, reader_end: _End, closed_end: _End) -> None:
        """Wake the readers of ``reader_end`` with EOF if ``closed_end`` has no holder left."""
        if closed_end.holders or reader_end.mailbox:
            return
        while reader_end.readers:
            reader, _mode, timer = reader_end.readers.popleft()
            if timer:
                timer.cancel()
            self.hub.reply(reader, EOF)


class Connection:
    """One end of a Pipe (as ``multiprocessing.connection.Connection``)."""

    def __init__(self, address: str, pipe_id: bytes, side: int, token: bytes,
                 readable: bool = True, writable: bool = True) -> None:
        self._address = address
        self._pipe_id = pipe_id
        self._side = str(side).encode()
        self._token: Optional[bytes] = token
        self._readable = readable
        self._writable = writable
        self._hold(ADOPT)

    def _peer(self) -> Any:
        return context.runtime().peers.get(self._address)

    def _hold(self, action: bytes, token: Optional[bytes] = None) -> None:
        token = token or self._token
        assert token is not None
        self._peer().send(HOLD, self._pipe_id, self._side, token, action)

    def __reduce__(self) -> Tuple[Any, ...]:
        self._check_closed()
        token = uuid.uuid4().bytes
        self._hold(b"new", token)
        return (Connection, (self._address, self._pipe_id, int(self._side), token,
                             self._readable, self._writable))

    @property
    def closed(self) -> bool:
        return self._token is None

    @property
    def readable(self) -> bool:
        return self._readable

    @property
    def writable(self) -> bool:
        return self._writable

    def _check_closed(self) -> None:
        if self._token is None:
            raise OSError("handle is closed")

    def _check_readable(self) -> None:
        self._check_closed()
        if not self._readable:
            raise OSError("connection is write-only")

    def _check_writable(self) -> None:
        self._check_closed()
        if not self._writable:
            raise OSError("connection is read-only")

    def _send(self, *message: Any) -> None:
        status, *_ = self._peer().request(SEND, self._pipe_id, self._side, *message)
        if status.bytes == BROKEN:
            raise BrokenPipeError("the other end of the pipe is closed")

    def _recv(self, mode: bytes, wait: bytes) -> list:
        status, *frames = self._peer().request(RECV, self._pipe_id, self._side, mode, wait)
        if status.bytes == EOF:
            raise EOFError
        return [status.bytes, *frames]

    def send(self, obj: Any) -> None:
        """Send a picklable object to the other end."""
        self._check_writable()
        self._send(OBJECT, *transport.dumps(obj))

    def send_bytes(self, buf: Any, offset: int = 0, size: Optional[int] = None) -> None:
        """Send bytes from a bytes-like object (``buf[offset:offset + size]``)."""
        self._check_writable()
        view = memoryview(buf).cast("B")
        if offset < 0:
            raise ValueError("offset is negative")
        if len(view) < offset:
            raise ValueError("buffer length < offset")
        if size is None:
            size = len(view) - offset
        elif size < 0:
            raise ValueError("size is negative")
        elif offset + size > len(view):
            raise ValueError("buffer length < offset + size")
        self._send(RAW, view[offset:offset + size])

    def recv(self) -> Any:
        """Receive an object sent by ``send``; EOFError when the other end is
        closed and nothing is left."""
        self._check_readable()
        return self._load(self._recv(TAKE, b"")[1:])

    def recv_bytes(self, maxlength: Optional[int] = None) -> bytes:
        """Receive one message as bytes."""
        self._check_readable()
        if maxlength is not None and maxlength < 0:
            raise ValueError("negative maxlength")
        data = self._message_bytes(self._recv(TAKE, b"")[1:])
        if maxlength is not None and len(data) > maxlength:
            self.close()
            raise OSError("bad message length")
        return data

    def recv_bytes_into(self, buf: Any, offset: int = 0) -> int:
        """Receive one message into a writable buffer; return its size."""
        self._check_readable()
        view = memoryview(buf).cast("B")
        if not 0 <= offset <= len(view):
            raise ValueError("offset out of bounds")
        data = self._message_bytes(self._recv(TAKE, b"")[1:])
        if offset + len(data) > len(view):
            from multiprocessing import BufferTooShort
            raise BufferTooShort(data)
        view[offset:offset + len(data)] = data
        return len(data)

    @staticmethod
    def _load(message: list) -> Any:
        kind, *frames = message
        if kind.bytes == RAW:  # bytes sent with send_bytes, read with recv
            return pickle.loads(frames[0].buffer)
        return transport.loads(frames)

    @staticmethod
    def _message_bytes(message: list) -> bytes:
        kind, *frames = message
        if kind.bytes == RAW:
            return bytes(frames[0].buffer)
        if len(frames) == 1:
            return bytes(frames[0].buffer)
        return pickle.dumps(transport.loads(frames))

    def poll(self, timeout: Optional[float] = 0.0) -> bool:
        """Whether data (or EOF) is waiting, within ``timeout`` seconds (None:
        wait as long as it takes)."""
        self._check_readable()
        try:
            return self._recv(PEEK, encode_wait(True, timeout))[0] == OK
        except EOFError:
            return True

    def fileno(self) -> int:
        raise OSError("Fiber connections have no file descriptor; use poll()")

    def close(self) -> None:
        """Close this copy of the end."""
        if self._token is not None:
            token, self._token = self._token, None
            if context.existing() is not None:  # else exiting: our goodbye tells the hub
                self._hold(DROP, token)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_token", None) is not None:
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"side={self._side.decode()}"
        return f"<Connection at {self._address} {state}>"


def Pipe(duplex: bool = True) -> Tuple[Connection, Connection]:
    """Return two connected ends; with ``duplex=False`` the first only receives
    and the second only sends (as ``multiprocessing.Pipe``)."""
    hub = context.runtime().hub
    pipe_id, first, second = hub.service(PipeService).create()
    return (Connection(hub.address, pipe_id, 0, first, True, duplex),
            Connection(hub.address, pipe_id, 1, second, duplex, True))
