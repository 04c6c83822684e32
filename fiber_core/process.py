"""Process and friends, shaped like ``multiprocessing.process``.

Starting a process pickles it (cloudpickle), asks the backend to spawn a job
running ``python -m fiber_core.worker``, and waits for nothing: the worker
connects back to this process's hub, proves it holds the run's secret, fetches
the pickled process (``hello``), runs it and reports its exit (``exit``).
Exit codes come from the backend (``poll``), so death by signal shows as -N.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from fiber_core import context, hookspecs, transport
from fiber_core.hub import Hub, Request
from fiber_core.meta import get_meta

logger = logging.getLogger("fiber")

HELLO = b"hello"
EXIT = b"exit"
ADDRESS_ENV = "FIBER_WORKER_ADDRESS"
KEY_ENV = "FIBER_WORKER_KEY"
WORKER_COMMAND = ("-m", "fiber_core.worker")


@dataclass
class Payload:
    """What a new worker learns of its run before it unpickles its process
    (which may need the parent's ``sys.path``)."""

    config: Dict[str, Any]
    run_id: str
    identity: Tuple[int, ...]
    sys_path: List[str]
    parent: Tuple[str, Optional[int], str]
    """The parent's name, pid and hub address."""


@dataclass
class _Child:
    """The hub's record of a started child."""

    name: str
    payload: Optional[List[transport.Frame]]
    connected: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    pid: Optional[int] = None


class Children:
    """Hub service: hands each new worker its payload and hears its exit."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.records: Dict[bytes, _Child] = {}
        hub.handle(HELLO, self._hello)
        hub.handle(EXIT, self._exit)

    def expect(self, name: str, payload: List[transport.Frame]) -> Tuple[bytes, _Child]:
        key = uuid.uuid4().hex.encode()
        record = self.records[key] = _Child(name, payload)
        return key, record

    def _hello(self, request: Request) -> None:
        key, pid, version = (frame.bytes for frame in request.args)
        record = self.records.get(key)
        if record is None or record.payload is None:
            self.hub.reply(request, b"no", b"this parent did not start a process with that key")
            return
        if version.decode() != transport.python_version():
            message = (f"{record.name} runs Python {version.decode()} but its parent runs "
                       f"Python {transport.python_version()}; cloudpickle needs the same "
                       "minor version at both ends: use an image or interpreter with "
                       f"Python {transport.python_version()}")
            logger.error(message)
            self.hub.reply(request, b"no", message.encode())
            return
        if self.hub.reply(request, b"ok", *record.payload):
            record.payload = None
            record.pid = int(pid)
            record.connected.set()

    def _exit(self, request: Request) -> None:
        record = self.records.pop(request.args[0].bytes, None)
        if record is not None:
            record.ended.set()
        self.hub.reply(request, b"ok")


class Popen:
    """A started child: the backend's job plus what the hub knows of it."""

    def __init__(self, process: BaseProcess) -> None:
        runtime = context.runtime()
        self.backend = runtime.backend
        hub = runtime.hub
        payload = Payload({**runtime.config.explicit, "backend": self.backend.name},
                          runtime.run_id, process._identity, list(sys.path),
                          (current_process().name, os.getpid(), hub.address))
        try:
            frames = [pickle.dumps(payload), *transport.dumps(process)]
        except Exception as error:
            raise pickle.PicklingError(
                f"cannot send {process.name} to its new process: {error}") from error
        runtime.at_close(end_children)
        key, self.record = hub.service(Children).expect(process.name, frames)
        hints = get_meta(process._target) or get_meta(getattr(type(process), "run", None))
        spec = hookspecs.JobSpec(
            command=(sys.executable, *WORKER_COMMAND),
            env={ADDRESS_ENV: hub.address, KEY_ENV: key.decode()},
            secret=runtime.secret, name=process.name, run_id=runtime.run_id,
            image=runtime.config.get("image"), cpu=hints.get("cpu"),
            memory=hints.get("memory"), gpu=hints.get("gpu"))
        self.job: hookspecs.Job = self.backend.hook.spawn(spec=spec, config=runtime.config)
        self.returncode: Optional[int] = None
        timeout = runtime.config.start_timeout
        hub.post(lambda: self._watch_start(hub, timeout))

    @property
    def pid(self) -> Optional[int]:
        return self.job.pid if self.job.pid is not None else self.record.pid

    def _watch_start(self, hub: Hub, timeout: float) -> None:
        hub.at(time.monotonic() + timeout, self._check_started)

    def _check_started(self) -> None:
        if not self.record.connected.is_set() and self.poll() is None:
            logger.error("%s did not connect back within start_timeout; killing it",
                         self.record.name)
            self.kill()

    def poll(self) -> Optional[int]:
        """The exit code, or None while the job runs."""
        if self.returncode is None:
            self.returncode = self.backend.hook.poll(job=self.job)
            if self.returncode and self.returncode > 0 and not self.record.connected.is_set():
                self._report_early_exit(self.returncode)
        return self.returncode

    def _report_early_exit(self, code: int) -> None:
        output = self.backend.hook.job_output(job=self.job)
        logger.error("%s (job %s) exited with code %d before connecting back to its "
                     "parent%s", self.record.name, self.job.id, code,
                     f"; its last output:\n{output}" if output else "")

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Wait up to ``timeout`` seconds (None: for ever) for the exit code."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while self.poll() is None:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            step = delay if remaining is None else min(delay, remaining)
            if self.record.ended.is_set():
                time.sleep(min(step, 0.005))  # it said goodbye: the exit is imminent
            else:
                self.record.ended.wait(step)
            delay = min(delay * 2, 0.05)
        return self.returncode

    def terminate(self) -> None:
        if self.poll() is None:
            self.backend.hook.terminate(job=self.job, force=False)

    def kill(self) -> None:
        if self.poll() is None:
            self.backend.hook.terminate(job=self.job, force=True)


class BaseProcess:
    """A process running ``target(*args, **kwargs)`` (or an overridden ``run``)
    on the configured backend, with the ``multiprocessing.Process`` interface."""

    def __init__(self, group: None = None, target: Optional[Callable[..., Any]] = None,
                 name: Optional[str] = None, args: Iterable[Any] = (),
                 kwargs: Optional[Mapping[str, Any]] = None, *,
                 daemon: Optional[bool] = None) -> None:
        assert group is None, "group argument must be None for now"
        self._target: Optional[Callable[..., Any]]
        self._started_children: int
        parent = current_process()
        parent._started_children += 1
        self._identity: Tuple[int, ...] = (*parent._identity, parent._started_children)
        self._target = target
        self._args = tuple(args)
        self._kwargs = dict(kwargs or {})
        self._name = name or (type(self).__name__ + "-"
                              + ":".join(str(i) for i in self._identity))
        self._daemonic = parent.daemon if daemon is None else bool(daemon)
        self._parent_pid = os.getpid()
        self._parent_name = parent.name
        self._popen: Optional[Popen] = None
        self._closed = False
        self._started_children = 0

    def run(self) -> None:
        """The process's activity: calls the target (override in a subclass)."""
        if self._target:
            self._target(*self._args, **self._kwargs)

    def start(self) -> None:
        """Start the process on the backend."""
        self._check_closed()
        assert self._popen is None, "cannot start a process twice"
        assert self._parent_pid == os.getpid(), \
            "can only start a process object created by current process"
        _reap()
        self._popen = Popen(self)
        _children.add(self)

    def join(self, timeout: Optional[float] = None) -> None:
        """Wait until the process ends, or ``timeout`` seconds pass."""
        self._check_closed()
        assert self._parent_pid == os.getpid(), "can only join a child process"
        assert self._popen is not None, "can only join a started process"
        if self._popen.wait(timeout) is not None:
            _children.discard(self)

    def is_alive(self) -> bool:
        """True from ``start()`` until the process ends."""
        self._check_closed()
        if self is _current_process:
            return True
        assert self._parent_pid == os.getpid(), "can only test a child process"
        if self._popen is None:
            return False
        if self._popen.poll() is None:
            return True
        _children.discard(self)
        return False

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM or the backend's graceful stop)."""
        self._check_closed()
        if self._popen is not None:
            self._popen.terminate()

    def kill(self) -> None:
        """Stop the process now (SIGKILL)."""
        self._check_closed()
        if self._popen is not None:
            self._popen.kill()

    def close(self) -> None:
        """Release the process object; ValueError if it still runs."""
        if self._popen is not None:
            if self._popen.poll() is None:
                raise ValueError("Cannot close a process while it is still running. "
                                 "You should first call join() or terminate().")
            self._popen = None
            _children.discard(self)
        self._closed = True

    def _check_closed(self) -> None:
        if self._closed:
            raise ValueError("process object is closed")

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        assert isinstance(name, str), "name must be a string"
        self._name = name

    @property
    def daemon(self) -> bool:
        """Whether the process is ended (not waited for) when its parent exits."""
        return self._daemonic

    @daemon.setter
    def daemon(self, daemonic: bool) -> None:
        assert self._popen is None, "process has already started"
        self._daemonic = bool(daemonic)

    @property
    def exitcode(self) -> Optional[int]:
        """The exit code: None while running, -N if killed by signal N."""
        self._check_closed()
        return None if self._popen is None else self._popen.poll()

    @property
    def pid(self) -> Optional[int]:
        """The OS process id where the backend can see it, else the worker's own."""
        self._check_closed()
        if self is _current_process:
            return os.getpid()
        return None if self._popen is None else self._popen.pid

    ident = pid

    def __getstate__(self) -> Dict[str, Any]:
        return {**self.__dict__, "_popen": None}

    def __repr__(self) -> str:
        if self is _current_process:
            status = "started"
        elif self._closed:
            status = "closed"
        elif self._popen is None:
            status = "initial"
        else:
            code = self._popen.poll()
            status = "started" if code is None else "stopped"
        info = [type(self).__name__, f"name={self._name!r}"]
        if self._popen is not None and self._popen.pid is not None:
            info.append(f"pid={self._popen.pid}")
        info.append(f"parent={self._parent_pid}")
        info.append(status)
        if self._popen is not None and self._popen.returncode is not None:
            info.append(f"exitcode={self._popen.returncode}")
        if self._daemonic:
            info.append("daemon")
        return "<" + " ".join(info) + ">"

    def _bootstrap(self) -> int:
        """Run in the worker: call ``run()`` and turn its outcome into an exit code."""
        global _current_process
        _current_process = self
        try:
            self.run()
            exitcode = 0
        except SystemExit as error:
            if error.code is None:
                exitcode = 0
            elif isinstance(error.code, int):
                exitcode = error.code
            else:
                sys.stderr.write(str(error.code) + "\n")
                exitcode = 1
        except BaseException:
            exitcode = 1
            sys.stderr.write(f"Process {self.name}:\n")
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        return exitcode


class Process(BaseProcess):
    """The public process class (as ``multiprocessing.Process``)."""


class _MainProcess(BaseProcess):
    """The process the user started: the root of the run."""

    def __init__(self) -> None:
        self._identity = ()
        self._name = "MainProcess"
        self._daemonic = False
        self._parent_pid = None  # type: ignore[assignment]
        self._parent_name = None  # type: ignore[assignment]
        self._popen = None
        self._closed = False
        self._started_children = 0
        self._target = None
        self._args = ()
        self._kwargs = {}


class _ParentProcess:
    """What a worker knows of the process that started it."""

    def __init__(self, name: str, pid: Optional[int], address: str) -> None:
        self.name = name
        self.pid = self.ident = pid
        self.address = address
        self.daemon = False

    def is_alive(self) -> bool:
        peer = context.runtime().peers.get(self.address)
        return not peer.lost

    def join(self, timeout: Optional[float] = None) -> None:
        """Wait until the parent is gone (or ``timeout`` seconds pass)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_alive() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.1)

    def __repr__(self) -> str:
        return f"<_ParentProcess name={self.name!r} parent={self.pid} unknown>"


_current_process: BaseProcess = _MainProcess()
_parent_process: Optional[_ParentProcess] = None
_children: Set[BaseProcess] = set()


def current_process() -> BaseProcess:
    """The Process object of the calling process."""
    return _current_process


def parent_process() -> Optional[_ParentProcess]:
    """The parent of this process, or None in the main process."""
    return _parent_process


def _reap() -> None:
    for child in list(_children):
        if child._popen is None or child._popen.poll() is not None:
            _children.discard(child)


def active_children() -> List[BaseProcess]:
    """The children of this process that are still running."""
    _reap()
    return list(_children)


def end_children() -> None:
    """At exit (as multiprocessing does): terminate daemonic children, then wait
    for all of them."""
    for child in active_children():
        if child.daemon and child._popen is not None:
            child._popen.terminate()
    for child in active_children():
        if child._popen is not None:
            child._popen.wait()


def kill_children() -> None:
    """Kill every running child at once (when this process is about to vanish)."""
    for child in active_children():
        if child._popen is not None:
            child._popen.kill()


def set_worker_identity(process: BaseProcess, parent: _ParentProcess) -> None:
    """Make ``process`` the current process of this worker."""
    global _current_process, _parent_process
    _current_process = process
    _parent_process = parent
