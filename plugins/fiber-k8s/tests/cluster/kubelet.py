"""The kubelet (and scheduler) of the one test node: binds pods, runs containers, reports.

    pod ADDED ──> scheduling loop ──(fits? faults?)──> Pending, PodScheduled=False Unschedulable
                        │ binds
                        v
                  start thread: delay fault, image-pull fault, sandbox, volumes, env
                        │ ConfigError / pull fault: waiting, retried on wake()
                        v
                  one waiter thread per container process ──> terminated ──> Succeeded|Failed
    DELETE (grace) ──> SIGTERM to each container's main process, SIGKILL after the grace,
                       pod object removed once every container has exited.

A container's end kills what is left of it (its process group and every process carrying
its marker), as the end of a container's PID namespace would.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from . import podspec
from .faults import Faults
from .meta import LOG, ApiError, Obj, meta, now
from .runtime import (
    MARKER,
    ProcessRuntime,
    Sandbox,
    StartError,
    kill_group,
    kill_quietly,
    marked_pids,
)
from .scheduler import NODE_NAME, insufficient, unschedulable_message
from .store import Event, Store

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class _Container:
    spec: Obj
    state: Obj
    proc: subprocess.Popen[bytes] | None = None
    started_at: str = ""


@dataclass
class _Run:
    """The kubelet's record of one bound pod."""

    uid: str
    namespace: str
    name: str
    dir: Path
    containers: dict[str, _Container]
    state: str = "starting"  # starting | blocked | running | finished
    sandbox: Sandbox | None = None
    deleting: bool = False
    stopped: threading.Event = field(default_factory=threading.Event)
    timer: threading.Timer | None = None

    def done(self) -> bool:
        return all("terminated" in c.state for c in self.containers.values())


def _condition(old: Sequence[Obj], kind: str, ok: bool, reason: str = "", message: str = "") -> Obj:
    """A PodCondition, keeping lastTransitionTime while its status is unchanged."""
    status = "True" if ok else "False"
    previous = next((c for c in old if c.get("type") == kind and c.get("status") == status), None)
    condition: Obj = {"type": kind, "status": status, "lastProbeTime": None,
                      "lastTransitionTime": previous["lastTransitionTime"] if previous else now()}
    if reason:
        condition.update(reason=reason, message=message)
    return condition


