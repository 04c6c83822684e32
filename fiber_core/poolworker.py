"""The worker side of a :class:`fiber_core.pool.Pool`, and the pool's wire format.

A pool worker is a Fiber process whose target is :func:`run`. It connects a
DEALER socket to its pool's dispatcher, runs the initializer, says ``READY``,
then runs the chunks it is sent in order and sends their results back in
batches (a batch goes when the worker runs out of work, every
``FLUSH_SECONDS`` of work, or every ``FLUSH_COUNT`` results).

Messages are lists of zmq frames (see :func:`pack`): the kind, a manifest, then
*entries*, each a pickle plus its out-of-band buffers. Small entries are joined
into one frame (per-frame costs dominate small tasks); large buffers travel as
frames of their own, never copied::

    pool -> worker  TASKS  (defs, drops, [(task id, function key, style)]) entries...
                    STOP   finish what you hold, then exit
    worker -> pool  READY  initializer done
                    DONE   [(task id, ok, seconds)] entries...

A function is sent once per worker (``defs``), under a key made from its pickle;
``drops`` tells the worker which keys it may forget.
"""

from __future__ import annotations

import io
import itertools
import pickle
import time
import traceback
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Sequence, Tuple, cast

import cloudpickle
import zmq

from fiber_core import context, transport
from fiber_core.transport import Frame

TASKS, STOP, READY, DONE = b"t", b"s", b"r", b"d"
APPLY, MAP, STARMAP = 0, 1, 2
FLUSH_SECONDS = 0.002
FLUSH_COUNT = 256
LINGER_MS = 10_000
INLINE_BYTES = 65536


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a pool worker (its ``__cause__``)."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


class MaybeEncodingError(Exception):
    """A task's result (or exception) could not be pickled to send it back."""

    def __init__(self, exc: str, value: str) -> None:
        super().__init__(exc, value)
        self.exc = exc
        self.value = value

    def __str__(self) -> str:
        return f"Error sending result: '{self.value}'. Reason: '{self.exc}'"


def _rebuild(exc: BaseException, tb: str) -> BaseException:
    exc.__cause__ = RemoteTraceback(tb)
    return exc


class _WithTraceback:
    """An exception as it travels: rebuilt on arrival with its remote traceback."""

    def __init__(self, exc: BaseException) -> None:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.exc = exc
        self.tb = f'\n"""\n{text}"""'

    def __reduce__(self) -> Tuple[Any, ...]:
        return _rebuild, (self.exc, self.tb)


class Pickler:
    """A reusable :func:`transport.dumps` for a thread that pickles many small
    objects: one cloudpickle pickler kept across calls costs a third of a new one."""

    def __init__(self) -> None:
        self._file = io.BytesIO()
        self._buffers: List[pickle.PickleBuffer] = []
        self._pickler = cloudpickle.Pickler(self._file, protocol=5,
                                            buffer_callback=self._buffers.append)

    def dumps(self, obj: Any) -> List[Frame]:
        """Pickle ``obj`` into frames: the pickle, then its out-of-band buffers."""
        self._file.seek(0)
        self._file.truncate()
        self._pickler.clear_memo()
        self._buffers.clear()
        try:
            self._pickler.dump(obj)
        except BaseException:
            self.__init__()  # type: ignore[misc]  # a failed dump can leave it unusable
            raise
        return [self._file.getvalue(), *(buffer.raw() for buffer in self._buffers)]


def pack(kind: bytes, head: Any, entries: Sequence[List[Frame]]) -> List[Frame]:
    """``[kind, pickle of (head, sizes), joined small entries, *other frames]``.

    An entry of one frame under INLINE_BYTES goes into the joined frame (its
    size >= 0 in ``sizes``); another keeps its frames (size: -their count)."""
    sizes: List[int] = []
    inline: List[Frame] = []
    separate: List[Frame] = []
    for frames in entries:
        if len(frames) == 1 and len(frames[0]) < INLINE_BYTES:  # type: ignore[arg-type]
            sizes.append(len(frames[0]))  # type: ignore[arg-type]
            inline.append(frames[0])
        else:
            sizes.append(-len(frames))
            separate.extend(frames)
    return [kind, pickle.dumps((head, sizes), protocol=5),
            b"".join(inline), *separate]  # type: ignore[arg-type]


