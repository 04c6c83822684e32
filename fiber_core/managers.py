"""Managers: shared objects served by one process of the run, on any backend.

Built on ``multiprocessing.managers`` (its Server, registry and proxies), with
four changes that make it work between Fiber processes wherever they run::

    master                                    manager process (a Fiber Process)
    ──────                                    ─────────────────────────────────
    Manager() ── Process(_serve).start() ──►  Server(registry) listening at the
        ◄──────── its address, over a Pipe ──  backend's master_address, port 0
    proxy.method() ── TCP, HMAC(authkey) ──►  referent.method() in a server thread
    child/grandchild: a proxy arrives (cloudpickle), reconnects with the same
    authkey, derived from the run's secret, which every Fiber process holds

1. ``start()`` launches the server through :class:`fiber_core.Process`, so it
   runs on the selected backend, and the server binds where that backend's jobs
   can reach it.
2. The authkey is derived from the run's secret instead of taken from
   ``multiprocessing.current_process()``: every process of the run can
   authenticate, strangers cannot.
3. Proxies (:class:`FiberProxy`) pickle as *manager class + token*: a process
   that receives one rebuilds it with the authkey and the manager's registry, so
   proxies travel to any process (as Process arguments, through queues or other
   proxies), and methods returning proxies work there too.
4. Connections pickle with cloudpickle (the ``"fiber"`` serializer), so objects
   of classes defined in ``__main__`` travel by value, as they do to Processes;
   a lost server raises :class:`ManagerLost` rather than a bare socket error.

:class:`AsyncManager` proxies send a call and return a :class:`Reply` at once
(``.get()`` waits), so many managers work in parallel; calls on one connection
are pipelined and answered in order. Special methods (``len(p)``, ``p[k]``,
attribute access of a Namespace) and ``with`` blocks still wait.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import queue
import socket
import sys
import threading
import time
from collections import deque
from multiprocessing import ProcessError, connection, util
from multiprocessing import managers as _managers
from multiprocessing import process as _process
from typing import Any, Callable, Deque, Dict, Optional, Sequence, Tuple, Type, cast

import cloudpickle

from fiber_core import context
from fiber_core.connection import Pipe
from fiber_core.peers import HubLost
from fiber_core.process import Process

logger = logging.getLogger("fiber")

managers: Any = _managers  # typeshed describes little of what subclasses use
AuthenticationString: Any = _process.AuthenticationString  # type: ignore[attr-defined]

SERIALIZER = "fiber"
_START_POLL = 0.05

_servers: Dict[Any, managers.Server] = {}
"""The manager servers running in this process, by address."""


class ManagerLost(HubLost):
    """The manager serving a shared object is gone (shut down, or its process died)."""


def run_authkey() -> bytes:
    """The managers' authkey of this run, derived from the run's secret."""
    secret = context.runtime().secret.encode("ascii")
    return hmac.new(secret, b"fiber-core managers", hashlib.sha256).digest()


def server_host() -> str:
    """The address this process's servers bind at: where the backend's jobs reach it."""
    runtime = context.runtime()
    host: str = runtime.backend.hook.master_address(config=runtime.config)
    return host


def _lost(address: Any, error: BaseException) -> ManagerLost:
    return ManagerLost(f"the manager at {address} is gone (shut down, or its process "
                       f"died): {type(error).__name__}: {error}")


_SocketConnection: Any = connection.Connection


class _Connection(_SocketConnection):
    """multiprocessing's socket connection, pickling with cloudpickle."""

    def send(self, obj: Any) -> None:
        self._check_closed()
        self._check_writable()
        self._send_bytes(cloudpickle.dumps(obj))


class _Listener(connection.Listener):
    """The server's listener; the Server authenticates each connection itself."""

    def accept(self) -> _Connection:
        return _cloud(super().accept())


def _client(address: Any, family: Optional[str] = None,
            authkey: Optional[bytes] = None) -> Any:
    if getattr(_accepting, "server", False) or any(
            server.mutex._is_owned() for server in list(_servers.values())):
        return _Deferred(address, family, authkey)
    try:
        conn = connection.Client(address, family, authkey)
    except (OSError, EOFError) as error:
        raise _lost(address, error) from error
    return _cloud(conn)


def _cloud(conn: connection.Connection) -> _Connection:
    """The same connection, sending with cloudpickle, without Nagle's delay (small
    requests would otherwise wait for delayed ACKs)."""
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.__class__ = _Connection
    return cast(_Connection, conn)


