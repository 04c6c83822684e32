"""Following the pods of a run: ONE watch per run and namespace, not a poll per pod.

    spawn ──> PodRecord (registered before the create, so no event is missed)
                 ^
    PodWatcher thread: list (once, and again after 410 Gone)
                       └─> watch from the last resourceVersion, timeout_seconds=T,
                           resumed for ever; ProtocolError / connection errors: retry
       each event ──> record: phase, exit code, why it waits
       a record's end ──> on_end (log tail on failure, delete the pod)
       every T seconds ──> pods waiting too long with a reason ──> on_stuck
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from fiber_k8s.api import Api, iter_lines
from fiber_k8s.manifests import Obj

logger = logging.getLogger("fiber")

LAST_SIGNAL = signal.NSIG - 1
STUCK_REASONS = frozenset({
    "Unschedulable", "ErrImagePull", "ImagePullBackOff", "InvalidImageName",
    "ErrImageNeverPull", "CreateContainerConfigError", "CreateContainerError",
    "RunContainerError"})
"""Why a pod can wait for ever: reported once the pending timeout has passed."""
RETRY_DELAY = 1.0
STOP_WAIT = 10.0


class Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


@dataclass
class PodRecord:
    """What this process knows of one pod it created."""

    name: str
    namespace: str
    process: str
    grace: int
    deadline: float
    """Monotonic time after which a pod still waiting for a stuck reason fails."""
    created_at: Optional[float] = None
    """Monotonic time the create call returned (None before)."""
    phase: str = "Pending"
    exitcode: Optional[int] = None
    waiting: str = ""
    """Why the pod waits, as the scheduler or kubelet says it ("Reason: message")."""
    failure: str = ""
    """Set when the pod was given up on (stuck Pending); poll() raises it once."""
    failure_reported: bool = False
    stop_signal: Optional[int] = None
    """The signal terminate() asked for (the pod is deleted: Kubernetes may not say)."""

    def give_up(self) -> str:
        """Mark a pod stuck Pending as failed (exit code 1) and say why and what to do."""
        self.failure = (
            f"{self.process} could not start: its pod {self.namespace}/{self.name} is "
            f"still Pending after k8s_pending_timeout: {self.waiting}. Free or add the "
            "resources it requests (@meta cpu/memory/gpu), fix the image name or pull "
            "secret, or raise k8s_pending_timeout")
        self.exitcode = 1
        return self.failure


def exit_code(terminated: Obj) -> int:
    """A terminated container's exit code, as ``multiprocessing`` reports it.

    Container runtimes report a process killed by signal N as 128+N; that becomes
    -N. (A process calling ``sys.exit(128+N)`` looks the same: nobody can tell.)"""
    if terminated.get("signal"):
        return -int(terminated["signal"])
    code = int(terminated.get("exitCode", 1))
    return 128 - code if 128 < code <= 128 + LAST_SIGNAL else code


def terminated_state(pod: Obj) -> Optional[Obj]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return dict(terminated)
    return None


def pod_exit_code(pod: Obj) -> Optional[int]:
    """The exit code of a pod that has ended, else None."""
    status = pod.get("status") or {}
    if status.get("phase") not in ("Succeeded", "Failed"):
        return None
    terminated = terminated_state(pod)
    if terminated is None:  # evicted, or failed before its container ran
        logger.warning("pod %s failed without an exit code: %s %s", pod["metadata"]["name"],
                       status.get("reason", ""), status.get("message", ""))
        return -signal.SIGKILL
    return exit_code(terminated)


def waiting_reason(pod: Obj) -> str:
    """Why a pod that has not started waits ("Reason: message"), or ''."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{condition.get('reason', '')}: {condition.get('message', '')}"
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") in STUCK_REASONS:
            return f"{waiting['reason']}: {waiting.get('message', '')}"
    return ""