def unpack(frames: Sequence[zmq.Frame]) -> Tuple[Any, List[Sequence[Any]]]:
    """The head and the entries of a message made by :func:`pack` (without its kind)."""
    head, sizes = pickle.loads(frames[0].buffer)
    joined = frames[1].buffer
    entries: List[Sequence[Any]] = []
    offset, index = 0, 2
    for size in sizes:
        if size >= 0:
            entries.append((joined[offset:offset + size],))
            offset += size
        else:
            entries.append(frames[index:index - size])
            index -= size
    return head, entries


def encode_result(pickler: Pickler, ok: bool, value: Any) -> Tuple[bool, List[Frame]]:
    """Pickle a task's outcome; an unpicklable one becomes a MaybeEncodingError."""
    try:
        return ok, pickler.dumps(_WithTraceback(value) if not ok else value)
    except Exception as error:
        failure = MaybeEncodingError(repr(error), repr(value)[:1000])
        return False, pickler.dumps(_WithTraceback(failure))


def _call(function: Callable[..., Any], style: int, args: Any) -> Any:
    if style == MAP:
        return list(map(function, args))
    if style == STARMAP:
        return list(itertools.starmap(function, args))
    return function(*args[0], **args[1])


class _Worker:
    """The loop of one pool worker."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self.functions: Dict[bytes, Any] = {}
        self.todo: Deque[Tuple[int, bytes, int, Sequence[Any]]] = deque()
        self.stopping = False
        self.pickler = Pickler()
        self.results: List[Tuple[int, bool, float]] = []
        self.result_frames: List[List[Frame]] = []
        self.first_result = 0.0

    def receive(self, block: bool) -> None:
        """Take in the messages waiting (and, if ``block``, wait for one)."""
        while block or cast(int, self.sock.get(zmq.EVENTS)) & zmq.POLLIN:
            block = False
            kind, *frames = self.sock.recv_multipart(copy=False)
            if kind.bytes == STOP:
                self.stopping = True
                continue
            (defs, drops, tasks), entries = unpack(frames)
            for key in drops:
                self.functions.pop(key, None)
            for key, entry in zip(defs, entries):
                try:
                    self.functions[key] = transport.loads(entry)
                except Exception as error:  # each task using it will report this
                    self.functions[key] = error
            for (task_id, key, style), entry in zip(tasks, entries[len(defs):]):
                self.todo.append((task_id, key, style, entry))

    def run_one(self) -> None:
        task_id, key, style, frames = self.todo.popleft()
        start = time.perf_counter()
        try:
            function = self.functions[key]
            if isinstance(function, Exception):
                raise function
            value, ok = _call(function, style, transport.loads(frames)), True
        except Exception as error:
            value, ok = error, False
        seconds = time.perf_counter() - start
        ok, result = encode_result(self.pickler, ok, value)
        if not self.results:
            self.first_result = start
        self.results.append((task_id, ok, seconds))
        self.result_frames.append(result)

    def flush(self, force: bool) -> None:
        """Send the results gathered, when it is time to."""
        if not self.results or not (
                force or len(self.results) >= FLUSH_COUNT
                or time.perf_counter() - self.first_result >= FLUSH_SECONDS):
            return
        self.sock.send_multipart(pack(DONE, self.results, self.result_frames), copy=False)
        self.results, self.result_frames = [], []


def run(address: str, worker_id: bytes, setup: bytes, maxtasks: int) -> None:
    """A pool worker's life: connect, initialize, run tasks until told to stop,
    or until it has run ``maxtasks`` chunks (0: no limit)."""
    sock = transport.context().socket(zmq.DEALER)
    sock.routing_id = worker_id
    sock.sndhwm = sock.rcvhwm = 0
    transport.connect(sock, address, context.runtime().secret)
    initializer, initargs = pickle.loads(setup)
    if initializer is not None:
        initializer(*initargs)
    sock.send(READY)
    worker = _Worker(sock)
    done = 0
    try:
        while not (maxtasks and done >= maxtasks):
            if not worker.todo:
                worker.flush(force=True)
                if worker.stopping:
                    break
                worker.receive(block=True)
                continue
            worker.run_one()
            done += 1
            worker.receive(block=False)
            worker.flush(force=not worker.todo)
        worker.flush(force=True)
    finally:
        sock.close(linger=LINGER_MS)