managers.listener_client[SERIALIZER] = (_Listener, _client)


class FiberServer(managers.Server):
    """The stdlib server, remembered by address so that factories can find referents."""

    def __init__(self, registry: Dict[str, Any], address: Any, authkey: bytes,
                 serializer: str) -> None:
        super().__init__(registry, address, authkey, serializer)
        self.mutex = threading.RLock()  # an RLock tells whether this thread holds it
        _servers[self.address] = self

    def accepter(self) -> None:
        """The stdlib's loop, but a connection that arrives while the interpreter
        shuts down (a proxy's decref at exit), when Python 3.12+ refuses new
        threads, is handled here rather than left waiting for ever."""
        _accepting.server = True
        while True:
            try:
                connection = self.listener.accept()
            except OSError:
                continue
            try:
                threading.Thread(target=self.handle_request, args=(connection,),
                                 daemon=True).start()
            except RuntimeError:
                self.handle_request(connection)


_accepting = threading.local()


class _Deferred:
    """A connection for a message (a decref, when the garbage collector ends a
    proxy) sent from a thread that a local server needs in order to answer (its
    accepter, or one holding its lock): a background thread delivers it."""

    _messages: queue.SimpleQueue = queue.SimpleQueue()
    _thread: Optional[threading.Thread] = None

    def __init__(self, *client_args: Any) -> None:
        self._client_args = client_args

    def send(self, message: Any) -> None:
        if _Deferred._thread is None:
            _Deferred._thread = threading.Thread(target=self._deliver, daemon=True,
                                                 name="fiber-manager-deferred")
            _Deferred._thread.start()
        self._messages.put((self._client_args, message))

    def recv(self) -> Tuple[str, Any]:
        return ("#RETURN", None)

    @classmethod
    def _deliver(cls) -> None:
        while True:
            client_args, (_id, methodname, args, kwds) = cls._messages.get()
            try:
                managers.dispatch(_client(*client_args), None, methodname, args, kwds)
            except Exception as error:
                logger.debug("manager: deferred %s failed: %s", methodname, error)


def referent(obj: Any) -> Any:
    """The object a proxy stands for when this process serves it, else ``obj``.

    Factories use it so that, say, a Condition made with a shared lock uses the
    lock itself rather than a proxy of it (which would own it from another thread)."""
    if isinstance(obj, managers.BaseProxy):
        server = _servers.get(obj._token.address)
        if server is not None:  # (no server.mutex: factories run holding it)
            return server.id_to_obj[obj._token.id][0]
    return obj


class Reply:
    """The pending answer of a proxy call; :meth:`get` waits for it (call it from
    the thread that made the call)."""

    def __init__(self, proxy: FiberProxy, conn: _Connection, pending: Deque[Reply]) -> None:
        self._proxy = proxy
        self._conn = conn
        self._pending = pending
        self._done = False
        self._value: Any = None
        self._error: Optional[BaseException] = None

    def ready(self) -> bool:
        """Whether the answer has arrived (and been read)."""
        return self._done or (self._pending[0] is self and self._conn.poll(0))

    def get(self, timeout: Optional[float] = None) -> Any:
        """The call's result; re-raises its exception. TimeoutError after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done:
            oldest = self._pending[0]
            if deadline is not None and not self._proxy._io(
                    self._conn.poll, max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"no answer from the manager in {timeout} s")
            message = self._proxy._io(self._conn.recv)
            self._pending.popleft()
            oldest._settle(*message)
        if self._error is not None:
            raise self._error
        return self._value

    def _settle(self, kind: str, result: Any) -> None:
        self._done = True
        if kind == "#RETURN":
            self._value = result
        elif kind == "#PROXY":
            self._value = self._proxy._proxy_for(*result)
        else:
            self._error = managers.convert_to_error(kind, result)


class FiberProxy(managers.BaseProxy):
    """A proxy usable from any process of the run: it pickles as its manager's
    class and token, and reconnects wherever it is unpickled."""

    def __reduce__(self) -> Tuple[Any, ...]:
        kwds = {"exposed": self._exposed_} if getattr(self, "_isauto", False) else {}
        manager_class = self._manager.manager_class
        return (_rebuild, (manager_class, self._token, self._serializer, kwds))

    def _callmethod(self, methodname: str, args: Sequence[Any] = (),
                    kwds: Optional[Dict[str, Any]] = None) -> Any:
        return self._call(methodname, args, kwds).get()

    def _call(self, methodname: str, args: Sequence[Any],
              kwds: Optional[Dict[str, Any]]) -> Reply:
        """Send a call; its Reply is answered in order with this thread's other calls."""
        tls = self._tls
        if not hasattr(tls, "connection"):
            self._connect()
            tls.pending = deque()
        reply = Reply(self, tls.connection, tls.pending)
        self._io(tls.connection.send, (self._id, methodname, tuple(args), kwds or {}))
        tls.pending.append(reply)
        return reply

    def _io(self, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)`` on this thread's connection; ManagerLost when it breaks."""
        try:
            return call(*args)
        except (OSError, EOFError) as error:
            tls = self._tls
            tls.__dict__.pop("connection", None)
            raise _lost(self._token.address, error) from error

    def _proxy_for(self, exposed: Any, token: managers.Token) -> FiberProxy:
        """A proxy for an object a method returned (its typeid in ``method_to_typeid``)."""
        token.address = self._token.address
        proxytype = self._manager._registry[token.typeid][-1]
        proxy: FiberProxy = proxytype(token, self._serializer, manager=self._manager,
                                      authkey=self._authkey, exposed=exposed)
        managers.dispatch(self._Client(token.address, authkey=self._authkey),
                          None, "decref", (token.id,))
        return proxy


