"""The process-wide state of Fiber: configuration, backend, secret, servers.

The master creates its :class:`Runtime` on first use; a worker adopts its
parent's (the same run, secret, backend and explicit configuration), so
children inherit everything from the process that started them.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

from fiber_core import config as config_module
from fiber_core import plugins, transport
from fiber_core.config import Config
from fiber_core.hub import Hub
from fiber_core.peers import Peers
from fiber_core.plugins import Backend

logger = logging.getLogger("fiber")

_code_values: Dict[str, Any] = {}
_runtime: Optional[Runtime] = None
_lock = threading.RLock()


class Runtime:
    """What every Fiber object of this process shares."""

    def __init__(self, config: Config, run_id: str, secret: str,
                 identity: Tuple[int, ...] = ()) -> None:
        self.config = config
        self.backend = _select_backend(config)
        self.run_id = run_id
        self.secret = secret
        self.identity = identity
        self._hub: Optional[Hub] = None
        self._peers: Optional[Peers] = None
        self._closers: List[Callable[[], None]] = []
        self._lock = threading.Lock()
        _configure_logging(config)

    @property
    def hub(self) -> Hub:
        """This process's server, started on first use."""
        with self._lock:
            if self._hub is None:
                host = self.backend.hook.master_address(config=self.config)
                self._hub = Hub(host, self.secret, self.config.heartbeat,
                                self.config.orphan_timeout, self.config.encrypt)
                logger.debug("hub serving at %s", self._hub.address)
            return self._hub

    @property
    def peers(self) -> Peers:
        """This process's connections to other hubs."""
        with self._lock:
            if self._peers is None:
                self._peers = Peers(self.secret, self.config.heartbeat,
                                    self.config.orphan_timeout)
            return self._peers

    def at_close(self, closer: Callable[[], None]) -> None:
        """Run ``closer`` when the runtime closes (at exit), before the servers stop;
        closers run last registered first, each once."""
        if closer not in self._closers:
            self._closers.append(closer)

    def close(self) -> None:
        """End children, say goodbye to peers, stop the hub, release the backend."""
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:
                logger.exception("error while shutting down")
        self._closers.clear()
        if self._peers is not None:
            self._peers.close()
        if self._hub is not None:
            self._hub.close()
        try:
            self.backend.hook.shutdown(run_id=self.run_id)
        except Exception:
            logger.exception("backend %r failed to shut down", self.backend.name)


def _all_keys() -> list:
    return [*config_module.CORE_KEYS, *plugins.registry().config_keys()]


def _select_backend(config: Config) -> Backend:
    backend = plugins.registry().select(config.backend)
    logger.debug("using backend %r", backend.name)
    return backend


def _configure_logging(config: Config) -> None:
    fiber_logger = logging.getLogger("fiber")
    fiber_logger.setLevel(config.log_level)
    if config.log_file and not any(getattr(h, "_fiber", False) for h in fiber_logger.handlers):
        handler = logging.FileHandler(config.log_file.replace("{pid}", str(os.getpid())))
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(process)d %(threadName)s %(levelname)s %(message)s"))
        handler._fiber = True  # type: ignore[attr-defined]
        fiber_logger.addHandler(handler)


def init(**keys: Any) -> Config:
    """Set configuration keys in code (highest precedence) and return the result.

    For example ``fiber_core.init(backend="docker", image="myapp:1")``. Applies
    to processes started afterwards; raises ConfigError for an unknown key or a
    bad value, and BackendError for a backend that cannot be used."""
    with _lock:
        values = {**_code_values, **keys}
        config = config_module.resolve(_all_keys(), values)
        backend = _select_backend(config)
        _code_values.clear()
        _code_values.update(values)
        if _runtime is not None:
            _runtime.config = config
            _runtime.backend = backend
            _configure_logging(config)
        return config


def resolve_config() -> Config:
    """The configuration that code, environment and ``.fiberconfig`` give now."""
    return config_module.resolve(_all_keys(), _code_values)


def runtime() -> Runtime:
    """This process's runtime, created on first use in the master."""
    global _runtime
    with _lock:
        if _runtime is None:
            config = resolve_config()
            _install(Runtime(config, uuid.uuid4().hex[:12], transport.new_secret()))
        assert _runtime is not None
        return _runtime


def existing() -> Optional[Runtime]:
    """This process's runtime if it has one (None before first use and after exit)."""
    return _runtime


def current_config() -> Config:
    """The configuration in force in this process."""
    return runtime().config


def adopt(explicit: Dict[str, Any], run_id: str, secret: str,
          identity: Tuple[int, ...], peers: Peers) -> Runtime:
    """Make this worker part of its parent's run, with the parent's configuration
    (``peers`` already holds the link to the parent)."""
    with _lock:
        _code_values.clear()
        _code_values.update(explicit)
        config = config_module.resolve(_all_keys(), explicit, environ={}, path="")
        peers.configure(config.heartbeat, config.orphan_timeout)
        new = Runtime(config, run_id, secret, identity)
        new._peers = peers
        return _install(new)


def _install(new: Runtime) -> Runtime:
    global _runtime
    _runtime = new
    atexit.register(_close)
    return new


def _close() -> None:
    global _runtime
    with _lock:
        current, _runtime = _runtime, None
    if current is not None:
        current.close()
