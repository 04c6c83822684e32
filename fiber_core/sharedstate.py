"""Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event, Barrier, Value,
Array and JoinableQueue, with ``multiprocessing``'s signatures and errors.

Each process that creates one of these starts, on first use, a manager server
in a thread of its own (:meth:`fiber_core.managers.BaseManager.serve_in_thread`)
listening where its backend's jobs can reach it; the objects live there and
every process of the run uses them through proxies. As with queues, the
creating process must outlive the processes that use what it created.

The server-side :class:`SemLock` gives locks and semaphores the semantics of
``multiprocessing.synchronize``: releasing an unlocked Lock or over-releasing a
BoundedSemaphore raises ValueError, releasing an RLock that this thread does not
own raises AssertionError. The owner of a lock is the calling thread of the
calling process (each gets a server thread of its own).
"""

from __future__ import annotations

import queue
import threading
from multiprocessing import managers as _managers
from multiprocessing import sharedctypes
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union, cast

from fiber_core.managers import BaseManager, FiberProxy, referent, run_authkey

managers: Any = _managers  # typeshed describes little of what subclasses use
typecode_to_type: Dict[str, Any] = sharedctypes.typecode_to_type  # type: ignore[attr-defined]

_SEM_VALUE_MAX = 2 ** 31 - 1


class SemLock:
    """Server side of Lock, RLock, Semaphore and BoundedSemaphore."""

    def __init__(self, value: int = 1, maxvalue: int = _SEM_VALUE_MAX,
                 recursive: bool = False) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self._cond = threading.Condition(threading.Lock())
        self._value = value
        self._maxvalue = maxvalue
        self._recursive = recursive
        self._owner: Optional[int] = None
        self._count = 0

    def acquire(self, block: bool = True, timeout: Optional[float] = None) -> bool:
        me = threading.get_ident()
        with self._cond:
            if self._recursive and self._owner == me:
                self._count += 1
                return True
            wait = 0.0 if not block else None if timeout is None else max(0.0, timeout)
            if not self._cond.wait_for(lambda: self._value > 0, wait):
                return False
            self._value -= 1
            self._owner, self._count = me, 1
            return True

    def release(self) -> None:
        with self._cond:
            if self._recursive:
                if self._owner != threading.get_ident() or not self._count:
                    raise AssertionError("attempt to release recursive lock not owned by thread")
                self._count -= 1
                if self._count:
                    return
            elif self._value >= self._maxvalue:
                raise ValueError("semaphore or lock released too many times")
            self._owner, self._count = None, 0
            self._value += 1
            self._cond.notify()

    def get_value(self) -> int:
        return self._value

    # What threading.Condition uses of its lock (an RLock is released fully in wait).
    def _is_owned(self) -> bool:
        return self._count > 0 and self._owner == threading.get_ident()

    def _release_save(self) -> int:
        count, self._count = self._count, 1
        self.release()
        return count

    def _acquire_restore(self, count: int) -> None:
        self.acquire()
        self._count = count


