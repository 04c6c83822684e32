"""``concurrent.futures`` on Fiber: an Executor backed by a :class:`fiber_core.Pool`,
so libraries that take an executor run their work on any backend, with the
pool's retries of tasks whose worker died."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Optional

from fiber_core.pool import IMapIterator, Pool, TimeoutError
from fiber_core.poolworker import STARMAP


class Executor(concurrent.futures.Executor):
    """``concurrent.futures.Executor`` whose calls run in Fiber pool workers.

    A submitted call is running as soon as it is submitted (``cancel()`` returns
    False); ``shutdown(cancel_futures=True)`` stops the workers and fails the
    calls not yet done."""

    def __init__(self, max_workers: Optional[int] = None,
                 initializer: Optional[Callable[..., Any]] = None,
                 initargs: Iterable[Any] = (), max_tasks_per_child: Optional[int] = None,
                 ) -> None:
        self._pool = Pool(max_workers, initializer, initargs, max_tasks_per_child)
        self._shutdown = False
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any,
               **kwargs: Any) -> concurrent.futures.Future:
        """Schedule ``fn(*args, **kwargs)``; return its Future."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future.set_running_or_notify_cancel()
            self._pool.apply_async(fn, args, kwargs, callback=future.set_result,
                                   error_callback=future.set_exception)
        return future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: Optional[float] = None, chunksize: int = 1) -> Iterator[Any]:
        """``map(fn, *iterables)`` in the workers: results in order, drawn lazily;
        TimeoutError if a result is not there ``timeout`` seconds after the call."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            results = self._pool._imap(IMapIterator, fn, zip(*iterables), chunksize, STARMAP)
        deadline = None if timeout is None else time.monotonic() + timeout

        def generate() -> Iterator[Any]:
            while True:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    yield results.next(remaining)
                except StopIteration:
                    return
                except TimeoutError:
                    raise concurrent.futures.TimeoutError from None

        return generate()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submissions; with ``cancel_futures`` stop the workers now,
        else let them finish; with ``wait`` wait for them to exit."""
        with self._lock:
            self._shutdown = True
        if cancel_futures:
            self._pool.terminate()
            return
        self._pool.close()
        if wait:
            self._pool.join()
