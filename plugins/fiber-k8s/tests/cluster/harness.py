"""The Cluster: API server, store, kubelet and kubeconfig, started and stopped as one."""

from __future__ import annotations

import atexit
import platform
import secrets
import shutil
import signal
import tempfile
import weakref
from pathlib import Path
from types import TracebackType
from typing import Mapping, Sequence

from .apiserver import ApiServer
from .faults import UNSCHEDULABLE, Faults
from .kubelet import Kubelet
from .meta import LOG, Obj, meta, new_uid, now
from .netns import NetnsRuntime, netns_unavailable
from .registry import Registry
from .runtime import ProcessRuntime
from .scheduler import DEFAULT_CAPACITY, NODE_NAME
from .store import Store

DEFAULT_PASSTHROUGH = ("PATH", "HOME", "VIRTUAL_ENV", "PYTHONPATH", "LANG", "LC_ALL", "TZ",
                       "TMPDIR")
_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: fiber-test
  cluster:
    server: {url}
contexts:
- name: fiber-test
  context:
    cluster: fiber-test
    namespace: default
    user: fiber-test
current-context: fiber-test
users:
- name: fiber-test
  user:
    token: {token}
"""


_RUNNING: weakref.WeakSet[Cluster] = weakref.WeakSet()


@atexit.register
def _stop_forgotten() -> None:
    """A cluster its test forgot to stop must not leave pods running after Python exits."""
    for cluster in list(_RUNNING):
        cluster.stop()


class Cluster:
    """A fake single-node Kubernetes cluster whose pods really run.

    ``workdir`` holds the kubeconfig, pod logs and volumes (default: a temporary folder,
    removed by stop()). ``runtime`` "process" runs containers as local processes (pod
    IP 127.0.0.1); "netns" gives each pod its own network and UTS namespace (root) on a
    bridge in ``subnet`` (default: the first free 10.244.77-126.0/24). ``node_capacity``
    overrides the node's resources, e.g. ``{"cpu": "2", "nvidia.com/gpu": "1"}``.
    ``env_passthrough`` names host variables every container inherits. ``history_size``
    events are kept for watches to resume from; older resourceVersions get 410.
    """

    def __init__(self, workdir: str | Path | None = None, *, runtime: str = "process",
                 node_capacity: Mapping[str, str] | None = None,
                 env_passthrough: Sequence[str] = DEFAULT_PASSTHROUGH, subnet: str | None = None,
                 token: str = "fiber-test-token", history_size: int = 1000, port: int = 0):
        if runtime not in ("process", "netns"):
            raise ValueError(f"unknown runtime {runtime!r}; choose 'process' or 'netns'")
        self.id = secrets.token_hex(2)
        self.runtime = runtime
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="fiber-testcluster-"))
        self.kubeconfig = self.workdir / "kubeconfig"
        self.token = token
        self.faults = Faults()
        self.store = Store(history_size)
        self.registry = Registry(self.store, self.faults)
        self._runtime = NetnsRuntime(self.id, subnet) if runtime == "netns" else ProcessRuntime()
        self.kubelet = Kubelet(self.store, self.faults, self._runtime, self.workdir / "pods",
                               self.id, env_passthrough)
        self.registry.pods = self.kubelet
        self.server = ApiServer(self.store, self.registry, self.kubelet, self.faults, token)
        self._capacity = {**DEFAULT_CAPACITY, **(node_capacity or {})}
        self._port = port
        self._state = "new"

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host_ip(self) -> str:
        """The address pods reach the host at (the bridge in the netns runtime)."""
        return self._runtime.host_ip

    def pod_kubeconfig(self) -> str:
        """Kubeconfig text for use inside a pod: the server at the address pods reach.

        Put it in a secret volume (or env) for a master that runs in a pod and makes pods.
        """
        url = f"http://{self.host_ip}:{self.port}"
        return _KUBECONFIG.format(url=url, token=self.token)

    @property
    def env(self) -> dict[str, str]:
        """Environment for a client process: ``KUBECONFIG``."""
        return {"KUBECONFIG": str(self.kubeconfig)}

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> Cluster:
        """Serve the API, start the kubelet and write the kubeconfig."""
        if self._state != "new":
            raise RuntimeError("a Cluster starts once")
        self._state = "started"
        _RUNNING.add(self)
        if self.runtime == "netns" and (reason := netns_unavailable()):
            raise RuntimeError(reason)
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._runtime.start()
            for name in ("default", "kube-system", "kube-public"):
                self.registry.create("namespaces", "", {"metadata": {"name": name}})
            self.store.create("nodes", self._node())
            hosts = ["127.0.0.1"] + ([self.host_ip] if self.runtime == "netns" else [])
            self.server.start(hosts, self._port)
            self.kubelet.service_env = {"KUBERNETES_SERVICE_HOST": self.host_ip,
                                        "KUBERNETES_SERVICE_PORT": str(self.port)}
            self.kubelet.start()
            self.kubeconfig.write_text(_KUBECONFIG.format(url=self.url, token=self.token))
        except BaseException:
            self.stop()
            raise
        LOG.info("test cluster %s up at %s (runtime %s)", self.id, self.url, self.runtime)
        return self

    def stop(self) -> None:
        """Kill every pod process, free namespaces and links, shut the server down."""
        if self._state != "started":
            return
        self._state = "stopped"
        _RUNNING.discard(self)
        self.server.stop()
        self.store.close()
        self.kubelet.close()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        LOG.info("test cluster %s stopped", self.id)

    def _node(self) -> Obj:
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "message": "kubelet is posting ready status", "lastHeartbeatTime": now(),
                 "lastTransitionTime": now()}
        return {
            "kind": "Node", "apiVersion": "v1",
            "metadata": {"name": NODE_NAME, "uid": new_uid(), "creationTimestamp": now(),
                         "labels": {"kubernetes.io/hostname": NODE_NAME,
                                    "kubernetes.io/os": "linux", "kubernetes.io/arch": arch}},
            "spec": {},
            "status": {
                "capacity": dict(self._capacity), "allocatable": dict(self._capacity),
                "conditions": [ready],
                "addresses": [{"type": "InternalIP", "address": self.host_ip},
                              {"type": "Hostname", "address": NODE_NAME}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {"architecture": arch, "bootID": "", "machineID": "", "systemUUID": "",
                             "containerRuntimeVersion": f"{self.runtime}://fiber-test",
                             "kernelVersion": platform.release(), "kubeProxyVersion": "",
                             "kubeletVersion": "v1.31.0-fiber-test", "operatingSystem": "linux",
                             "osImage": "fiber test cluster"}}}

    # -- fault hooks ----------------------------------------------------------------

    def fail_pod_creates(self, count: int = 1, code: int = 500) -> None:
        """Fail the next ``count`` pod creates with ``code`` (500 InternalError, 403 Forbidden)."""
        self.faults.update(create_failures=count, create_failure_code=code)

    def expire_next_watch(self, count: int = 1) -> None:
        """Make the next ``count`` watches answer with one ERROR event of code 410."""
        self.faults.update(expired_watches=count)

    def make_unschedulable(self, message: str = UNSCHEDULABLE) -> None:
        """Keep pods not yet scheduled Pending with PodScheduled=False, reason Unschedulable."""
        self.faults.update(unschedulable=message)

    def fail_image_pulls(self) -> None:
        """Leave newly scheduled pods waiting with ErrImagePull, then ImagePullBackOff."""
        self.faults.update(image_pull_failure=True)

    def slow_starts(self, seconds: float) -> None:
        """Keep each scheduled pod in ContainerCreating for ``seconds`` before it starts."""
        self.faults.update(start_delay=seconds)

    def set_node_capacity(self, capacity: Mapping[str, str]) -> None:
        """Change the node's capacity (merged into the current one); pending pods are retried."""
        def change(node: Obj) -> Obj:
            for key in ("capacity", "allocatable"):
                node["status"][key].update(capacity)
            return node
        self.store.update("nodes", "", NODE_NAME, change)

    def clear_faults(self) -> None:
        """Switch every fault off; pods held Pending by one are retried."""
        self.faults.clear()
        self.kubelet.wake()

    # -- inspection -----------------------------------------------------------------

    def _uid(self, name: str, namespace: str) -> str:
        return str(meta(self.store.get("pods", namespace, name))["uid"])

    def pod_pids(self, name: str, namespace: str = "default") -> list[int]:
        """Host pids of the pod's running container main processes."""
        return self.kubelet.pids(self._uid(name, namespace))

    def kill_pod(self, name: str, namespace: str = "default", sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the pod's container processes, as an OOM kill or crash would."""
        self.kubelet.signal(self._uid(name, namespace), sig)