class Synchronized:
    """Server side of Value and Array: a ctypes object and the lock guarding it."""

    def __init__(self, obj: Any, lock: Any) -> None:
        self._obj = obj
        self._lock = lock

    def get_lock(self) -> Any:
        return self._lock

    def acquire(self, *args: Any) -> bool:
        return bool(self._lock.acquire(*args))

    def release(self) -> None:
        self._lock.release()

    def get_value(self) -> Any:
        return self._obj.value

    def set_value(self, value: Any) -> None:
        self._obj.value = value

    def get_raw(self) -> bytes:
        return bytes(self._obj.raw)

    def set_raw(self, value: bytes) -> None:
        self._obj.raw = value

    def __len__(self) -> int:
        return len(self._obj)

    def __getitem__(self, index: Any) -> Any:
        return self._obj[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        self._obj[index] = value

    def __repr__(self) -> str:
        return f"<Synchronized wrapper for {self._obj!r}>"


def _ctype(typecode_or_type: Any) -> Any:
    return typecode_to_type.get(typecode_or_type, typecode_or_type)


def _lock_for(lock: Any) -> Any:
    if lock is True or lock is False:  # lock=False still gets one: the object is shared
        return SemLock(recursive=True)
    if not hasattr(lock, "acquire"):
        raise AttributeError(f"{lock!r} has no method 'acquire'")
    return referent(lock)


def _value(typecode_or_type: Any, *args: Any, lock: Any = True) -> Synchronized:
    return Synchronized(_ctype(typecode_or_type)(*args), _lock_for(lock))


def _array(typecode_or_type: Any, size_or_initializer: Union[int, Iterable[Any]],
           lock: Any = True) -> Synchronized:
    type_ = _ctype(typecode_or_type)
    if isinstance(size_or_initializer, int):
        obj = (type_ * size_or_initializer)()
    else:
        values = list(size_or_initializer)
        obj = (type_ * len(values))(*values)
    return Synchronized(obj, _lock_for(lock))


def _condition(lock: Any = None) -> threading.Condition:
    return threading.Condition(cast(Any, SemLock(recursive=True) if lock is None
                                       else referent(lock)))


class SemLockProxy(FiberProxy):
    _exposed_: Tuple[str, ...] = ("acquire", "release", "get_value")

    def acquire(self, block: bool = True, timeout: Optional[float] = None) -> bool:
        return bool(self._callmethod("acquire", (block, timeout)))

    def release(self) -> None:
        self._callmethod("release")

    def get_value(self) -> int:
        return int(self._callmethod("get_value"))

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


class ConditionProxy(SemLockProxy, managers.ConditionProxy):
    _exposed_ = ("acquire", "release", "wait", "notify", "notify_all")


class SynchronizedProxy(SemLockProxy):
    """A shared ctypes value (as ``multiprocessing.Value``)."""

    _exposed_ = ("acquire", "release", "get_lock", "get_value", "set_value", "get_raw",
                 "set_raw", "__len__", "__getitem__", "__setitem__")
    _method_to_typeid_ = {"get_lock": "SemLock"}

    def get_lock(self) -> SemLockProxy:
        return self._callmethod("get_lock")

    @property
    def value(self) -> Any:
        return self._callmethod("get_value")

    @value.setter
    def value(self, value: Any) -> None:
        self._callmethod("set_value", (value,))


class SynchronizedArrayProxy(SynchronizedProxy):
    """A shared ctypes array (as ``multiprocessing.Array``)."""

    @property
    def raw(self) -> bytes:
        return self._callmethod("get_raw")

    @raw.setter
    def raw(self, value: bytes) -> None:
        self._callmethod("set_raw", (value,))

    def __len__(self) -> int:
        return int(self._callmethod("__len__"))

    def __getitem__(self, index: Any) -> Any:
        return self._callmethod("__getitem__", (index,))

    def __setitem__(self, index: Any, value: Any) -> None:
        self._callmethod("__setitem__", (index, value))


_QueueBase: Any = managers.MakeProxyType("_QueueBase", (
    "put", "get", "put_nowait", "get_nowait", "task_done", "join", "qsize", "empty",
    "full"))


class JoinableQueueProxy(FiberProxy, _QueueBase):
    """A shared queue with task_done and join (as ``multiprocessing.JoinableQueue``)."""

    def close(self) -> None:
        """Accepted for compatibility: puts are synchronous."""

    def join_thread(self) -> None:
        """Puts are synchronous: nothing to wait for."""

    def cancel_join_thread(self) -> None:
        """Puts are synchronous: nothing to cancel."""


class SharedState(BaseManager):
    """The manager of this module's objects, served from the creating process."""

    _registry: dict = {}


_TYPES: List[Tuple[str, Callable[..., Any], type]] = [
        ("Lock", lambda: SemLock(1, 1), SemLockProxy),
        ("RLock", lambda: SemLock(recursive=True), SemLockProxy),
        ("Semaphore", SemLock, SemLockProxy),
        ("BoundedSemaphore", lambda value=1: SemLock(value, value), SemLockProxy),
        ("Condition", _condition, ConditionProxy),
        ("Event", threading.Event, managers.EventProxy),
        ("Barrier", threading.Barrier, managers.BarrierProxy),
        ("Value", _value, SynchronizedProxy),
        ("Array", _array, SynchronizedArrayProxy),
        ("JoinableQueue", queue.Queue, JoinableQueueProxy)]
for _typeid, _factory, _proxytype in _TYPES:
    SharedState.register(_typeid, _factory, _proxytype)
SharedState.register("SemLock", proxytype=SemLockProxy, create_method=False)

_lock = threading.Lock()
_manager: Optional[SharedState] = None
_manager_key: bytes = b""


def _shared() -> SharedState:
    """This process's SharedState manager, serving from a thread (started on first use)."""
    global _manager, _manager_key
    with _lock:
        key = run_authkey()
        if _manager is None or _manager_key != key:  # none yet, or a new run
            _manager, _manager_key = SharedState(), key
            _manager.serve_in_thread()
        return _manager


def _make(typeid: str) -> Callable[..., Any]:
    return getattr(_shared(), typeid)


def Lock() -> SemLockProxy:
    """A non-recursive lock (as ``multiprocessing.Lock``)."""
    return _make("Lock")()


def RLock() -> SemLockProxy:
    """A recursive lock (as ``multiprocessing.RLock``)."""
    return _make("RLock")()


def Semaphore(value: int = 1) -> SemLockProxy:
    """A semaphore (as ``multiprocessing.Semaphore``)."""
    return _make("Semaphore")(value)


def BoundedSemaphore(value: int = 1) -> SemLockProxy:
    """A bounded semaphore (as ``multiprocessing.BoundedSemaphore``)."""
    return _make("BoundedSemaphore")(value)


def Condition(lock: Optional[SemLockProxy] = None) -> ConditionProxy:
    """A condition variable (as ``multiprocessing.Condition``)."""
    return _make("Condition")(lock)


def Event() -> Any:
    """An event (as ``multiprocessing.Event``)."""
    return _make("Event")()


def Barrier(parties: int, action: Optional[Callable[[], Any]] = None,
            timeout: Optional[float] = None) -> Any:
    """A barrier (as ``multiprocessing.Barrier``); ``action`` runs in the
    creating process."""
    return _make("Barrier")(parties, action, timeout)


def Value(typecode_or_type: Any, *args: Any, lock: Any = True) -> SynchronizedProxy:
    """A shared ctypes value with a lock (as ``multiprocessing.Value``)."""
    return _make("Value")(typecode_or_type, *args, lock=lock)


def Array(typecode_or_type: Any, size_or_initializer: Union[int, Iterable[Any]], *,
          lock: Any = True) -> SynchronizedArrayProxy:
    """A shared ctypes array with a lock (as ``multiprocessing.Array``)."""
    return _make("Array")(
        typecode_or_type, size_or_initializer, lock=lock)


def JoinableQueue(maxsize: int = 0) -> JoinableQueueProxy:
    """A queue with task_done and join (as ``multiprocessing.JoinableQueue``)."""
    return _make("JoinableQueue")(maxsize)

