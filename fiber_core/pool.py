"""Pool: ``multiprocessing.pool.Pool`` on any backend, and resilient to dying workers.

Workers are Fiber processes (so they run wherever the backend puts them) that
*pull* chunks of work from the pool's dispatcher. Three threads, one per
responsibility, as in CPython's pool, and all failure detection in one place::

    caller        apply_async/map/imap... -> job in _cache, _Feed to the task thread
      |
    task thread   draws chunks from each feed lazily (a window per job bounds
      |           memory), pickles them once -> dispatcher.post(tasks)
      v
    dispatcher    pending chunks --TASKS (a few per worker)--> [ROUTER] ----> worker
    thread        tracks which worker holds which chunk          ^          runs chunks,
                  results -> job._set -> callbacks, get() <--DONE-+--------- batches results
      ^
      | lost(worker): its chunks go back to the queue, run alone;
      |               a chunk charged pool_max_attempts deaths fails
    worker thread starts workers on the first task (sized by the task function's
                  @meta), polls their exit codes, starts replacements,
                  retires them on close/terminate

A worker is sent more chunks while what it holds is expected (from the job's
measured chunk time) to take less than ``PREFETCH_SECONDS``: long tasks go one at a
time, as in multiprocessing, and millisecond tasks stream without round trips.
Until a job's first chunk returns, its chunks go one per worker.
Each result is delivered exactly once: a late duplicate from a chunk that was
re-run is dropped.

**Retries.** When a worker dies (killed, out of memory, its container or pod
deleted) the chunks it held run again on other workers, so tasks must be
idempotent: a task may have started, or even finished, on the worker that died.
``pool_max_attempts`` (default 3; config key, ``FIBER_POOL_MAX_ATTEMPTS``)
bounds how many times a chunk is run before it fails with
:class:`WorkerLostError`; ``pool_max_attempts=1`` turns retries off.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import os
import pickle
import signal
import threading
import time
from collections import OrderedDict, deque
from multiprocessing import TimeoutError
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
)

import cloudpickle
import zmq

from fiber_core import context, poolworker, transport
from fiber_core.meta import ATTRIBUTE, get_meta
from fiber_core.poolworker import (
    APPLY,
    DONE,
    MAP,
    READY,
    STARMAP,
    STOP,
    TASKS,
    MaybeEncodingError,
    Pickler,
    RemoteTraceback,
)
from fiber_core.process import Process

logger = logging.getLogger("fiber")

__all__ = [
    "ApplyResult", "AsyncResult", "IMapIterator", "IMapUnorderedIterator", "MapResult",
    "MaybeEncodingError", "Pool", "RemoteTraceback", "TimeoutError", "WorkerLostError",
]

RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"
PREFETCH_SECONDS = 0.01
"""A worker is given more chunks while those it holds should take less than this."""
PREFETCH_MAX = 128
"""... and at most this many chunks at once."""
DOUBLE_BUFFER_SECONDS = 0.2
"""Chunks up to this long are sent one ahead, hiding the round trip to the master.
The price: at the end of a map a chunk may wait behind another on a busy worker
while an idle one could run it (at most one chunk's time)."""
WINDOW_PER_WORKER = 2 * PREFETCH_MAX
"""imap and map draw at most this many chunks per worker ahead of their consumer."""
FEED_BATCH = 64
FEED_SECONDS = 0.0005
"""The task thread hands chunks over every FEED_BATCH chunks or FEED_SECONDS."""
KNOWN_FUNCTIONS = 32
"""Pickled functions a worker keeps."""
WORKER_POLL = 0.1
"""Seconds between checks of the workers' exit codes."""

_job_counter = itertools.count()
_pool_counter = itertools.count()


class WorkerLostError(RuntimeError):
    """A task's worker died (each time it was tried): which worker, and how."""


def _describe_exit(code: Optional[int]) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


# -- results (the caller's side of a job) -----------------------------------------


class ApplyResult:
    """The result of :meth:`Pool.apply_async` (``AsyncResult``)."""

    def __init__(self, pool: Pool, callback: Optional[Callable[[Any], Any]] = None,
                 error_callback: Optional[Callable[[BaseException], Any]] = None) -> None:
        self._pool: Optional[Pool] = pool
        self._event = threading.Event()
        self._job = next(_job_counter)
        self._cache = pool._cache
        self._callback = callback
        self._error_callback = error_callback
        self._success = False
        self._value: Any = None
        self._cache[self._job] = self

    def ready(self) -> bool:
        """Whether the call has completed."""
        return self._event.is_set()

    def successful(self) -> bool:
        """Whether the call completed without raising; ValueError if not ready."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout: Optional[float] = None) -> None:
        """Wait until the result is available or ``timeout`` seconds pass."""
        self._event.wait(timeout)

    def get(self, timeout: Optional[float] = None) -> Any:
        """The result; re-raises the task's exception (remote traceback as
        ``__cause__``); ``multiprocessing.TimeoutError`` after ``timeout``."""
        self.wait(timeout)
        if not self.ready():
            raise TimeoutError
        if self._success:
            return self._value
        raise self._value

    def _dead(self) -> bool:
        """Whether tasks of this job still pending can be dropped."""
        return self._event.is_set()

    def _finish(self, success: bool, value: Any) -> None:
        self._success, self._value = success, value
        callback = self._callback if success else self._error_callback
        if callback is not None:
            try:
                callback(value)
            except Exception:
                logger.exception("pool: a result callback failed")
        self._event.set()
        self._cache.pop(self._job, None)
        self._pool = None

    def _set(self, index: int, success: bool, value: Any) -> None:
        self._finish(success, value)

    def _abort(self, error: BaseException) -> None:
        if not self.ready():
            self._finish(False, error)


AsyncResult = ApplyResult


class MapResult(ApplyResult):
    """The result of :meth:`Pool.map_async` and :meth:`Pool.starmap_async`."""

    def __init__(self, pool: Pool, chunksize: int, length: int,
                 callback: Optional[Callable[[Any], Any]] = None,
                 error_callback: Optional[Callable[[BaseException], Any]] = None) -> None:
        super().__init__(pool, callback, error_callback)
        self._value = [None] * length
        self._chunksize = chunksize
        if chunksize <= 0:
            self._number_left = 0
            self._success = True
            self._event.set()
            self._cache.pop(self._job, None)
        else:
            self._number_left = length // chunksize + bool(length % chunksize)

    def _set(self, index: int, success: bool, value: Any) -> None:
        if self.ready():
            return
        if not success:
            self._finish(False, value)
            return
        self._value[index * self._chunksize:(index + 1) * self._chunksize] = value
        self._number_left -= 1
        if self._number_left == 0:
            self._finish(True, self._value)


class IMapIterator:
    """The iterator :meth:`Pool.imap` returns: results in order; ``next(timeout)``."""

    def __init__(self, pool: Pool) -> None:
        self._pool: Optional[Pool] = pool
        self._cond = threading.Condition(threading.Lock())
        self._job = next(_job_counter)
        self._cache = pool._cache
        self._items: Deque[Tuple[bool, Any, bool]] = deque()
        self._index = 0
        self._unsorted: Dict[int, Tuple[bool, Any]] = {}
        self._length: Optional[int] = None
        self._release: Callable[[int], None] = lambda count: None
        """Lets the feed draw ``count`` more chunks (set when it is submitted)."""
        self._cache[self._job] = self

    def __iter__(self) -> IMapIterator:
        return self

    def next(self, timeout: Optional[float] = None) -> Any:
        """The next result; ``multiprocessing.TimeoutError`` after ``timeout``."""
        with self._cond:
            if not self._items:
                if self._index == self._length:
                    self._pool = None
                    raise StopIteration
                self._cond.wait_for(lambda: self._items or self._index == self._length,
                                    timeout)
                if not self._items:
                    if self._index == self._length:
                        self._pool = None
                        raise StopIteration
                    raise TimeoutError
            success, value, last = self._items.popleft()
        if last:
            self._release(1)
        if success:
            return value
        raise value

    __next__ = next

    def _dead(self) -> bool:
        return False

    def _push(self, success: bool, value: Any) -> None:
        if success and value:
            self._items.extend((True, item, False) for item in value)
            self._items[-1] = (True, value[-1], True)
        else:
            self._items.append((success, value, True))
        self._index += 1

    def _arrived(self, index: int, success: bool, value: Any) -> None:
        self._unsorted[index] = (success, value)
        while self._index in self._unsorted:
            self._push(*self._unsorted.pop(self._index))

    def _set(self, index: int, success: bool, value: Any) -> None:
        with self._cond:
            self._arrived(index, success, value)
            self._check_complete()
            self._cond.notify()

    def _set_length(self, length: int) -> None:
        with self._cond:
            self._length = length
            self._check_complete()
            self._cond.notify()

    def _check_complete(self) -> None:
        if self._index == self._length:
            self._cache.pop(self._job, None)

    def _abort(self, error: BaseException) -> None:
        with self._cond:
            if self._index != self._length:
                self._unsorted.clear()
                self._items.append((False, error, False))
                self._length = self._index = self._index + 1
                self._check_complete()
            self._cond.notify()


class IMapUnorderedIterator(IMapIterator):
    """The iterator :meth:`Pool.imap_unordered` returns: results as they come."""

    def _arrived(self, index: int, success: bool, value: Any) -> None:
        self._push(success, value)


# -- the task thread: jobs -> pickled chunks ------------------------------------------


class _Feed:
    """One job's chunks, as the task thread draws them."""

    def __init__(self, job: Any, function: Callable[..., Any], style: int,
                 chunks: Iterator[Any], window: int) -> None:
        self.job = job
        self.function = function
        self.style = style
        self.chunks = chunks
        self.credit = window
        self.low = min(window, FEED_BATCH)
        """The task thread waits for this much credit, to draw in batches."""
        self.release_on_delivery = isinstance(job, MapResult)
        """map's window moves on as results arrive; imap's as they are consumed."""
        self.index = 0
        self.key = b""
        self.function_frames: List[transport.Frame] = []
        self.seconds: Optional[float] = None
        """The measured time of a chunk (the dispatcher's estimate)."""


