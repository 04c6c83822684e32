"""Faults the tests switch on: failed creates, expired watches, pods that cannot start."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

UNSCHEDULABLE = ("0/1 nodes are available: 1 node(s) were unschedulable. preemption: 0/1 nodes "
                 "are available: 1 Preemption is not helpful for scheduling.")


@dataclass
class Faults:
    """Shared, lock-protected fault switches read by the apiserver and the kubelet."""

    create_failures: int = 0
    create_failure_code: int = 500
    expired_watches: int = 0
    unschedulable: str | None = None
    image_pull_failure: bool = False
    start_delay: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take_create_failure(self) -> int | None:
        """The HTTP code the next pod create must fail with, if it must."""
        with self._lock:
            if self.create_failures <= 0:
                return None
            self.create_failures -= 1
            return self.create_failure_code

    def take_expired_watch(self) -> bool:
        with self._lock:
            if self.expired_watches <= 0:
                return False
            self.expired_watches -= 1
            return True

    def update(self, **switches: object) -> None:
        """Set several switches at once."""
        with self._lock:
            for name, value in switches.items():
                setattr(self, name, value)

    def clear(self) -> None:
        with self._lock:
            self.create_failures = self.expired_watches = 0
            self.unschedulable, self.image_pull_failure, self.start_delay = None, False, 0.0