class AsyncProxy(FiberProxy):
    """A proxy whose method calls return a :class:`Reply` at once."""

    def _callmethod(self, methodname: str, args: Sequence[Any] = (),
                    kwds: Optional[Dict[str, Any]] = None) -> Any:
        reply = self._call(methodname, args, kwds)
        return reply.get() if methodname.startswith(("_", "#")) else reply

    def __enter__(self) -> Any:
        return _wait(super().__enter__())

    def __exit__(self, *exc: Any) -> Any:
        return _wait(super().__exit__(*exc))


def _wait(result: Any) -> Any:
    return result.get() if isinstance(result, Reply) else result


class _Remote:
    """What a proxy needs of its manager, in a process that only received the proxy."""

    def __init__(self, manager_class: Type[BaseManager]) -> None:
        self.manager_class = manager_class
        self._registry = manager_class._registry
        self._authkey = AuthenticationString(run_authkey())
        self._state = None


def _rebuild(manager_class: Type[BaseManager], token: managers.Token, serializer: str,
             kwds: Dict[str, Any]) -> FiberProxy:
    proxytype = manager_class._registry[token.typeid][-1]
    kwds["manager"] = _Remote(manager_class)
    proxy: FiberProxy = managers.RebuildProxy(proxytype, token, serializer, kwds)
    return proxy


_proxy_types: Dict[Tuple[type, type], type] = {}


def _proxy_type(base: Type[FiberProxy], proxytype: type) -> type:
    """``proxytype`` with ``base`` mixed in (one class per pair)."""
    if issubclass(proxytype, base):
        return proxytype
    key = (base, proxytype)
    if key not in _proxy_types:
        _proxy_types[key] = type(proxytype.__name__, (base, proxytype),
                                 {"__module__": proxytype.__module__})
    return _proxy_types[key]


def _auto_proxy(base: Type[FiberProxy]) -> Callable[..., FiberProxy]:
    """Like ``multiprocessing.managers.AutoProxy``, making proxies derived from ``base``."""

    def auto_proxy(token: managers.Token, serializer: str, manager: Any = None,
                   authkey: Optional[bytes] = None, exposed: Optional[Sequence[str]] = None,
                   incref: bool = True, manager_owned: bool = False) -> FiberProxy:
        if exposed is None:
            conn = _client(token.address, authkey=authkey or manager._authkey)
            try:
                exposed = managers.dispatch(conn, None, "get_methods", (token,))
            finally:
                conn.close()
        proxytype = _proxy_type(base, managers.MakeProxyType(
            f"AutoProxy[{token.typeid}]", exposed))
        proxy: FiberProxy = proxytype(token, serializer, manager=manager, authkey=authkey,
                                      incref=incref, manager_owned=manager_owned)
        proxy._isauto = True
        return proxy

    return auto_proxy


def _serve(manager_class: Type[BaseManager], address: Any, serializer: str, writer: Any,
           initializer: Optional[Callable[..., Any]], initargs: Sequence[Any]) -> None:
    """The manager process: serve the registry at ``address`` (default: this
    backend's address, a free port) until shut down."""
    manager_class._run_server(
        manager_class._registry, address or (server_host(), 0),
        run_authkey(), serializer, writer, initializer, initargs)