class PodWatcher:
    """Follows the pods matching ``selector`` in ``namespace`` and updates their records."""

    def __init__(self, api: Api, namespace: str, selector: str, period: int,
                 on_end: Callable[[PodRecord, Obj], None],
                 on_stuck: Callable[[PodRecord], object]) -> None:
        self.api = api
        self.namespace = namespace
        self.selector = selector
        self.period = period
        """timeout_seconds of each watch request: how often stuck pods are checked."""
        self.on_end = on_end
        self.on_stuck = on_stuck
        self.records: Dict[str, PodRecord] = {}
        self.lock = threading.Lock()
        self._stopped = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"fiber-k8s-watch-{namespace}")
        self._thread.start()

    def add(self, record: PodRecord) -> None:
        with self.lock:
            self.records[record.name] = record

    def forget(self, name: str) -> None:
        with self.lock:
            self.records.pop(name, None)

    def stop(self, wait: float = STOP_WAIT) -> None:
        """Stop watching; wait up to ``wait`` seconds for the thread to finish what it
        does (a thread still calling the API while Python exits can abort it)."""
        self._stopped.set()
        shutdown = getattr(self._response, "shutdown", None)
        if shutdown is not None:  # urllib3 >= 2.3 unblocks the reading thread
            try:
                shutdown()
            except Exception:
                logger.debug("cannot interrupt the watch of %s", self.selector)
        if self._thread is not threading.current_thread():
            self._thread.join(wait)
            if self._thread.is_alive():
                logger.warning("the watch of %s did not stop within %s s", self.selector, wait)

    def check_stuck(self) -> None:
        """Give up on pods that have waited longer than their deadline with a reason."""
        now = time.monotonic()
        with self.lock:
            stuck = [r for r in self.records.values() if r.exitcode is None and not r.failure
                     and r.waiting and r.phase == "Pending" and now > r.deadline]
        for record in stuck:
            self.on_stuck(record)

    # -- the watching thread ------------------------------------------------------------

    def _run(self) -> None:
        version: Optional[str] = None
        while not self._stopped.is_set():
            try:
                if version is None:
                    version = self._list()
                version = self._watch(version)
            except Gone:
                logger.debug("watch of %s expired; listing again", self.selector)
                version = None
            except (ApiException, HTTPError, OSError, ValueError) as error:
                if self._stopped.is_set():
                    break
                logger.debug("watch of %s interrupted (%s); resuming", self.selector, error)
                self._stopped.wait(RETRY_DELAY)
            except Exception:
                logger.exception("watching pods %s failed; retrying", self.selector)
                self._stopped.wait(RETRY_DELAY)
            self.check_stuck()

    def _list(self) -> str:
        started = time.monotonic()
        listing = self.api.call("list_namespaced_pod", self.namespace,
                                label_selector=self.selector)
        present = {item["metadata"]["name"] for item in listing.get("items", [])}
        for item in listing.get("items", []):
            self._update("MODIFIED", item)
        with self.lock:
            vanished = [r for r in self.records.values() if r.name not in present
                        and r.created_at is not None and r.created_at < started]
        for record in vanished:  # deleted while nobody watched
            self._update("DELETED", {"metadata": {"name": record.name}})
        return str(listing["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str:
        response = self.api.stream(
            "list_namespaced_pod", self.namespace, label_selector=self.selector, watch=True,
            resource_version=version, allow_watch_bookmarks=True, timeout_seconds=self.period,
            _request_timeout=(10, self.period + 30))
        self._response = response
        try:
            for line in iter_lines(response):
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                version = obj.get("metadata", {}).get("resourceVersion") or version
                if event.get("type") != "BOOKMARK":
                    self._update(event["type"], obj)
                if self._stopped.is_set():
                    break
        finally:
            self._response = None
            response.release_conn()
        return version

    def _update(self, kind: str, pod: Obj) -> None:
        name = pod["metadata"]["name"]
        with self.lock:
            record = self.records.get(name)
            if record is None:
                return
            ended = record.exitcode is None and self._apply(record, kind, pod)
            if kind == "DELETED":
                del self.records[name]
        if ended and kind != "DELETED":
            self.on_end(record, pod)

    @staticmethod
    def _apply(record: PodRecord, kind: str, pod: Obj) -> bool:
        """Update ``record`` from the pod; True when this gave it its exit code."""
        status = pod.get("status") or {}
        record.phase = status.get("phase", record.phase)
        record.waiting = waiting_reason(pod) if record.phase == "Pending" else ""
        code = pod_exit_code(pod)
        if code is None and kind == "DELETED":
            terminated = terminated_state(pod)
            code = (exit_code(terminated) if terminated
                    else -(record.stop_signal or signal.SIGKILL))
        record.exitcode = code
        return code is not None

