"""The kubernetes backend on the test cluster: what its pods look like, how it reports
pods that cannot start, how it cleans up, and which address it advertises.

Every master here is a program of its own (a subprocess, or a pod), as a user's is: the
backend's state is per process, and its end (shutdown) is part of what is tested.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

pytest.importorskip("kubernetes")
from cluster import UNSCHEDULABLE, Cluster
from conftest import TEST_IMAGE, fiber_env, wait_clean

from fiber_k8s import manifests

NS = "default"


def master(cluster: Cluster, script: str, timeout: float = 60, **env: str) -> str:
    """Run ``script`` as a master outside the cluster; its stdout (it must exit 0)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **fiber_env(cluster, **env)})
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def pods(cluster: Cluster, **labels: str) -> List[Dict[str, Any]]:
    found = cluster.store.list("pods")[0]
    return [p for p in found if all(p["metadata"].get("labels", {}).get(k) == v
                                    for k, v in labels.items())]


def pod_log(cluster: Cluster, name: str) -> str:
    pod = cluster.store.find("pods", NS, name)
    path = pod and cluster.kubelet.log_path(pod["metadata"]["uid"], manifests.CONTAINER)
    return path.read_text() if path else f"(no log of {name})"


def wait_for(check: Any, timeout: float = 20.0, why: Any = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {check}: {why and why()}"
        time.sleep(0.05)
    return value


def phases(cluster: Cluster) -> Dict[str, str]:
    """Record the last phase of every pod the cluster ever held, by name."""
    seen: Dict[str, str] = {}

    def note(event: Any) -> None:
        if event.resource == "pods":
            seen[event.obj["metadata"]["name"]] = event.obj.get("status", {}).get("phase", "")
    cluster.store.subscribe(note)
    return seen


WORKER_WAITS = """
import os, time, fiber_core

@fiber_core.meta(cpu=0.5, memory=300, gpu=1)
def wait_for_go(path):
    while not os.path.exists(path):
        time.sleep(0.05)

if __name__ == "__main__":
    p = fiber_core.Process(target=wait_for_go, args=({go!r},),
                           name="Worker_With A Very Long Name/" + "x" * 80)
    p.start()
    p.join()
    print("exit", p.exitcode)
"""


def test_worker_pod_spec_in_a_master_pod(k8s_nesting_cluster: Cluster, tmp_path: Path) -> None:
    """A master in a pod: its worker's pod gets resources, labels, an owner, inherited
    volumes, service account, pull secrets and image, and the secret only by reference."""
    cluster, go = k8s_nesting_cluster, tmp_path / "go"
    shared = tmp_path / "shared"
    program = tmp_path / "program.py"
    program.write_text(WORKER_WAITS.format(go=str(go)))
    env = fiber_env(cluster)
    del env["FIBER_IMAGE"]  # workers inherit the master pod's image
    body = manifests.pod(
        "the-master", NS, "registry.example/app:7", [sys.executable, str(program)],
        labels={"app": "demo"}, env=env,
        volumes=[{"name": "data", "hostPath": {"path": str(shared), "type": "DirectoryOrCreate"}},
                 {"name": "scratch", "emptyDir": {}}],
        mounts=[{"name": "data", "mountPath": str(shared)},
                {"name": "scratch", "mountPath": str(tmp_path / "scratch")}],
        service_account="fiber", pull_secrets=[{"name": "regcred"}])
    created = cluster.registry.create("pods", NS, body)
    worker = wait_for(lambda: [p for p in pods(cluster) if p["metadata"]["name"] != "the-master"],
                      why=lambda: pod_log(cluster, "the-master"))[0]
    spec, container = worker["spec"], worker["spec"]["containers"][0]

    name = worker["metadata"]["name"]
    assert len(name) <= 63 and name.startswith("worker-with-a-very-long-name-xxx")
    labels = worker["metadata"]["labels"]
    assert labels[manifests.RUN_LABEL] and labels[manifests.SPAWNER_LABEL]
    assert labels[manifests.PROCESS_LABEL].startswith("Worker_With-A-Very-Long-Name-x")
    assert worker["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "the-master",
         "uid": created["metadata"]["uid"]}]
    assert spec["restartPolicy"] == "Never"
    assert container["image"] == "registry.example/app:7"
    assert container["command"] == [sys.executable, "-m", "fiber_core.worker"]
    amounts = {"cpu": "500m", "memory": "300Mi", "nvidia.com/gpu": "1"}
    assert container["resources"] == {"requests": amounts, "limits": amounts}
    assert [v["name"] for v in spec["volumes"]] == ["data"]  # not the master's scratch space
    assert container["volumeMounts"] == [{"name": "data", "mountPath": str(shared)}]
    assert spec["serviceAccountName"] == "fiber"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]

    (secret,) = cluster.store.list("secrets")[0]
    value = base64.b64decode(secret["data"][manifests.SECRET_KEY]).decode()
    assert value not in json.dumps(worker) and value not in json.dumps(created)
    variables = {var["name"]: var for var in container["env"]}
    assert variables["FIBER_WORKER_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"], "key": manifests.SECRET_KEY}
    assert secret["metadata"]["ownerReferences"][0]["name"] == "the-master"
    assert variables["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert variables["FIBER_K8S_PYTHON"]["value"] == sys.executable  # the master's env, inherited

    go.touch()
    wait_for(lambda: cluster.store.get("pods", NS, "the-master")["status"]["phase"]
             == "Succeeded")
    assert [p["metadata"]["name"] for p in pods(cluster)] == ["the-master"]
    assert cluster.store.list("secrets")[0] == []  # deleted by the master at its end
    cluster.registry.delete("pods", NS, "the-master", {})


def test_unschedulable_and_unpullable_pods_fail_with_the_reason(
        k8s_nesting_cluster: Cluster) -> None:
    """No hang: join() raises with the scheduler's reason, and so does a Pool's map()."""
    cluster = k8s_nesting_cluster
    cluster.expire_next_watch()  # the first watch answers 410: the backend lists again
    out = master(cluster, """
        import time, fiber_core
        from fiber_k8s import PodPendingError

        @fiber_core.meta(gpu=2)
        def greedy(x):
            return x

        if __name__ == "__main__":
            p = fiber_core.Process(target=greedy, args=(1,))
            start = time.monotonic()
            p.start()
            try:
                p.join(30)
            except PodPendingError as error:
                print("process:", round(time.monotonic() - start), error)
            p.join(5)
            print("exitcode:", p.exitcode)
            with fiber_core.Pool(1) as pool:
                try:
                    pool.map(greedy, [1, 2])
                except Exception as error:
                    print("pool:", type(error).__name__, error)
    """, FIBER_K8S_PENDING_TIMEOUT="1")
    process = next(line for line in out.splitlines() if line.startswith("process:"))
    assert int(process.split()[1]) <= 5
    assert "is still Pending" in process and "Insufficient nvidia.com/gpu" in process
    assert "exitcode: 1" in out
    assert "pool: PodPendingError" in out and "Insufficient nvidia.com/gpu" in out

    for fault, expected in ((cluster.fail_image_pulls, ("ErrImagePull", "ImagePullBackOff")),
                            (cluster.make_unschedulable, (UNSCHEDULABLE,))):
        cluster.clear_faults()
        fault()
        out = master(cluster, """
            import fiber_core
            from fiber_k8s import PodPendingError
            if __name__ == "__main__":
                p = fiber_core.Process(target=print)
                p.start()
                try:
                    p.join(30)
                except PodPendingError as error:
                    print(error)
        """, FIBER_K8S_PENDING_TIMEOUT="1")
        assert any(reason in out for reason in expected), out


def test_deleting_the_master_pod_collects_every_worker(k8s_nesting_cluster: Cluster,
                                                       tmp_path: Path) -> None:
    cluster = k8s_nesting_cluster
    program = tmp_path / "program.py"
    program.write_text(textwrap.dedent("""
        import time, fiber_core
        if __name__ == "__main__":
            workers = [fiber_core.Process(target=time.sleep, args=(600,)) for _ in range(3)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
    """))
    body = manifests.pod("doomed-master", NS, TEST_IMAGE, [sys.executable, str(program)],
                         labels={}, env={**fiber_env(cluster)})
    cluster.registry.create("pods", NS, body)
    wait_for(lambda: len([p for p in pods(cluster) if p["status"].get("phase") == "Running"])
             == 4)
    assert len(cluster.store.list("secrets")[0]) == 1
    cluster.registry.delete("pods", NS, "doomed-master", {"gracePeriodSeconds": 0})
    assert not wait_clean(cluster)


def test_orderly_shutdown_ends_worker_pods_succeeded(k8s_nesting_cluster: Cluster) -> None:
    cluster = k8s_nesting_cluster
    seen = phases(cluster)
    out = master(cluster, """
        import fiber_core
        if __name__ == "__main__":
            with fiber_core.Pool(3) as pool:
                print(sum(pool.map(abs, range(-20, 0))))
                pool.close()
                pool.join()
            p = fiber_core.Process(target=print, args=("hello",))
            p.start()
            p.join()
            print("exit", p.exitcode)
    """)
    assert out.split() == ["210", "exit", "0"]
    assert len(seen) == 4 and set(seen.values()) == {"Succeeded"}, seen


def test_terminate_honours_the_grace_period_and_reports_signals(
        k8s_nesting_cluster: Cluster) -> None:
    cluster = k8s_nesting_cluster
    out = master(cluster, """
        import signal, time, fiber_core

        def stubborn():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(600)

        if __name__ == "__main__":
            p = fiber_core.Process(target=stubborn)
            p.start()
            time.sleep(1.5)
            start = time.monotonic()
            p.terminate()
            p.join(30)
            print(p.exitcode, round(time.monotonic() - start))
    """, FIBER_K8S_GRACE_PERIOD="2")
    code, took = out.split()
    assert code == "-9" and 2 <= int(took) <= 4  # SIGTERM ignored: SIGKILL after the grace


def test_master_outside_advertises_a_reachable_address(k8s_netns_cluster: Cluster) -> None:
    """Pods with their own IP reach a master outside the cluster at the configured address
    (encrypted: it is not loopback), and see their own pod name as hostname."""
    cluster = k8s_netns_cluster
    out = master(cluster, """
        import os, socket, fiber_core

        def where(queue):
            queue.put((socket.gethostname(), os.environ["POD_NAME"], os.environ["POD_IP"]))

        if __name__ == "__main__":
            queue = fiber_core.Queue()
            p = fiber_core.Process(target=where, args=(queue,))
            p.start()
            print(*queue.get())
            p.join()
            print(fiber_core.context.runtime().hub.address, p.exitcode)
    """, FIBER_K8S_MASTER_ADDRESS=cluster.host_ip)
    hostname, pod, ip, address, code = out.split()
    assert hostname == pod and ip not in ("127.0.0.1", cluster.host_ip)
    assert address.startswith(f"curve+tcp://{cluster.host_ip}:") and code == "0"
    assert not wait_clean(cluster)


def test_default_address_is_the_route_to_the_api_server(k8s_cluster: Cluster) -> None:
    from fiber_k8s.api import Api
    from fiber_k8s.environment import route_address

    api = Api()
    try:
        assert route_address(api.api_server_host()) == "127.0.0.1"  # the server is local
    finally:
        api.close()


def test_pods_are_watched_once_per_run(k8s_nesting_cluster: Cluster) -> None:
    """Status comes from one watch: no per-pod reads, however many processes."""
    cluster = k8s_nesting_cluster
    requests: List[str] = []
    log_handler = _Recorder(requests)
    logger = logging.getLogger("fiber.testcluster")
    logger.addHandler(log_handler)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        master(cluster, """
            import fiber_core
            if __name__ == "__main__":
                ps = [fiber_core.Process(target=abs, args=(-i,)) for i in range(5)]
                for p in ps:
                    p.start()
                for p in ps:
                    p.join()
                assert [p.exitcode for p in ps] == [0] * 5
        """)
    finally:
        logger.removeHandler(log_handler)
        logger.setLevel(previous)
    watches = [r for r in requests if "watch=true" in r.lower()]  # 31.x sends True
    reads = [r for r in requests if r.startswith("GET /api/v1/namespaces/default/pods/")
             and "/log" not in r]
    assert len(watches) >= 1 and not reads
    assert len({r.split("labelSelector=")[1].split("&")[0] for r in watches}) == 1


class _Recorder(logging.Handler):
    """A logging handler keeping the test API server's request lines."""

    def __init__(self, requests: List[str]) -> None:
        super().__init__()
        self.requests = requests

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if '"' in message:
            self.requests.append(message.split('"')[1])  # emit() runs under a lock