class BaseManager(managers.BaseManager):
    """``multiprocessing.managers.BaseManager`` whose server is a Fiber process
    and whose proxies work in every process of the run.

    Leave ``authkey`` unset: the default, derived from the run's secret, is the
    one that proxies in other processes use."""

    _Server = FiberServer
    _proxy_base: Type[FiberProxy] = FiberProxy
    _registry: Dict[str, Any] = {}
    _address: Any

    def __init__(self, address: Any = None, authkey: Optional[bytes] = None,
                 serializer: str = SERIALIZER, ctx: Any = None, **kwargs: Any) -> None:
        super().__init__(address, authkey if authkey is not None else run_authkey(),
                         serializer, ctx, **kwargs)

    @property
    def manager_class(self) -> Type[BaseManager]:
        return type(self)

    @classmethod
    def register(cls, typeid: str, callable: Optional[Callable[..., Any]] = None,
                 proxytype: Any = None, exposed: Optional[Sequence[str]] = None,
                 method_to_typeid: Optional[Dict[str, str]] = None,
                 create_method: bool = True) -> None:
        """As ``BaseManager.register``; proxy types get this manager's proxy base
        mixed in (the default is an auto proxy exposing the public methods)."""
        if proxytype is None or proxytype is managers.AutoProxy:
            proxytype = _auto_proxy(cls._proxy_base)
        elif isinstance(proxytype, type):
            proxytype = _proxy_type(cls._proxy_base, proxytype)
        super().register(typeid, callable, proxytype, exposed, method_to_typeid,
                         create_method)

    def start(self, initializer: Optional[Callable[..., Any]] = None,
              initargs: Sequence[Any] = ()) -> None:
        """Start the server as a Fiber process on the selected backend."""
        state = self._state.value
        if state != managers.State.INITIAL:
            raise ProcessError("Already started server" if state == managers.State.STARTED
                               else "Manager has shut down")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        reader, writer = Pipe(duplex=False)
        server = Process(target=_serve, args=(
            type(self), self._address, self._serializer,
            writer, initializer, tuple(initargs)))
        server.name = f"{type(self).__name__}-{server.name.split('-', 1)[-1]}"
        server.start()
        writer.close()
        while not reader.poll(_START_POLL):
            if not server.is_alive():
                raise ProcessError(f"the manager process {server.name} exited with code "
                                   f"{server.exitcode} before serving")
        self._address = reader.recv()
        reader.close()
        self._process = server
        self._state.value = managers.State.STARTED
        args: Tuple[Any, ...] = (server, self._address, self._authkey,
                                 self._state, self._Client)
        if sys.version_info >= (3, 11):
            args += (self._shutdown_timeout,)
        self.shutdown = util.Finalize(self, type(self)._finalize_manager, args=args,
                                      exitpriority=0)
        context.runtime().at_close(self.shutdown)
        logger.debug("%s serving at %r", type(self).__name__, self._address)

    def serve_in_thread(self) -> None:
        """Serve from threads of this process instead of a process of its own
        (the objects then live as long as this process)."""
        server = self._Server(self._registry, self._address or (server_host(), 0),
                              bytes(self._authkey), self._serializer)
        server.stop_event = threading.Event()
        threading.Thread(target=server.accepter, name="fiber-manager", daemon=True).start()
        self._address = server.address
        self.connect()


class SyncManager(BaseManager, managers.SyncManager):
    """``multiprocessing.managers.SyncManager`` on Fiber: the same registered
    types except Pool (use :class:`fiber_core.Pool`)."""

    _registry: Dict[str, Any] = {}

    @classmethod
    def _register_stdlib_types(cls) -> None:
        for typeid, (factory, exposed, method_to_typeid, proxytype) in \
                managers.SyncManager._registry.items():
            if typeid not in ("Pool", "AsyncResult"):
                cls.register(typeid, factory, proxytype, exposed, method_to_typeid,
                             create_method=factory is not None)

    def Pool(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("a manager does not host pools on Fiber: use fiber_core.Pool")


class AsyncManager(SyncManager):
    """A SyncManager whose proxies' method calls return a :class:`Reply` at once."""

    _proxy_base = AsyncProxy
    _registry: Dict[str, Any] = {}


SyncManager._register_stdlib_types()
AsyncManager._register_stdlib_types()


def Manager() -> SyncManager:
    """A started :class:`SyncManager` (as ``multiprocessing.Manager()``)."""
    manager = SyncManager()
    manager.start()
    return manager
