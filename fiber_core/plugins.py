"""Finding, checking and choosing backends.

Each distribution that registers an entry point in the ``fiber.backends`` group
is a backend named after the entry point. Every backend gets its own pluggy
PluginManager, so a hook call always reaches exactly the chosen backend.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Dict, Iterable, List, Optional

import pluggy

from fiber_core import hookspecs
from fiber_core.hookspecs import BackendInfo, ConfigKey

logger = logging.getLogger("fiber")

REQUIRED_HOOKS = ("backend_info", "master_address", "spawn", "poll", "terminate")
FALLBACK = "local"
"""The backend used when nothing else applies; every other name is a plugin's own."""
_DISTRIBUTION_HINTS = {"kubernetes": "fiber-k8s"}
"""Which distribution provides a backend, where it is not ``fiber-<name>``."""


class BackendError(RuntimeError):
    """No usable backend: unknown, broken, ambiguous or not applicable."""


@dataclass
class Backend:
    """An installed backend: where it came from and its hooks."""

    name: str
    distribution: str
    version: str
    hook: Any = None
    """The pluggy hook relay of this backend alone (``backend.hook.spawn(...)``)."""
    info: Optional[BackendInfo] = None
    error: Optional[str] = None
    """Why the backend cannot be used (it failed to load or is incomplete)."""
    rivals: List[str] = field(default_factory=list)
    """Other distributions that claim the same name."""

    @property
    def priority(self) -> int:
        return self.info.priority if self.info else 0

    def applies(self) -> bool:
        """Ask the backend whether it applies here; a failure counts as no."""
        if self.hook is None or self.error or self.rivals:
            return False
        try:
            return bool(self.hook.detect_environment())
        except Exception as error:  # a plugin bug must not break selection
            logger.warning("backend %r: detect_environment failed: %s", self.name, error)
            return False

    def check_usable(self) -> None:
        """Raise BackendError when this backend cannot be used."""
        if self.rivals:
            raise BackendError(
                f"backend {self.name!r} is provided by several distributions: "
                f"{', '.join(sorted([self.distribution, *self.rivals]))}; uninstall all but one")
        if self.error:
            raise BackendError(f"backend {self.name!r} (from {self.distribution}) "
                               f"cannot be used: {self.error}")


def _load(entry_point: metadata.EntryPoint, distribution: str, version: str) -> Backend:
    backend = Backend(entry_point.name, distribution, version)
    try:
        plugin = entry_point.load()
        manager = pluggy.PluginManager(hookspecs.PROJECT)
        manager.add_hookspecs(hookspecs)
        manager.register(plugin, name=entry_point.name)
        manager.check_pending()
        missing = [name for name in REQUIRED_HOOKS
                   if not getattr(manager.hook, name).get_hookimpls()]
        if missing:
            raise TypeError(f"it does not implement the hook(s) {', '.join(missing)}")
        backend.hook = manager.hook
        backend.info = manager.hook.backend_info()
        if not isinstance(backend.info, BackendInfo):
            raise TypeError("backend_info() must return a fiber_core.hookspecs.BackendInfo")
    except Exception as error:
        backend.error = f"{type(error).__name__}: {error}"
        logger.warning("backend %r from %s failed to load: %s",
                       entry_point.name, distribution, backend.error)
    return backend


def _entry_points() -> Iterable[tuple]:
    """Yield (entry point, distribution name, version) once per installed distribution."""
    seen = set()
    for dist in metadata.distributions():
        name = dist.metadata["Name"] or "?"
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        for entry_point in dist.entry_points:
            if entry_point.group == hookspecs.PROJECT:
                yield entry_point, name, dist.version


class Registry:
    """The installed backends, loaded once."""

    def __init__(self, found: Optional[Iterable[tuple]] = None) -> None:
        self.backends: Dict[str, Backend] = {}
        for entry_point, distribution, version in (found if found is not None
                                                   else _entry_points()):
            if entry_point.name in self.backends:
                self.backends[entry_point.name].rivals.append(distribution)
                continue
            self.backends[entry_point.name] = _load(entry_point, distribution, version)

    def ordered(self) -> List[Backend]:
        """The backends in the order automatic selection asks them."""
        return sorted(self.backends.values(), key=lambda b: (-b.priority, b.name))

    def config_keys(self) -> List[ConfigKey]:
        """The configuration keys the loaded backends declare."""
        return [key for backend in self.ordered() if backend.info
                for key in backend.info.config_keys]

    def detect(self) -> Optional[Backend]:
        """The first backend, in priority order, that says it applies here."""
        return next((backend for backend in self.ordered() if backend.applies()), None)

    def select(self, name: Optional[str] = None) -> Backend:
        """The backend called ``name``, or the detected one when ``name`` is empty."""
        if not name:
            backend = self.detect()
            if backend is None:
                raise BackendError(
                    f"no installed backend applies here (installed: {self._names()}); "
                    f"install the fallback with: pip install {distribution_for(FALLBACK)}")
            return backend
        backend = self.backends.get(name)
        if backend is None:
            raise BackendError(f"no backend {name!r} installed (installed: {self._names()}); "
                               f"pip install {distribution_for(name)}")
        backend.check_usable()
        return backend

    def _names(self) -> str:
        return ", ".join(b.name for b in self.ordered()) or "none"


def distribution_for(name: str) -> str:
    """The distribution that would provide the backend ``name``."""
    return _DISTRIBUTION_HINTS.get(name, f"fiber-{name}")


_registry: Optional[Registry] = None


def registry() -> Registry:
    """The installed backends (discovered on first use)."""
    global _registry
    if _registry is None:
        _registry = Registry()
    return _registry
