"""The kubernetes backend's state in one process: its client, own pod, watches and Secrets.

Every Fiber process is one pod (restartPolicy Never) running ``python -m
fiber_core.worker``. The run's secret lives in one Kubernetes Secret per run, which
the pods read through ``secretKeyRef``; the process that created it deletes it at
shutdown, and Kubernetes does when the master pod (its owner) goes.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
import uuid
from typing import Dict, List, Optional, Tuple

from kubernetes.client.rest import ApiException

from fiber_core.config import Config
from fiber_core.hookspecs import SECRET_ENV, Job, JobSpec
from fiber_k8s import manifests
from fiber_k8s.api import Api, context_namespace
from fiber_k8s.environment import POD_IP_ENV, own_namespace, own_pod_name, route_address
from fiber_k8s.errors import PodPendingError
from fiber_k8s.manifests import Obj
from fiber_k8s.watch import PodRecord, PodWatcher

logger = logging.getLogger("fiber")

LOG_TAIL_LINES = 20
"""Lines of a failed worker's output logged before its pod is deleted."""


def api_error(error: ApiException, doing: str) -> RuntimeError:
    """An ApiException turned into an error that says how to fix it."""
    hints = {401: "check the credentials of your kubeconfig context",
             403: "grant the service account the Role in deploy/rbac.yaml of fiber-k8s "
                  "(kubectl apply -f rbac.yaml)",
             404: "check that the namespace exists (k8s_namespace)",
             422: "check the configuration that went into the pod spec"}
    hint = hints.get(error.status or 0, "check that the cluster is reachable")
    return RuntimeError(f"cannot {doing}: Kubernetes answered {error.status} {error.reason}: "
                        f"{(error.body or '').strip()[:500]}; {hint}")