class _Task:
    """One chunk, from its pickling until its result is delivered."""

    __slots__ = ("attempts", "estimate", "feed", "frames", "holder", "id", "index")

    def __init__(self, task_id: int, feed: _Feed, index: int,
                 frames: List[transport.Frame]) -> None:
        self.id = task_id
        self.feed = feed
        self.index = index
        self.frames = frames
        self.attempts = 0
        self.estimate = 0.0
        self.holder: Optional[_Holder] = None


def _chunks(iterable: Iterable[Any], size: int) -> Iterator[List[Any]]:
    iterator = iter(iterable)
    while True:
        chunk = list(itertools.islice(iterator, size))
        if not chunk:
            return
        yield chunk


def _function_key(frames: Sequence[transport.Frame]) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    for frame in frames:
        digest.update(frame)  # type: ignore[arg-type]
    return digest.digest()


class _TaskFeeder:
    """The task thread: turns submitted jobs into pickled chunks for the dispatcher,
    drawing lazily from each job's iterable, at most ``credit`` chunks ahead."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.cond = threading.Condition(threading.Lock())
        self.new: List[_Feed] = []
        self.ids = itertools.count()
        self.pickler = Pickler()
        self.thread = threading.Thread(target=self._run, name="fiber-pool-tasks", daemon=True)

    def submit(self, feed: _Feed) -> None:
        with self.cond:
            self.new.append(feed)
            self.cond.notify()

    def release(self, feed: _Feed, count: int) -> None:
        """Let ``feed`` draw ``count`` more chunks (its consumer took results)."""
        with self.cond:
            feed.credit += count
            if feed.credit >= feed.low > feed.credit - count:
                self.cond.notify()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify()

    def _run(self) -> None:
        feeds: List[_Feed] = []
        while True:
            with self.cond:
                while True:
                    feeds.extend(self.new)
                    self.new.clear()
                    if self.pool._state == TERMINATE:
                        return
                    feeds = [feed for feed in feeds if not feed.job._dead()]
                    grants = [(feed, min(feed.credit, FEED_BATCH))
                              for feed in feeds if feed.credit >= feed.low]
                    if grants:
                        break
                    if self.pool._state != RUN and not feeds:
                        return
                    self.cond.wait()
                for feed, grant in grants:
                    feed.credit -= grant
            for feed, grant in grants:
                unused, more = self._draw(feed, grant)
                if not more:
                    feeds.remove(feed)
                elif unused:
                    self.release(feed, unused)

    def _draw(self, feed: _Feed, grant: int) -> Tuple[int, bool]:
        """Pickle up to ``grant`` chunks of ``feed`` and hand them over; return
        the unused grant and whether the feed has more."""
        dispatcher = self.pool._dispatcher
        if not feed.key:
            try:
                feed.function_frames = transport.dumps(feed.function)
            except Exception as error:
                failure = pickle.PicklingError(
                    f"cannot send {feed.function!r} to the pool's workers: {error}")
                failure.__cause__ = error
                dispatcher.post(lambda: feed.job._abort(failure))
                return grant, False
            feed.key = _function_key(feed.function_frames)
        tasks: List[_Task] = []
        start = time.perf_counter()
        more = True
        while grant and time.perf_counter() - start < FEED_SECONDS:
            index = feed.index
            try:
                chunk = next(feed.chunks)
            except StopIteration:
                more = False
                break
            except Exception as error:  # the caller's iterable failed: its last result
                self._fail(feed, index, error)
                feed.index += 1
                more = False
                break
            feed.index += 1
            grant -= 1
            try:
                frames = self.pickler.dumps(chunk)
            except Exception as error:
                failure = pickle.PicklingError(
                    f"cannot send the arguments of task {index} to a worker: {error}")
                failure.__cause__ = error
                self._fail(feed, index, failure)
                continue
            tasks.append(_Task(next(self.ids), feed, index, frames))
        if tasks:
            dispatcher.post(lambda: dispatcher.add(tasks))
        if not more and isinstance(feed.job, IMapIterator):
            length = feed.index
            dispatcher.post(lambda: feed.job._set_length(length))
        return grant, more

    def _fail(self, feed: _Feed, index: int, error: BaseException) -> None:
        self.pool._dispatcher.post(lambda: feed.job._set(index, False, error))


# -- the dispatcher thread: chunks <-> workers -----------------------------------------


class _Holder:
    """The dispatcher's record of a connected worker."""

    def __init__(self, worker_id: bytes) -> None:
        self.id = worker_id
        self.held: Dict[int, _Task] = {}
        self.seconds = 0.0
        self.assigned = 0
        self.known: OrderedDict[bytes, None] = OrderedDict()
        self.lone = False
        """Holds a chunk whose earlier worker died: it runs alone."""
        self.gone = False
        """Its connection is gone (a send failed): it is sent nothing more, and its
        record stays until it is reported lost, which re-queues what it holds."""

    def drop(self, task: _Task) -> None:
        """``task`` is no longer this worker's."""
        del self.held[task.id]
        self.seconds -= task.estimate
        if not self.held:
            self.lone = False
            self.seconds = 0.0


