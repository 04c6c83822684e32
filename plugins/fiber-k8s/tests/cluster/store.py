"""The object store: one global resourceVersion counter, a bounded event history, watches.

Every change is an event ``(rv, type, resource, object, previous object)`` kept in a
history of ``history_size`` events; a watch from a resourceVersion older than the
oldest kept event fails with 410 Expired, as etcd compaction makes it fail for real.
Listeners (the kubelet, the garbage collector) are called after each change, outside
the store's lock, in the thread that made it.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from .labels import Predicate
from .meta import LOG, Obj, already_exists, gone, meta, not_found

Key = tuple[str, str, str]  # resource, namespace ("" when cluster-scoped), name


@dataclass(frozen=True)
class Event:
    rv: int
    type: str
    resource: str
    obj: Obj
    old: Optional[Obj] = None

    @property
    def namespace(self) -> str:
        return str(meta(self.obj).get("namespace", ""))


Listener = Callable[[Event], None]
Mutator = Callable[[Obj], Obj]


class Store:
    """Thread-safe objects by (resource, namespace, name) with watchable history."""

    def __init__(self, history_size: int = 1000):
        self._cond = threading.Condition(threading.RLock())
        self._objects: dict[Key, Obj] = {}
        self._history: deque[Event] = deque(maxlen=history_size)
        self._rv = 0
        self._compacted = 0  # events up to this rv are no longer in the history
        self._closed = False
        self._listeners: list[Listener] = []

    @property
    def resource_version(self) -> int:
        return self._rv

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def close(self) -> None:
        """End every watch."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def find(self, resource: str, namespace: str, name: str) -> Obj | None:
        with self._cond:
            obj = self._objects.get((resource, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def get(self, resource: str, namespace: str, name: str) -> Obj:
        obj = self.find(resource, namespace, name)
        if obj is None:
            raise not_found(resource, name)
        return obj

    def list(self, resource: str, namespace: str | None = None,
             match: Predicate | None = None) -> tuple[list[Obj], int]:
        """Matching objects sorted by namespace and name, and the current resourceVersion."""
        with self._cond:
            items = [copy.deepcopy(obj) for (res, ns, _), obj in sorted(self._objects.items())
                     if res == resource and namespace in (None, ns)]
            return [obj for obj in items if match is None or match(obj)], self._rv

    def create(self, resource: str, obj: Obj) -> Obj:
        key = (resource, meta(obj).get("namespace", ""), meta(obj)["name"])
        with self._cond:
            if key in self._objects:
                raise already_exists(resource, key[2])
            event = self._commit("ADDED", resource, key, obj, None)
        return self._notify(event)

    def update(self, resource: str, namespace: str, name: str, mutate: Mutator) -> Obj:
        """Apply ``mutate`` to a copy of the object; a change bumps its resourceVersion."""
        key = (resource, namespace, name)
        with self._cond:
            old = self._objects.get(key)
            if old is None:
                raise not_found(resource, name)
            new = mutate(copy.deepcopy(old))
            if new == old:
                return copy.deepcopy(old)
            event = self._commit("MODIFIED", resource, key, new, old)
        return self._notify(event)

    def delete(self, resource: str, namespace: str, name: str,
               missing_ok: bool = False) -> Obj | None:
        key = (resource, namespace, name)
        with self._cond:
            old = self._objects.get(key)
            if old is None:
                if missing_ok:
                    return None
                raise not_found(resource, name)
            event = self._commit("DELETED", resource, key, copy.deepcopy(old), None)
        return self._notify(event)

    def _commit(self, kind: str, resource: str, key: Key, obj: Obj, old: Obj | None) -> Event:
        self._rv += 1
        meta(obj)["resourceVersion"] = str(self._rv)
        if kind == "DELETED":
            del self._objects[key]
        else:
            self._objects[key] = obj
        if len(self._history) == self._history.maxlen:
            self._compacted = self._history[0].rv
        event = Event(self._rv, kind, resource, copy.deepcopy(obj), old)
        self._history.append(event)
        self._cond.notify_all()
        return event

    def _notify(self, event: Event) -> Obj:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a broken listener must not fail the API call
                LOG.exception("store listener failed on %s %s", event.type, event.resource)
        return copy.deepcopy(event.obj)

    def watch(self, resource: str, namespace: str | None, match: Predicate,
              since: int | None, timeout: float | None,
              heartbeat: float = 1.0) -> Iterator[tuple[str, Obj] | None]:
        """Yield ``(type, object)`` events, and ``None`` every ``heartbeat`` seconds of quiet.

        ``since`` None gives synthetic ADDED events for the current objects first.
        Raises 410 Expired when events after ``since`` were dropped from the history.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if since is None:
                initial, cursor = self.list(resource, namespace, match)
            elif since < self._compacted:
                raise gone(f"too old resource version: {since} ({self._compacted + 1})")
            else:
                initial, cursor = [], since
        for obj in initial:
            yield "ADDED", obj
        while not self._closed:
            remaining = heartbeat if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return
            with self._cond:
                if self._rv <= cursor:
                    self._cond.wait(min(heartbeat, remaining))
                if cursor < self._compacted:
                    raise gone(f"too old resource version: {cursor} ({self._compacted + 1})")
                events = [e for e in self._history if e.rv > cursor]
                cursor = max(cursor, self._rv)
            if not events:
                yield None
            for event in events:
                if event.resource == resource and namespace in (None, event.namespace):
                    translated = _translate(event, match)
                    if translated:
                        yield translated


def _translate(event: Event, match: Predicate) -> tuple[str, Obj] | None:
    """The event as a selector-filtered watch sees it: entering is ADDED, leaving is DELETED."""
    now = match(event.obj)
    if event.type != "MODIFIED" or event.old is None:
        return (event.type, event.obj) if now else None
    was = match(event.old)
    if now:
        return ("MODIFIED" if was else "ADDED"), event.obj
    return ("DELETED", event.obj) if was else None