class Kubelet:
    """Schedules pods onto the single node and runs them with ``runtime``."""

    def __init__(self, store: Store, faults: Faults, runtime: ProcessRuntime, workdir: Path,
                 cluster_id: str, passthrough: Sequence[str]):
        self.store, self.faults, self.runtime = store, faults, runtime
        self.service_env: dict[str, str] = {}
        self._dir, self._id = workdir, cluster_id
        self._base = {"PATH": DEFAULT_PATH, "HOME": "/root"}
        self._base.update({k: os.environ[k] for k in passthrough if k in os.environ})
        self._runs: dict[str, _Run] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="testcluster-kubelet", daemon=True)
        store.subscribe(self._on_event)

    def start(self) -> None:
        self._thread.start()
        self.wake()

    def wake(self) -> None:
        """Re-run scheduling and retry blocked pods (after a fault or capacity change)."""
        self._wake.set()

    def _on_event(self, event: Event) -> None:
        if event.resource == "pods" and event.type == "DELETED":
            self._forget(meta(event.obj)["uid"])
        if event.type != "MODIFIED" or event.resource != "pods":
            self.wake()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            try:
                self._schedule()
            except Exception:
                LOG.exception("kubelet scheduling pass failed")

    def _schedule(self) -> None:
        node = self.store.get("nodes", "", NODE_NAME)
        pods = sorted(self.store.list("pods")[0],
                      key=lambda p: (meta(p)["creationTimestamp"], meta(p)["name"]))
        with self._lock:
            bound = [p for p in pods if meta(p)["uid"] in self._runs
                     and self._runs[meta(p)["uid"]].state != "finished"]
            for pod in pods:
                run = self._runs.get(meta(pod)["uid"])
                if "deletionTimestamp" in meta(pod) or self._closed:
                    continue
                if run is None and pod["status"].get("phase") == "Pending":
                    lacking = insufficient(pod, bound, node["status"]["allocatable"])
                    reason = self.faults.unschedulable or (
                        unschedulable_message(lacking) if lacking else None)
                    if reason:
                        self._set_unschedulable(pod, reason)
                        continue
                    run = self._bind(pod)
                    bound.append(pod)
                elif run is not None and run.state == "blocked":
                    run.state = "starting"
                else:
                    continue
                threading.Thread(target=self._start, args=(run,), daemon=True,
                                 name=f"testcluster-start-{run.name}").start()

    def _set_unschedulable(self, pod: Obj, message: str) -> None:
        def change(obj: Obj) -> Obj:
            old = obj["status"].get("conditions") or []
            obj["status"]["conditions"] = [
                _condition(old, "PodScheduled", False, "Unschedulable", message)]
            return obj
        self.store.update("pods", meta(pod)["namespace"], meta(pod)["name"], change)

    def _bind(self, pod: Obj) -> _Run:
        md = meta(pod)
        directory = self._dir / md["uid"]
        directory.mkdir(parents=True, exist_ok=True)
        containers = {c["name"]: _Container(c, {"waiting": {"reason": "ContainerCreating"}})
                      for c in pod["spec"]["containers"]}
        run = _Run(md["uid"], md["namespace"], md["name"], directory, containers)
        self._runs[run.uid] = run
        self._report(run, bind=True)
        return run

    def _report(self, run: _Run, bind: bool = False) -> Obj | None:
        """Write the pod's status from the containers' states; None if the pod is gone."""
        def change(obj: Obj) -> Obj:
            status = obj["status"]
            if bind:
                obj["spec"]["nodeName"] = NODE_NAME
                host = self.runtime.host_ip
                status.update(hostIP=host, hostIPs=[{"ip": host}], startTime=now())
            old = status.get("conditions") or []
            states = [c.state for c in run.containers.values()]
            done = run.done()
            if done:
                failed = any(s["terminated"]["exitCode"] for s in states)
                status["phase"] = "Failed" if failed else "Succeeded"
            else:
                status["phase"] = "Running" if any("running" in s for s in states) else "Pending"
            ready = all("running" in s for s in states)
            unready = [n for n, c in run.containers.items() if "running" not in c.state]
            why = ("PodCompleted", "") if done else (
                "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]")
            status["conditions"] = [
                _condition(old, "PodReadyToStartContainers", run.sandbox is not None and not done),
                _condition(old, "Initialized", True, "PodCompleted" if done else ""),
                _condition(old, "Ready", ready, *([] if ready else why)),
                _condition(old, "ContainersReady", ready, *([] if ready else why)),
                _condition(old, "PodScheduled", True)]
            if run.sandbox is not None:
                status.update(podIP=run.sandbox.ip, podIPs=[{"ip": run.sandbox.ip}])
            status["containerStatuses"] = [self._container_status(c)
                                           for c in run.containers.values()]
            return obj
        try:
            return self.store.update("pods", run.namespace, run.name, change)
        except ApiError as exc:
            if exc.code != 404:
                raise
            return None  # deleted meanwhile

    def _container_status(self, container: _Container) -> Obj:
        image = container.spec["image"]
        status: Obj = {"name": container.spec["name"], "image": image, "imageID": "",
                       "ready": "running" in container.state, "restartCount": 0,
                       "started": "running" in container.state, "state": container.state,
                       "lastState": {}}
        if container.proc is not None:
            digest = hashlib.sha256(image.encode()).hexdigest()
            status.update(imageID=f"{image}@sha256:{digest}",
                          containerID=f"{self.runtime.name}://{container.proc.pid}")
        return status

    def _waiting(self, run: _Run, reason: str, message: str) -> None:
        for container in run.containers.values():
            if "terminated" not in container.state:
                container.state = {"waiting": {"reason": reason, "message": message}}
        self._report(run)

    def _start(self, run: _Run) -> None:
        """Bring a bound pod's containers up; on failure leave it blocked for the next wake()."""
        try:
            if self.faults.start_delay and run.stopped.wait(self.faults.start_delay):
                return
            if self.faults.image_pull_failure:
                image = next(iter(run.containers.values())).spec["image"]
                self._waiting(run, "ErrImagePull", f'failed to pull and unpack image "{image}": '
                              "pull access denied (fiber test cluster fault)")
                if not run.stopped.wait(0.3):
                    self._waiting(run, "ImagePullBackOff", f'Back-off pulling image "{image}"')
            else:
                error = self._launch(run)
                if error is None:
                    return
                self._waiting(run, error.reason, str(error))
        except Exception as exc:
            LOG.exception("starting pod %s failed", run.name)
            self._waiting(run, "CreateContainerError", str(exc))
        run.state = "blocked"

    def _launch(self, run: _Run) -> podspec.ConfigError | None:
        pod = self.store.find("pods", run.namespace, run.name)
        if pod is None or meta(pod)["uid"] != run.uid:  # deleted while being bound
            self._forget(run.uid)
            return None
        if run.stopped.is_set():
            return None
        if run.sandbox is None:
            sandbox = self.runtime.create_sandbox(pod)
            with self._lock:
                if run.stopped.is_set():
                    self.runtime.destroy_sandbox(sandbox)
                    return None
                run.sandbox = sandbox
        pod["status"].update(podIP=run.sandbox.ip, podIPs=[{"ip": run.sandbox.ip}])
        capacity = self.store.get("nodes", "", NODE_NAME)["status"]["allocatable"]

        def secret(name: str) -> Obj | None:
            return self.store.find("secrets", run.namespace, name)
        plans = []
        try:
            paths = podspec.volumes(pod, run.dir / "volumes", secret)
            for name, container in run.containers.items():
                own = podspec.environment(pod, container.spec, secret, capacity, self.service_env)
                env = {**self._base, "HOSTNAME": run.name, **own,
                       MARKER: f"{self._id}/{run.uid}/{name}/"}
                plans.append((container, podspec.argv(container.spec, own), env,
                              podspec.mounts(container.spec, paths)))
        except podspec.ConfigError as exc:
            return exc
        with self._lock:
            if run.stopped.is_set():
                return None
            for container, argv, env, mounts in plans:
                log = run.dir / f"{container.spec['name']}.log"
                cwd = container.spec.get("workingDir")
                try:
                    container.proc = self.runtime.launch(run.sandbox, argv, env, cwd, mounts, log)
                    container.started_at = now()
                    container.state = {"running": {"startedAt": container.started_at}}
                except StartError as exc:
                    log.write_text(f"{exc}\n")
                    container.state = {"terminated": {
                        "exitCode": 128, "reason": "StartError", "message": str(exc),
                        "startedAt": "1970-01-01T00:00:00Z", "finishedAt": now()}}
            run.state = "running"
        self._report(run)
        for container in run.containers.values():
            if container.proc is not None:
                threading.Thread(target=self._wait, args=(run, container), daemon=True,
                                 name=f"testcluster-wait-{run.name}").start()
        if run.done():
            self._finish(run)
        return None

    def _wait(self, run: _Run, container: _Container) -> None:
        assert container.proc is not None
        code = container.proc.wait()
        kill_group(container.proc.pid)
        kill_quietly(marked_pids(f"{self._id}/{run.uid}/{container.spec['name']}/"))
        if self._closed:
            return
        terminated: Obj = {"exitCode": code if code >= 0 else 128 - code,
                           "reason": "Completed" if code == 0 else "Error",
                           "startedAt": container.started_at, "finishedAt": now(),
                           "containerID": f"{self.runtime.name}://{container.proc.pid}"}
        if code < 0:
            terminated["signal"] = -code
        with self._lock:
            container.state = {"terminated": terminated}
        self._finish(run)

    def _finish(self, run: _Run) -> None:
        """After a container ended: report, and remove the pod if it was being deleted."""
        obj = self._report(run)
        with self._lock:
            if not run.done() or run.state == "finished":
                return
            run.state = "finished"
            if run.timer:
                run.timer.cancel()
            remove = run.deleting or (obj is not None and "deletionTimestamp" in meta(obj))
        self.wake()
        if remove:
            self.store.delete("pods", run.namespace, run.name, missing_ok=True)

    # -- what the registry and the Cluster call --------------------------------------

    def running(self, uid: str) -> bool:
        with self._lock:
            run = self._runs.get(uid)
            return run is not None and run.state == "running" and not run.done()

    def terminate(self, uid: str, grace: int) -> bool:
        """SIGTERM now, SIGKILL after ``grace``; False if nothing runs (delete at once)."""
        with self._lock:
            run = self._runs.get(uid)
            if run is None or run.state != "running":
                return False
            run.deleting = True
            self.signal(uid, signal.SIGTERM)
            if run.timer:
                run.timer.cancel()
            run.timer = threading.Timer(grace, self._kill_run, (run,))
            run.timer.daemon = True
            run.timer.start()
            return True

    def kill(self, uid: str) -> None:
        with self._lock:
            run = self._runs.get(uid)
        if run is not None:
            self._kill_run(run)

    def signal(self, uid: str, sig: int) -> None:
        """Send ``sig`` to the main process of each running container of a pod."""
        kill_quietly(self.pids(uid), sig)

    def pids(self, uid: str) -> list[int]:
        with self._lock:
            run = self._runs.get(uid)
            containers = list(run.containers.values()) if run else []
        return [c.proc.pid for c in containers if c.proc is not None and "running" in c.state]

    def log_path(self, uid: str, container: str) -> Path | None:
        with self._lock:
            run = self._runs.get(uid)
        path = run.dir / f"{container}.log" if run else None
        return path if path is not None and path.exists() else None

    def _kill_run(self, run: _Run) -> None:
        for container in run.containers.values():
            if container.proc is not None:
                kill_group(container.proc.pid)
        kill_quietly(marked_pids(f"{self._id}/{run.uid}/"))
        if run.sandbox is not None:
            kill_quietly(self.runtime.sandbox_pids(run.sandbox))

    def _forget(self, uid: str) -> None:
        """The pod object is gone: kill what is left and free its sandbox and files."""
        with self._lock:
            run = self._runs.pop(uid, None)
            if run is None:
                return
            run.stopped.set()
            if run.timer:
                run.timer.cancel()
        self._kill_run(run)
        if run.sandbox is not None:
            self.runtime.destroy_sandbox(run.sandbox)
        shutil.rmtree(run.dir, ignore_errors=True)

    def close(self) -> None:
        """Kill every process this kubelet started and free every sandbox."""
        self._closed = True
        self.wake()
        if self._thread.is_alive():
            self._thread.join(5)
        with self._lock:
            runs = list(self._runs.values())
            self._runs.clear()
            for run in runs:
                run.stopped.set()
                if run.timer:
                    run.timer.cancel()
        for run in runs:
            self._kill_run(run)
        for run in runs:
            for container in run.containers.values():
                if container.proc is not None:
                    try:
                        container.proc.wait(5)
                    except subprocess.TimeoutExpired:
                        LOG.error("pod %s: process %d survived SIGKILL", run.name,
                                  container.proc.pid)
        deadline = time.monotonic() + 5
        while (left := marked_pids(f"{self._id}/")) and time.monotonic() < deadline:
            kill_quietly(left)  # until SIGKILL has done its work, and forks caught mid-way
            time.sleep(0.01)
        if left:
            LOG.error("test cluster %s: processes %s survived SIGKILL", self._id, left)
        for run in runs:
            if run.sandbox is not None:
                self.runtime.destroy_sandbox(run.sandbox)
        self.runtime.close()