def _room(holder: _Holder, seconds: Optional[float]) -> bool:
    """Whether ``holder`` may take one more chunk of a job whose chunks take
    ``seconds`` (None: not known yet)."""
    if not holder.held:
        return True
    if seconds is None or len(holder.held) >= PREFETCH_MAX:
        return False
    return (holder.seconds + seconds <= PREFETCH_SECONDS
            or (len(holder.held) == 1 and seconds <= DOUBLE_BUFFER_SECONDS))


class _Dispatcher:
    """The dispatcher thread and its ROUTER socket: hands chunks to workers as
    they can take them, and results to jobs. Other threads talk to it by
    :meth:`post`; its state needs no locks."""

    def __init__(self, pool: Pool) -> None:
        runtime = context.runtime()
        hub = runtime.hub  # also answers the socket's authentication requests
        ctx = transport.context()
        self.pool = pool
        self.max_attempts = max(1, int(runtime.config.get("pool_max_attempts", 3)))
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.router_mandatory = True
        self.sock.sndhwm = self.sock.rcvhwm = 0
        self.address = transport.bind(self.sock, transport.host_of(hub.address),
                                      runtime.secret, runtime.config.get("encrypt"))
        endpoint = f"inproc://fiber-pool-wake-{id(self)}"
        self.wake_in = ctx.socket(zmq.PULL)
        self.wake_in.bind(endpoint)
        self.wake_out = ctx.socket(zmq.PUSH)
        self.wake_out.connect(endpoint)
        self.wake_lock = threading.Lock()
        self.woken = False
        self.closed = False
        self.inbox: Deque[Callable[[], None]] = deque()
        self.pending: Deque[_Task] = deque()
        self.suspects: Deque[_Task] = deque()
        self.tasks: Dict[int, _Task] = {}
        self.workers: Dict[bytes, _Holder] = {}
        self.expected: Set[bytes] = set()
        self.stopping = False
        self.done = False
        self.thread = threading.Thread(target=self._run, name="fiber-pool-results",
                                       daemon=True)

    # -- for other threads ---------------------------------------------------

    def post(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the dispatcher thread soon."""
        self.inbox.append(call)
        if not self.woken:
            self.woken = True
            with self.wake_lock:
                if not self.closed:
                    self.wake_out.send(b"", zmq.NOBLOCK)

    # -- on the dispatcher thread (posted) --------------------------------------

    def add(self, tasks: List[_Task]) -> None:
        for task in tasks:
            self.tasks[task.id] = task
        self.pending.extend(tasks)

    def expect(self, worker_id: bytes) -> None:
        self.expected.add(worker_id)

    def lost(self, worker_id: bytes, name: str, pid: Optional[int],
             exitcode: Optional[int]) -> None:
        """The worker has exited: re-queue (or fail) the chunks it held."""
        self.expected.discard(worker_id)
        holder = self.workers.pop(worker_id, None)
        if holder is None or not holder.held or self.pool._state == TERMINATE:
            return
        logger.warning("pool: worker %s (pid %s) %s holding %d task(s); running them again",
                       name, pid, _describe_exit(exitcode), len(holder.held))
        for task in holder.held.values():
            task.attempts += 1
            task.holder = None
            if task.attempts < self.max_attempts:
                self.suspects.append(task)
                continue
            del self.tasks[task.id]
            error = WorkerLostError(
                f"the worker running this task, {name} (pid {pid}), "
                f"{_describe_exit(exitcode)}; the task was tried {task.attempts} time(s) "
                f"and each time its worker died (pool_max_attempts={self.max_attempts})")
            self._set(task, False, error)

    def stop_workers(self) -> None:
        """Tell every worker to exit once it has finished what it holds."""
        self.stopping = True
        for worker_id in list(self.workers):
            self._send(worker_id, [STOP])

    def finish(self, error: Optional[BaseException]) -> None:
        """The workers are gone: fail what is left (with ``error``) and stop."""
        for job in list(self.pool._cache.values()):
            job._abort(error or RuntimeError("the pool's workers are gone"))
        self.done = True

    # -- the loop ---------------------------------------------------------------

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.wake_in, zmq.POLLIN)
        try:
            while not self.done:
                events = dict(poller.poll())
                if self.wake_in in events:
                    while self.wake_in.poll(0):
                        self.wake_in.recv()
                    self.woken = False
                    while self.inbox:
                        self._call(self.inbox.popleft())
                if self.sock in events:
                    self._receive()
                self._fill()
        finally:
            with self.wake_lock:
                self.closed = True
                for sock in (self.sock, self.wake_in, self.wake_out):
                    sock.close(linger=0)

    @staticmethod
    def _call(call: Callable[[], None]) -> None:
        try:
            call()
        except Exception:
            logger.exception("pool: internal error")

    def _receive(self) -> None:
        for _ in range(100):  # then let posted calls run
            try:
                worker_id, kind, *frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if kind.bytes == DONE:
                self._call(functools.partial(self._results, frames))
            elif kind.bytes == READY:
                self._ready(worker_id.bytes)

    def _ready(self, worker_id: bytes) -> None:
        if worker_id not in self.expected:
            return  # already reported lost
        if self.stopping:
            self._send(worker_id, [STOP])
        else:
            self.workers[worker_id] = _Holder(worker_id)

    def _results(self, frames: List[zmq.Frame]) -> None:
        results, entries = poolworker.unpack(frames)
        released: Dict[_Feed, int] = {}
        for (task_id, ok, seconds), entry in zip(results, entries):
            task = self.tasks.pop(task_id, None)
            if task is None:
                continue  # a late duplicate of a chunk that was run again
            if task.holder is not None:
                task.holder.drop(task)
            feed = task.feed
            feed.seconds = seconds if feed.seconds is None else (
                0.8 * feed.seconds + 0.2 * seconds)
            try:
                value = transport.loads(entry)
            except Exception as error:
                ok, value = False, MaybeEncodingError(repr(error), "a task's result")
            self._set(task, ok, value)
            if feed.release_on_delivery:
                released[feed] = released.get(feed, 0) + 1
        for feed, count in released.items():
            self.pool._feeder.release(feed, count)

    @staticmethod
    def _set(task: _Task, ok: bool, value: Any) -> None:
        try:
            task.feed.job._set(task.index, ok, value)
        except Exception:
            logger.exception("pool: cannot deliver a result")

    def _live(self, queue: Deque[_Task]) -> Optional[_Task]:
        """The first task of ``queue`` still wanted (drop the others)."""
        while queue:
            task = queue[0]
            if task.id in self.tasks and not task.feed.job._dead():
                return task
            queue.popleft()
            self.tasks.pop(task.id, None)
        return None

    def _fill(self) -> None:
        """Hand out pending chunks to the workers that can take them, fairly."""
        if not (self.pending or self.suspects) or not self.workers:
            return
        maxtasks = self.pool._maxtasksperchild
        ready = sorted((holder for holder in self.workers.values()
                        if not (holder.lone or holder.gone
                                or (maxtasks and holder.assigned >= maxtasks))),
                       key=lambda holder: len(holder.held))
        batches: Dict[bytes, List[_Task]] = {}
        for holder in ready:
            if not holder.held and self._live(self.suspects):
                holder.lone = True
                self._assign(holder, self.suspects.popleft(), batches)
        ready = [holder for holder in ready if not holder.lone]
        while ready and self._live(self.pending):
            taking = []
            for holder in ready:
                task = self._live(self.pending)
                if task is None:
                    break
                if (maxtasks and holder.assigned >= maxtasks) or not _room(
                        holder, task.feed.seconds):
                    continue
                self._assign(holder, self.pending.popleft(), batches)
                taking.append(holder)
            ready = taking
        for worker_id, tasks in batches.items():
            self._send_tasks(self.workers[worker_id], tasks)

    @staticmethod
    def _assign(holder: _Holder, task: _Task, batches: Dict[bytes, List[_Task]]) -> None:
        seconds = task.feed.seconds
        task.estimate = PREFETCH_SECONDS if seconds is None else seconds
        task.holder = holder
        holder.held[task.id] = task
        holder.seconds += task.estimate
        holder.assigned += 1
        batches.setdefault(holder.id, []).append(task)

    def _send_tasks(self, holder: _Holder, tasks: List[_Task]) -> None:
        defs, def_frames = [], []
        used = set()
        for task in tasks:
            feed = task.feed
            used.add(feed.key)
            if feed.key in holder.known:
                holder.known.move_to_end(feed.key)
            else:
                holder.known[feed.key] = None
                defs.append(feed.key)
                def_frames.append(feed.function_frames)
        drops = [key for key in holder.known if key not in used][
            :max(0, len(holder.known) - KNOWN_FUNCTIONS)]
        for key in drops:
            del holder.known[key]
        manifest = (defs, drops, [(task.id, task.feed.key, task.feed.style)
                                  for task in tasks])
        if not self._send(holder.id, poolworker.pack(
                TASKS, manifest, [*def_frames, *(task.frames for task in tasks)])):
            # It is going away and is reported lost soon: take this batch back,
            # uncharged (it never got it), and send it nothing more. Keep its record,
            # though: lost() must still re-queue the chunks it was sent before. (A
            # worker that dies just after sending a result holds its next chunk; the
            # dispatcher, reading that result late, refills the worker, the send fails,
            # and forgetting the worker here lost that next chunk for good.)
            holder.gone = True
            for task in reversed(tasks):
                holder.drop(task)
                task.holder = None
                (self.suspects if task.attempts else self.pending).appendleft(task)

    def _send(self, worker_id: bytes, frames: List[transport.Frame]) -> bool:
        try:
            self.sock.send_multipart([worker_id, *frames], copy=False)
            return True
        except zmq.ZMQError as error:
            if error.errno != zmq.EHOSTUNREACH:
                raise
            return False


# -- the pool ---------------------------------------------------------------------------


class Pool:
    """A pool of worker processes on the configured backend, with the
    ``multiprocessing.pool.Pool`` interface.

    ``processes`` defaults to the CPU count. Workers start with the first task;
    the ``@fiber_core.meta`` hints of its function size their jobs. Workers that
    die are replaced and their tasks run again (see the module's notes on retries).
    """

    def __init__(self, processes: Optional[int] = None,
                 initializer: Optional[Callable[..., Any]] = None, initargs: Iterable[Any] = (),
                 maxtasksperchild: Optional[int] = None) -> None:
        self._state = RUN
        if processes is None:
            processes = os.cpu_count() or 1
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None and (
                not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        try:
            self._setup = cloudpickle.dumps((initializer, tuple(initargs)))
        except Exception as error:
            raise pickle.PicklingError(
                f"cannot send the initializer and its arguments to workers: {error}") from error
        self._processes = processes
        self._maxtasksperchild = maxtasksperchild
        self._cache: Dict[int, Any] = {}
        self._id = next(_pool_counter)
        self._workers: Dict[bytes, Process] = {}
        self._worker_ids = itertools.count(1)
        self._hints: Optional[Dict[str, Any]] = None
        self._lock = threading.Lock()
        self._workers_changed = threading.Event()
        self._dispatcher = _Dispatcher(self)
        self._feeder = _TaskFeeder(self)
        self._worker_handler = threading.Thread(target=self._handle_workers,
                                                name="fiber-pool-workers", daemon=True)
        self._threads = (self._dispatcher.thread, self._feeder.thread, self._worker_handler)
        for thread in self._threads:
            thread.start()
        context.runtime().at_close(self.terminate)

    # -- submitting -----------------------------------------------------------

    def _check_running(self) -> None:
        if self._state != RUN:
            raise ValueError("Pool not running")

    def _submit(self, job: Any, function: Callable[..., Any], style: int,
                chunks: Iterator[Any], window: int) -> None:
        if not callable(function):
            raise TypeError(f"{function!r} is not callable")
        with self._lock:
            if self._hints is None:
                self._hints = get_meta(function)
                self._workers_changed.set()
        feed = _Feed(job, function, style, chunks, window)
        if isinstance(job, IMapIterator):
            job._release = functools.partial(self._feeder.release, feed)
        self._feeder.submit(feed)

    def _window(self) -> int:
        return self._processes * WINDOW_PER_WORKER

    def apply_async(self, func: Callable[..., Any], args: Iterable[Any] = (),
                    kwds: Optional[Dict[str, Any]] = None,
                    callback: Optional[Callable[[Any], Any]] = None,
                    error_callback: Optional[Callable[[BaseException], Any]] = None,
                    ) -> ApplyResult:
        """Run ``func(*args, **kwds)`` in a worker; return its AsyncResult."""
        self._check_running()
        result = ApplyResult(self, callback, error_callback)
        self._submit(result, func, APPLY, iter([(tuple(args), dict(kwds or {}))]), 1)
        return result

    def apply(self, func: Callable[..., Any], args: Iterable[Any] = (),
              kwds: Optional[Dict[str, Any]] = None) -> Any:
        """``func(*args, **kwds)``, run in a worker."""
        return self.apply_async(func, args, kwds).get()

    def _map_async(self, func: Callable[..., Any], iterable: Iterable[Any], style: int,
                   chunksize: Optional[int], callback: Optional[Callable[[Any], Any]],
                   error_callback: Optional[Callable[[BaseException], Any]]) -> MapResult:
        self._check_running()
        items = iterable if hasattr(iterable, "__len__") else list(iterable)
        length = len(items)  # type: ignore[arg-type]
        if chunksize is None:
            chunksize, extra = divmod(length, self._processes * 4)
            chunksize += bool(extra)
        elif chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        result = MapResult(self, chunksize if length else 0, length, callback, error_callback)
        if length:
            self._submit(result, func, style, _chunks(items, chunksize), self._window())
        return result

    def map_async(self, func: Callable[..., Any], iterable: Iterable[Any],
                  chunksize: Optional[int] = None,
                  callback: Optional[Callable[[Any], Any]] = None,
                  error_callback: Optional[Callable[[BaseException], Any]] = None,
                  ) -> MapResult:
        """Asynchronous :meth:`map`."""
        return self._map_async(func, iterable, MAP, chunksize, callback, error_callback)

    def map(self, func: Callable[..., Any], iterable: Iterable[Any],
            chunksize: Optional[int] = None) -> List[Any]:
        """``list(map(func, iterable))``, in chunks of ``chunksize`` items."""
        return self.map_async(func, iterable, chunksize).get()

    def starmap_async(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                      chunksize: Optional[int] = None,
                      callback: Optional[Callable[[Any], Any]] = None,
                      error_callback: Optional[Callable[[BaseException], Any]] = None,
                      ) -> MapResult:
        """Asynchronous :meth:`starmap`."""
        return self._map_async(func, iterable, STARMAP, chunksize, callback, error_callback)

    def starmap(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                chunksize: Optional[int] = None) -> List[Any]:
        """``[func(*args) for args in iterable]``."""
        return self.starmap_async(func, iterable, chunksize).get()

    def _imap(self, cls: type, func: Callable[..., Any], iterable: Iterable[Any],
              chunksize: int, style: int = MAP) -> IMapIterator:
        self._check_running()
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        result: IMapIterator = cls(self)
        self._submit(result, func, style, _chunks(iterable, chunksize), self._window())
        return result

    def imap(self, func: Callable[..., Any], iterable: Iterable[Any],
             chunksize: int = 1) -> IMapIterator:
        """Lazy :meth:`map`: results in order, drawing from ``iterable`` (which may be
        endless) only as far ahead of the consumer as the pool's workers need."""
        return self._imap(IMapIterator, func, iterable, chunksize)

    def imap_unordered(self, func: Callable[..., Any], iterable: Iterable[Any],
                       chunksize: int = 1) -> IMapIterator:
        """As :meth:`imap`, with results in the order they complete."""
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize)

    # -- the workers ----------------------------------------------------------------

    @property
    def _pool(self) -> List[Process]:
        """The worker processes (started or running)."""
        return list(self._workers.values())

    def _start_worker(self) -> None:
        number = next(self._worker_ids)
        worker_id = f"{self._id}-{number}".encode()
        target = functools.partial(poolworker.run, self._dispatcher.address, worker_id,
                                   self._setup, self._maxtasksperchild or 0)
        setattr(target, ATTRIBUTE, self._hints)
        process = Process(target=target, name=f"PoolWorker-{self._id}.{number}", daemon=True)
        self._dispatcher.post(lambda: self._dispatcher.expect(worker_id))
        process.start()
        self._workers[worker_id] = process

    def _reap(self) -> None:
        for worker_id, process in list(self._workers.items()):
            code = process.exitcode
            if code is None:
                continue
            del self._workers[worker_id]
            self._dispatcher.post(functools.partial(
                self._dispatcher.lost, worker_id, process.name, process.pid, code))

    def _handle_workers(self) -> None:
        """The worker thread: keep ``processes`` workers while there is work,
        then retire them and let the dispatcher finish."""
        error: Optional[BaseException] = None
        try:
            while self._state == RUN or (self._state == CLOSE and self._cache):
                self._reap()
                if self._hints is not None:
                    while len(self._workers) < self._processes and self._state != TERMINATE:
                        self._start_worker()
                self._workers_changed.wait(WORKER_POLL)
                self._workers_changed.clear()
        except Exception as failure:
            logger.exception("pool: cannot start a worker")
            error, self._state = failure, TERMINATE
        if self._state == TERMINATE:
            error = error or RuntimeError("the pool was terminated before this task finished")
            for process in self._pool:
                process.terminate()
        else:
            self._dispatcher.post(self._dispatcher.stop_workers)
        for process in self._pool:
            process.join(5 if self._state == TERMINATE else None)
            if process.exitcode is None:
                process.kill()
                process.join()
        self._reap()
        self._dispatcher.post(lambda: self._dispatcher.finish(error))
        self._feeder.wake()

    # -- closing --------------------------------------------------------------------

    def close(self) -> None:
        """Accept no more tasks; workers exit once the outstanding ones are done."""
        if self._state == RUN:
            self._state = CLOSE
            self._feeder.wake()
            self._workers_changed.set()

    def terminate(self) -> None:
        """Stop the workers now; tasks not yet done fail."""
        self._state = TERMINATE
        self._feeder.wake()
        self._workers_changed.set()
        if threading.current_thread() not in self._threads:
            self.join()

    def join(self) -> None:
        """Wait for the workers to exit (after :meth:`close` or :meth:`terminate`)."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.terminate()

    def __reduce__(self) -> Any:
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled")

    def __repr__(self) -> str:
        return (f"<{type(self).__module__}.{type(self).__qualname__} "
                f"state={self._state} pool_size={len(self._workers)}>")