class KubernetesBackend:
    """One per process: what the hooks share."""

    def __init__(self) -> None:
        self.spawner = uuid.uuid4().hex[:10]
        """Labels the pods this process creates, so its watch sees only those."""
        self._api: Optional[Api] = None
        self._own: Optional[Obj] = None
        self._own_looked_up = False
        self._watchers: Dict[str, PodWatcher] = {}
        self._secrets: Dict[Tuple[str, str], bool] = {}
        """(run id, namespace) -> whether this process created (and must delete) it."""
        self._lock = threading.RLock()

    @property
    def api(self) -> Api:
        with self._lock:
            if self._api is None:
                self._api = Api()
            return self._api

    def own_pod(self, config: Config) -> Optional[Obj]:
        """The pod this process runs in (None outside a cluster or when unknown)."""
        with self._lock:
            if not self._own_looked_up:
                self._own_looked_up = True
                name = own_pod_name(config.get("k8s_pod_name"))
                if name:
                    namespace = (own_namespace() or config.get("k8s_namespace")
                                 or context_namespace())
                    try:
                        self._own = self.api.call("read_namespaced_pod", name, namespace)
                    except ApiException as error:
                        logger.warning("cannot read this process's pod %s/%s (%s %s): its "
                                       "image, volumes and service account are not inherited "
                                       "and worker pods are not owned by it",
                                       namespace, name, error.status, error.reason)
            return self._own

    # -- the hooks ------------------------------------------------------------------------

    def master_address(self, config: Config) -> str:
        """This pod's IP; outside a pod the configured address, else the route's."""
        address = os.environ.get(POD_IP_ENV) or config.get("k8s_master_address")
        if address:
            return str(address)
        own = self.own_pod(config)
        if own and own.get("status", {}).get("podIP"):
            return str(own["status"]["podIP"])
        return route_address(self.api.api_server_host())

    def spawn(self, spec: JobSpec, config: Config) -> Job:
        own = self.own_pod(config)
        own_ns = own["metadata"]["namespace"] if own else None
        namespace = config.get("k8s_namespace") or own_ns or context_namespace()
        same = own if own_ns == namespace else None
        """Owner references and volumes only work within one namespace."""
        image = spec.image or (own["spec"]["containers"][0]["image"] if own else None)
        if not image:
            raise RuntimeError("no image for the worker pods: set FIBER_IMAGE (or the image "
                               "key) to an image holding your program, fiber-core and fiber-k8s")
        owner = manifests.owner_reference(same) if same else None
        secret = self._ensure_secret(spec, namespace, owner)
        volumes, mounts = self._volumes(spec, config, same)
        name = manifests.pod_name(spec.name)
        inherited = manifests.inherited_env(same, [*spec.env, SECRET_ENV]) if same else []
        body = manifests.pod(
            name, namespace, image, [config.get("k8s_python"), *spec.command[1:]],
            labels=manifests.labels(spec.run_id, spec.name, self.spawner), env=spec.env,
            env_from=[*inherited, manifests.secret_env(SECRET_ENV, manifests.SECRET_KEY,
                                                       secret)],
            resources=manifests.resources(spec.cpu, spec.memory, spec.gpu),
            volumes=volumes, mounts=mounts, owner=owner,
            service_account=config.get("k8s_service_account") or (
                same["spec"].get("serviceAccountName") if same else None),
            pull_secrets=same["spec"].get("imagePullSecrets") or [] if same else [],
            working_dir=same["spec"]["containers"][0].get("workingDir") if same else None)
        watcher = self._watcher(namespace, spec.run_id, config)
        record = PodRecord(name, namespace, spec.name, config.get("k8s_grace_period"),
                           time.monotonic() + config.get("k8s_pending_timeout"))
        watcher.add(record)
        try:
            self.api.call("create_namespaced_pod", namespace, body)
        except ApiException as error:
            watcher.forget(name)
            raise api_error(error, f"create the pod of {spec.name}") from None
        record.created_at = time.monotonic()
        logger.debug("started %s as pod %s/%s", spec.name, namespace, name)
        return Job(id=name, handle=record)

    def poll(self, job: Job) -> Optional[int]:
        record: PodRecord = job.handle
        watcher = self._watchers.get(record.namespace)
        if watcher is not None and record.exitcode is None:
            watcher.check_stuck()
        if record.failure and not record.failure_reported:
            record.failure_reported = True
            raise PodPendingError(record.failure)
        return record.exitcode

    def terminate(self, job: Job, force: bool) -> None:
        record: PodRecord = job.handle
        if record.exitcode is not None:
            return
        record.stop_signal = signal.SIGKILL if force else signal.SIGTERM
        self.api.delete_pod(record.name, record.namespace, 0 if force else record.grace)

    def shutdown(self, run_id: str) -> None:
        """Stop watching, delete what is left of this process's pods and its Secrets."""
        with self._lock:
            watchers, self._watchers = self._watchers, {}
            made = [key for key, own in self._secrets.items() if own and key[0] == run_id]
            self._secrets.clear()
        if self._api is None:
            return
        for namespace, watcher in watchers.items():
            watcher.stop()
            self._delete_leftovers(namespace, watcher.selector)
        for run, namespace in made:
            try:
                self.api.delete_secret(manifests.secret_name(run), namespace)
            except (ApiException, OSError) as error:
                logger.warning("cannot delete the run's Secret %s: %s",
                               manifests.secret_name(run), error)
        self.api.close()
        self._api = None

    # -- helpers --------------------------------------------------------------------------

    def _ensure_secret(self, spec: JobSpec, namespace: str, owner: Optional[Obj]) -> str:
        """Create the run's Secret in ``namespace`` once (an ancestor may have made it)."""
        name = manifests.secret_name(spec.run_id)
        with self._lock:
            if (spec.run_id, namespace) in self._secrets:
                return name
            body = manifests.run_secret(spec.run_id, namespace, spec.secret, owner)
            try:
                self.api.call("create_namespaced_secret", namespace, body)
                self._secrets[spec.run_id, namespace] = True
            except ApiException as error:
                if error.status != 409:
                    raise api_error(error, f"create the run's Secret {name}") from None
                self._secrets[spec.run_id, namespace] = False
        return name

    @staticmethod
    def _volumes(spec: JobSpec, config: Config,
                 same: Optional[Obj]) -> Tuple[List[Obj], List[Obj]]:
        claims = [*config.get("k8s_volumes"), *spec.volumes.items()]
        if claims:
            return manifests.claim_volumes(claims)
        return manifests.inherited_volumes(same) if same else ([], [])

    def _watcher(self, namespace: str, run_id: str, config: Config) -> PodWatcher:
        with self._lock:
            watcher = self._watchers.get(namespace)
            if watcher is None:
                selector = manifests.selector({
                    manifests.RUN_LABEL: manifests.label_value(run_id),
                    manifests.SPAWNER_LABEL: self.spawner})
                period = int(min(60, max(1, math.ceil(config.get("k8s_pending_timeout") / 4))))
                watcher = self._watchers[namespace] = PodWatcher(
                    self.api, namespace, selector, period, self._ended, self._stuck)
            return watcher

    def _ended(self, record: PodRecord, pod: Obj) -> None:
        """On the watch thread: log a failed worker's last output, then delete its pod."""
        try:
            if record.exitcode and record.exitcode > 0:
                tail = self.api.stream("read_namespaced_pod_log", record.name,
                                       record.namespace, tail_lines=LOG_TAIL_LINES)
                logger.warning("%s (pod %s) exited with code %d; its last output:\n%s",
                               record.process, record.name, record.exitcode,
                               tail.data.decode(errors="replace").rstrip())
            self.api.delete_pod(record.name, record.namespace, 0)
        except (ApiException, OSError) as error:
            logger.debug("cleaning up pod %s: %s", record.name, error)

    def _stuck(self, record: PodRecord) -> None:
        """A pod waited too long for a reason that will not go away: fail its process."""
        logger.error("%s", record.give_up())
        try:
            self.api.delete_pod(record.name, record.namespace, 0)
        except (ApiException, OSError) as error:
            logger.debug("deleting stuck pod %s: %s", record.name, error)

    def _delete_leftovers(self, namespace: str, selector: str) -> None:
        try:
            listing = self.api.call("list_namespaced_pod", namespace, label_selector=selector)
            for item in listing.get("items", []):
                self.api.delete_pod(item["metadata"]["name"], namespace, 0)
        except (ApiException, OSError) as error:
            logger.warning("cannot delete the pods left by this process: %s", error)
