"""Following running containers: their exit codes (one ``docker events`` stream
per run) and their output (one attach stream per container, forwarded to this
process's stdout and stderr)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from typing import Any, Dict, Iterator, Optional, Set, TextIO, Tuple

import docker

from fiber_docker.containers import RUN_LABEL

logger = logging.getLogger("fiber")

TAIL_BYTES = 8192
"""How much of a container's latest output is kept for error messages."""
LAST_SIGNAL = signal.NSIG - 1


def exit_code(status: int) -> int:
    """Turn a container's exit status into a ``multiprocessing`` exit code.

    A process killed by signal N makes the container's init (``--init``) exit with
    128+N, as shells report it; that becomes -N. A worker calling ``sys.exit(N)``
    with 128 < N < 128+NSIG is reported as a signal too: the engine cannot tell."""
    return -(status - 128) if 128 < status <= 128 + LAST_SIGNAL else status


class Exits:
    """The exit codes of the containers this process started in one run."""

    def __init__(self, api: docker.APIClient, run_id: str) -> None:
        self.api = api
        self.filters = {"type": ["container"], "event": ["die"],
                        "label": [f"{RUN_LABEL}={run_id}"]}
        self.codes: Dict[str, int] = {}
        self.watched: Set[str] = set()
        self.lock = threading.Lock()
        self.closed = False
        # Replaying from one second back covers containers that die while the
        # stream connects (or reconnects after an engine hiccup).
        self.since = int(time.time()) - 1
        self.stream = self._open()
        threading.Thread(target=self._follow, name="fiber-docker-exits", daemon=True).start()

    def _open(self) -> Any:
        return self.api.events(since=self.since, filters=self.filters, decode=True)

    def watch(self, container_id: str) -> None:
        """Record this container's exit when it comes."""
        with self.lock:
            self.watched.add(container_id)

    def forget(self, container_id: str) -> None:
        """Stop watching a container that never started."""
        with self.lock:
            self.watched.discard(container_id)

    def code(self, container_id: str) -> Optional[int]:
        """The container's exit status, or None while it runs."""
        with self.lock:
            return self.codes.get(container_id)

    def running(self) -> Set[str]:
        """The watched containers that have not exited."""
        with self.lock:
            return self.watched - set(self.codes)

    def _follow(self) -> None:
        while True:
            try:
                for event in self.stream:
                    self._record(event)
            except Exception as error:
                if not self.closed:
                    logger.warning("docker events stream failed (%s); reconnecting", error)
            if self.closed:
                return
            time.sleep(0.5)
            try:
                self.stream = self._open()
            except Exception as error:
                logger.warning("cannot reopen the docker events stream: %s", error)

    def _record(self, event: Dict[str, Any]) -> None:
        actor = event.get("Actor") or {}
        container_id = actor.get("ID") or event.get("id", "")
        status = (actor.get("Attributes") or {}).get("exitCode")
        self.since = max(self.since, int(event.get("time", 0)))
        with self.lock:
            if container_id in self.watched and status is not None:
                self.codes.setdefault(container_id, int(status))

    def close(self) -> None:
        self.closed = True
        self.stream.close()


class Output:
    """Forwards one container's stdout and stderr to this process's, keeping a tail."""

    def __init__(self, api: docker.APIClient, container_id: str) -> None:
        self.frames: Iterator[Tuple[Optional[bytes], Optional[bytes]]] = api.attach(
            container_id, stdout=True, stderr=True, stream=True, logs=True, demux=True)
        self.tail = bytearray()
        self.thread = threading.Thread(target=self._forward, daemon=True,
                                       name=f"fiber-docker-output-{container_id[:12]}")

    def start(self) -> None:
        self.thread.start()

    def _forward(self) -> None:
        try:
            for out, err in self.frames:
                for data, target in ((out, sys.stdout), (err, sys.stderr)):
                    if data:
                        _write(target, data)
                        self.tail += data
                        del self.tail[:-TAIL_BYTES]
        except Exception as error:
            logger.debug("output stream ended: %s", error)

    def last_lines(self, count: int = 20) -> str:
        """The last ``count`` lines the container wrote (stdout and stderr)."""
        return "\n".join(bytes(self.tail).decode(errors="replace").splitlines()[-count:])

    def join(self, timeout: float) -> None:
        """Wait (bounded) until everything the container wrote is forwarded."""
        self.thread.join(timeout)


def _write(target: Optional[TextIO], data: bytes) -> None:
    if target is None:
        return
    binary = getattr(target, "buffer", None)
    try:
        if binary is not None:
            target.flush()
            binary.write(data)
            binary.flush()
        else:
            target.write(data.decode(errors="replace"))
            target.flush()
    except (OSError, ValueError):
        pass  # this process's own stream is closed: nothing to forward to
