"""The test cluster, driven through the official kubernetes client as fiber-k8s will drive it."""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

pytest.importorskip("kubernetes")
from cluster import Cluster, netns_unavailable
from cluster.runtime import marked_pids
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

PY = sys.executable
NS = "default"
SLEEP = "import time; time.sleep(120)"
# CoreV1Api, typed loosely: bodies are plain dicts, as fiber-k8s sends them, and 37.x's
# pydantic annotations reject those under mypy though the client accepts them.
Api = Any


def core(api_client: Any = None) -> Api:
    return client.CoreV1Api(api_client)


def pod_body(name: str, script: str = SLEEP, *, labels: dict[str, str] | None = None,
             container: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """A one-container pod running ``python -c script``."""
    main = {"name": "main", "image": "python:3.11-slim", "command": [PY, "-u", "-c", script]}
    main.update(container or {})
    metadata: dict[str, Any] = {"labels": labels or {}}
    metadata["generateName" if name.endswith("-") else "name"] = name
    return {"metadata": metadata, "spec": {"restartPolicy": "Never", "containers": [main], **spec}}


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {check}"
        time.sleep(0.02)


def wait_phase(api: Api, name: str, *phases: str) -> Any:
    def reached() -> Any:
        pod = api.read_namespaced_pod(name, NS)
        return pod if pod.status.phase in phases else None
    return wait_for(reached)


def scheduled_condition(api: Api, name: str) -> Any:
    def condition() -> Any:
        for c in api.read_namespaced_pod(name, NS).status.conditions or []:
            if c.type == "PodScheduled":
                return c
        return None
    return wait_for(condition)


def status_code(response: Any) -> int:
    """The HTTP status of a *_with_http_info call (a tuple in 31.x, ApiResponse in 37.x)."""
    return response[1] if isinstance(response, tuple) else response.status_code


def body_of(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body or "{}")


def log_of(api: Api, name: str, **kwargs: Any) -> str:
    """The pod's log as sent (31.x's client would turn a JSON-looking log into a repr)."""
    response = api.read_namespaced_pod_log(name, NS, _preload_content=False, **kwargs)
    return response.data.decode()


def logged(api: Api, name: str, text: str) -> bool:
    """Whether the pod's log has ``text`` yet (400 while its container has not started)."""
    try:
        return text in log_of(api, name)
    except ApiException as exc:
        if exc.status != 400:
            raise
        return False


def gone(pid: int) -> bool:
    """Whether the process has ended (a zombie counts: it runs nothing any more)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def api(k8s_cluster: Cluster) -> Iterator[Api]:
    api_client = config.new_client_from_config(str(k8s_cluster.kubeconfig))
    yield core(api_client)
    api_client.close()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Callable[..., tuple[Cluster, Api]]]:
    """Start a Cluster with custom arguments; stopped at the end of the test."""
    started: list[tuple[Cluster, Any]] = []

    def start(**kwargs: Any) -> tuple[Cluster, Api]:
        cluster = Cluster(tmp_path / f"c{len(started)}", **kwargs).start()
        api_client = config.new_client_from_config(str(cluster.kubeconfig))
        started.append((cluster, api_client))
        return cluster, core(api_client)
    yield start
    for cluster, api_client in started:
        api_client.close()
        cluster.stop()


def test_discovery_version_and_default_kubeconfig(k8s_cluster: Cluster) -> None:
    config.load_kube_config()  # KUBECONFIG from the fixture
    assert client.VersionApi().get_code().git_version.startswith("v1.")
    assert client.CoreApi().get_api_versions().versions == ["v1"]
    names = {r.name for r in core().get_api_resources().resources}
    assert {"pods", "pods/log", "pods/status", "secrets", "namespaces"} <= names
    nodes = core().list_node().items
    assert [n.metadata.name for n in nodes] == ["fiber-test-node"]
    namespaces = {n.metadata.name for n in core().list_namespace().items}
    assert {"default", "kube-system"} <= namespaces


def test_pod_create_get_list_delete(api: Api) -> None:
    response = api.create_namespaced_pod_with_http_info(NS, pod_body("worker-", "print('hi')"))
    assert status_code(response) == 201
    created = response[0] if isinstance(response, tuple) else response.data
    name = created.metadata.name
    assert name.startswith("worker-") and len(name) == len("worker-") + 5
    assert created.metadata.uid and created.metadata.namespace == NS
    assert created.metadata.resource_version.isdigit()
    assert created.metadata.creation_timestamp is not None
    assert created.spec.termination_grace_period_seconds == 30

    done = wait_phase(api, name, "Succeeded")
    status = done.status.container_statuses[0]
    assert (status.name, status.ready, status.restart_count) == ("main", False, 0)
    assert status.image == "python:3.11-slim" and status.image_id
    assert status.state.terminated.exit_code == 0 and status.state.terminated.reason == "Completed"
    raw = api.api_client.sanitize_for_serialization(done)  # podIPs: pod_i_ps in 31, pod_ips in 37
    assert done.status.pod_ip == "127.0.0.1" and raw["status"]["podIPs"] == [{"ip": "127.0.0.1"}]
    assert done.status.host_ip and done.status.start_time and done.spec.node_name
    conditions = {c.type: (c.status, c.reason) for c in done.status.conditions}
    assert conditions["PodScheduled"][0] == "True"
    assert conditions["Ready"] == ("False", "PodCompleted")
    assert int(done.metadata.resource_version) > int(created.metadata.resource_version)

    assert name in [p.metadata.name for p in api.list_namespaced_pod(NS).items]
    assert name in [p.metadata.name for p in api.list_pod_for_all_namespaces().items]
    deleted = api.delete_namespaced_pod(name, NS)
    assert deleted.metadata.name == name
    with pytest.raises(ApiException) as err:
        api.read_namespaced_pod(name, NS)
    assert err.value.status == 404 and body_of(err.value)["reason"] == "NotFound"


@pytest.mark.parametrize("change, field", [
    (lambda p: p["metadata"].update(name="Bad_Name"), "metadata.name"),
    (lambda p: p["metadata"].update(name="x" * 64), "metadata.name"),
    (lambda p: p["metadata"].update(labels={"app": "not ok!"}), "metadata.labels"),
    (lambda p: p["spec"].pop("restartPolicy"), "spec.restartPolicy"),
    (lambda p: p["spec"]["containers"][0].pop("image"), "spec.containers[0].image"),
])
def test_invalid_pods_are_422(api: Api, change: Callable[[dict[str, Any]], Any],
                              field: str) -> None:
    body = pod_body("fine")
    change(body)
    with pytest.raises(ApiException) as err:
        api.create_namespaced_pod(NS, body)
    status = body_of(err.value)
    assert err.value.status == 422 and status["reason"] == "Invalid"
    assert field in [cause["field"] for cause in status["details"]["causes"]]


def test_error_codes(api: Api, k8s_cluster: Cluster) -> None:
    k8s_cluster.make_unschedulable()
    api.create_namespaced_pod(NS, pod_body("twice"))
    with pytest.raises(ApiException) as err:
        api.create_namespaced_pod(NS, pod_body("twice"))
    assert err.value.status == 409 and body_of(err.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as err:
        api.create_namespaced_pod("nowhere", pod_body("lost"))
    assert err.value.status == 404
    with pytest.raises(ApiException) as err:
        api.delete_namespaced_secret("missing", NS)
    assert err.value.status == 404

    url = f"{k8s_cluster.url}/api/v1/namespaces/default/pods"
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(url)
    assert http.value.code == 401
    auth = {"Authorization": f"Bearer {k8s_cluster.token}"}
    for flag in ("1", "true", "True"):  # 31.x sends True; Go's ParseBool takes all three
        request = urllib.request.Request(f"{url}?watch={flag}", headers=auth)
        with urllib.request.urlopen(request) as response:
            assert json.loads(response.readline())["type"] == "ADDED"
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(urllib.request.Request(f"{url}?watch=yes", headers=auth))
    assert http.value.code == 400


def test_label_and_field_selectors(api: Api, k8s_cluster: Cluster) -> None:
    k8s_cluster.make_unschedulable()
    for name, labels in (("a", {"app": "web", "tier": "fe"}), ("b", {"app": "web", "tier": "be"}),
                         ("c", {"app": "db"}), ("d", {})):
        api.create_namespaced_pod(NS, pod_body(name, labels=labels))

    def names(**selectors: str) -> str:
        return "".join(p.metadata.name for p in api.list_namespaced_pod(NS, **selectors).items)
    cases = {"app=web": "ab", "app==web": "ab", "app!=web": "cd", "app in (web, db)": "abc",
             "app notin (web)": "cd", "tier": "ab", "!tier": "cd", "app=web,tier=fe": "a",
             "app in (web,db),!tier": "c", "": "abcd"}
    for selector, expected in cases.items():
        assert names(label_selector=selector) == expected, selector
    assert names(field_selector="metadata.name=b") == "b"
    assert names(field_selector="metadata.name!=b,metadata.namespace=default") == "acd"
    assert names(field_selector="status.phase=Pending", label_selector="app=web") == "ab"
    assert names(field_selector="status.phase==Running") == ""
    for bad in ({"label_selector": "app in web"}, {"field_selector": "spec.nope=1"}):
        with pytest.raises(ApiException) as err:
            api.list_namespaced_pod(NS, **bad)
        assert err.value.status == 400


def test_watch_sees_lifecycle_and_exit_code(api: Api) -> None:
    since = api.list_namespaced_pod(NS).metadata.resource_version
    api.create_namespaced_pod(NS, pod_body("crash", "import sys; sys.exit(3)"))
    seen = []
    stream = watch.Watch().stream(api.list_namespaced_pod, NS, resource_version=since,
                                  timeout_seconds=10)
    for event in stream:
        pod = event["object"]
        statuses = pod.status.container_statuses or []
        terminated = statuses[0].state.terminated if statuses else None
        seen.append((event["type"], pod.status.phase, terminated and terminated.exit_code))
        if pod.status.phase == "Failed" and event["type"] == "MODIFIED":
            api.delete_namespaced_pod("crash", NS)
        if event["type"] == "DELETED":
            break
    assert seen[0] == ("ADDED", "Pending", None)
    assert ("MODIFIED", "Running", None) in seen
    assert ("MODIFIED", "Failed", 3) in seen
    assert seen[-1] == ("DELETED", "Failed", 3)


def test_watch_resume_synthetic_added_and_timeout(api: Api,
                                                  k8s_cluster: Cluster) -> None:
    k8s_cluster.make_unschedulable()
    api.create_namespaced_pod(NS, pod_body("old"))
    scheduled_condition(api, "old")  # the scheduler's verdict on "old" comes before ``since``
    since = api.list_namespaced_pod(NS).metadata.resource_version
    api.create_namespaced_pod(NS, pod_body("new"))

    def first(count: int, **kwargs: Any) -> list[tuple[str, str]]:
        stream = watch.Watch().stream(api.list_namespaced_pod, NS, timeout_seconds=5, **kwargs)
        return [(e["type"], e["object"].metadata.name) for e in itertools.islice(stream, count)]
    assert first(1, resource_version=since) == [("ADDED", "new")]
    assert first(2) == first(2, resource_version="0") == [("ADDED", "new"), ("ADDED", "old")]
    started = time.monotonic()
    assert list(watch.Watch().stream(api.list_namespaced_pod, NS, resource_version=since,
                                     label_selector="none", timeout_seconds=1)) == []
    assert 0.9 < time.monotonic() - started < 3, "timeoutSeconds must close the stream"


def test_watch_410_and_relist(own_cluster: Callable[..., tuple[Cluster, Api]]) -> None:
    cluster, api = own_cluster(history_size=5)
    first = api.list_namespaced_secret(NS).metadata.resource_version
    for i in range(8):
        api.create_namespaced_secret(NS, {"metadata": {"name": f"s{i}"}})
    with pytest.raises(ApiException) as err:
        list(watch.Watch().stream(api.list_namespaced_secret, NS, resource_version=first,
                                  timeout_seconds=1))
    assert err.value.status == 410

    cluster.expire_next_watch()
    current = api.list_namespaced_secret(NS)
    with pytest.raises(ApiException) as err:
        list(watch.Watch().stream(api.list_namespaced_secret, NS,
                                  resource_version=current.metadata.resource_version,
                                  timeout_seconds=1))
    assert err.value.status == 410
    relisted = api.list_namespaced_secret(NS)  # the re-list path: list, then watch from there
    assert len(relisted.items) == 8
    api.create_namespaced_secret(NS, {"metadata": {"name": "after"}})
    stream = watch.Watch().stream(api.list_namespaced_secret, NS,
                                  resource_version=relisted.metadata.resource_version,
                                  timeout_seconds=1)
    assert [(e["type"], e["object"].metadata.name) for e in stream] == [("ADDED", "after")]


def test_logs_tail_and_follow(api: Api, k8s_cluster: Cluster) -> None:
    script = ("import sys, time\nfor i in range(5): print(f'line{i}')\n"
              "print('oops', file=sys.stderr)")
    api.create_namespaced_pod(NS, pod_body("talker", script))
    wait_phase(api, "talker", "Succeeded")
    log = log_of(api, "talker")
    assert log.splitlines() == [f"line{i}" for i in range(5)] + ["oops"]
    assert log_of(api, "talker", tail_lines=2).splitlines() == ["line4", "oops"]

    api.create_namespaced_pod(NS, pod_body("slow-talker", "import time\nprint('a')\n"
                                                          "time.sleep(0.5)\nprint('b')"))
    wait_phase(api, "slow-talker", "Running")
    started = time.monotonic()
    lines = list(watch.Watch().stream(api.read_namespaced_pod_log, "slow-talker", NS))
    assert lines == ["a", "b"] and time.monotonic() - started > 0.3

    k8s_cluster.make_unschedulable()
    api.create_namespaced_pod(NS, pod_body("silent"))
    with pytest.raises(ApiException) as err:
        log_of(api, "silent")
    assert err.value.status == 400


def _events_until_deleted(api: Api, name: str, since: str) -> list[Any]:
    found = []
    for event in watch.Watch().stream(api.list_namespaced_pod, NS, resource_version=since,
                                      field_selector=f"metadata.name={name}", timeout_seconds=10):
        found.append(event)
        if event["type"] == "DELETED":
            break
    return found


def test_graceful_delete(api: Api, k8s_cluster: Cluster) -> None:
    polite = ("import signal, sys, time\n"
              "def bye(*_):\n    print('got SIGTERM'); time.sleep(0.2); sys.exit(0)\n"
              "signal.signal(signal.SIGTERM, bye)\nprint('ready')\ntime.sleep(60)")
    stubborn = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('ready')\ntime.sleep(60)")
    for name, script in (("polite", polite), ("stubborn", stubborn), ("abrupt", SLEEP)):
        api.create_namespaced_pod(NS, pod_body(name, script))
    wait_for(lambda: all(logged(api, n, "ready") for n in ("polite", "stubborn")))

    started = time.monotonic()
    pod = api.delete_namespaced_pod("polite", NS, grace_period_seconds=10)
    assert pod.metadata.deletion_timestamp and pod.metadata.deletion_grace_period_seconds == 10
    events = _events_until_deleted(api, "polite", pod.metadata.resource_version)
    assert time.monotonic() - started < 5
    final = events[-1]["object"].status.container_statuses[0].state.terminated
    assert (final.exit_code, events[-1]["object"].status.phase) == (0, "Succeeded")

    started = time.monotonic()
    pod = api.delete_namespaced_pod("stubborn", NS,
                                    body=client.V1DeleteOptions(grace_period_seconds=1))
    events = _events_until_deleted(api, "stubborn", pod.metadata.resource_version)
    assert 0.9 < time.monotonic() - started < 5
    final = events[-1]["object"].status.container_statuses[0].state.terminated
    assert (final.exit_code, final.signal, final.reason) == (137, 9, "Error")

    wait_phase(api, "abrupt", "Running")
    pid = k8s_cluster.pod_pids("abrupt")[0]
    api.delete_namespaced_pod("abrupt", NS, grace_period_seconds=0)
    with pytest.raises(ApiException):
        api.read_namespaced_pod("abrupt", NS)
    wait_for(lambda: gone(pid), timeout=3)


def test_owner_reference_garbage_collection(api: Api, k8s_cluster: Cluster) -> None:
    owner = api.create_namespaced_pod(NS, pod_body("owner"))
    ref = {"apiVersion": "v1", "kind": "Pod", "name": "owner", "uid": owner.metadata.uid}
    for name in ("owned-1", "owned-2", "kept"):
        body = pod_body(name)
        body["metadata"]["ownerReferences"] = [ref]
        api.create_namespaced_pod(NS, body)
    api.create_namespaced_secret(NS, {"metadata": {"name": "owned-secret",
                                                   "ownerReferences": [ref]}})
    for name in ("owner", "owned-1", "owned-2", "kept"):
        wait_phase(api, name, "Running")
    pids = k8s_cluster.pod_pids("owned-1") + k8s_cluster.pod_pids("owned-2")

    api.patch_namespaced_pod("kept", NS, {"metadata": {"ownerReferences": [
        {**ref, "$patch": "delete"}]}})
    api.delete_namespaced_pod("owner", NS, grace_period_seconds=0)
    names = wait_for(lambda: [p.metadata.name for p in api.list_namespaced_pod(NS).items]
                     if len(api.list_namespaced_pod(NS).items) == 1 else None)
    assert names == ["kept"]
    assert [s.metadata.name for s in api.list_namespaced_secret(NS).items] == []
    wait_for(lambda: all(gone(pid) for pid in pids), timeout=3)

    orphan = pod_body("orphan")
    orphan["metadata"]["ownerReferences"] = [{**ref, "uid": str(uuid.uuid4())}]
    api.create_namespaced_pod(NS, orphan)
    wait_for(lambda: "orphan" not in [p.metadata.name for p in api.list_namespaced_pod(NS).items])


def test_orphan_propagation_keeps_dependents(api: Api, k8s_cluster: Cluster) -> None:
    k8s_cluster.make_unschedulable()
    owner = api.create_namespaced_pod(NS, pod_body("owner"))
    body = pod_body("dependent")
    body["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": "owner",
                                            "uid": owner.metadata.uid}]
    api.create_namespaced_pod(NS, body)
    api.delete_namespaced_pod("owner", NS, propagation_policy="Orphan")
    time.sleep(0.3)
    assert api.read_namespaced_pod("dependent", NS).metadata.owner_references is None


@pytest.mark.skipif(os.geteuid() != 0, reason="volumes are bind mounts, which need root")
def test_secret_env_and_volume_injection(api: Api, tmp_path: Path) -> None:
    token = base64.b64encode(b"s3cr3t").decode()
    created = api.create_namespaced_secret(NS, {"metadata": {"name": "creds"},
                                                "data": {"token": token},
                                                "stringData": {"user": "fiber"}})
    assert created.data == {"token": token, "user": base64.b64encode(b"fiber").decode()}
    mount = f"/tmp/fiber-test-secret-{uuid.uuid4().hex[:8]}"
    script = f"""
import json, os, sys
try:
    open("{mount}/new", "w")
    writable = True
except OSError:
    writable = False
keys = ("TOKEN", "S_user", "S_token", "POD_NS", "POD_IP", "POD_NAME", "CPUS", "PLAIN")
print(json.dumps({{"env": {{k: os.environ.get(k) for k in keys}}, "argv": sys.argv[1:],
    "file": open("{mount}/token").read(), "writable": writable, "cwd": os.getcwd()}}))
"""
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
           {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
           {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
           {"name": "CPUS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
           {"name": "PLAIN", "value": "user=$(S_user) $$(TOKEN)"}]
    container = {"env": env, "envFrom": [{"secretRef": {"name": "creds"}, "prefix": "S_"}],
                 "args": ["$(TOKEN)"], "workingDir": str(tmp_path),
                 "resources": {"limits": {"cpu": "1500m"}},
                 "volumeMounts": [{"name": "creds", "mountPath": mount}]}
    body = pod_body("injected", script, container=container,
                    volumes=[{"name": "creds", "secret": {"secretName": "creds"}}])
    api.create_namespaced_pod(NS, body)
    wait_phase(api, "injected", "Succeeded", "Failed")
    seen = json.loads(log_of(api, "injected"))
    assert seen["env"] == {"TOKEN": "s3cr3t", "S_user": "fiber", "S_token": "s3cr3t",
                           "POD_NS": "default", "POD_IP": "127.0.0.1", "POD_NAME": "injected",
                           "CPUS": "2", "PLAIN": "user=fiber $(TOKEN)"}
    assert seen["argv"] == ["s3cr3t"] and seen["file"] == "s3cr3t"
    assert seen["writable"] is False and seen["cwd"] == str(tmp_path)


def test_missing_secret_blocks_until_created(api: Api) -> None:
    env = [{"name": "LATE", "valueFrom": {"secretKeyRef": {"name": "later", "key": "k"}}}]
    api.create_namespaced_pod(NS, pod_body("waiter", "import os; print(os.environ['LATE'])",
                                           container={"env": env}))

    def blocked() -> Any:
        statuses = api.read_namespaced_pod("waiter", NS).status.container_statuses
        waiting = statuses[0].state.waiting if statuses else None
        return waiting if waiting and waiting.reason == "CreateContainerConfigError" else None
    assert wait_for(blocked).message == 'secret "later" not found'
    api.create_namespaced_secret(NS, {"metadata": {"name": "later"}, "stringData": {"k": "v"}})
    wait_phase(api, "waiter", "Succeeded")
    assert log_of(api, "waiter") == "v\n"


def test_unschedulable_and_capacity(own_cluster: Callable[..., tuple[Cluster, Any]]) -> None:
    cluster, api = own_cluster(node_capacity={"cpu": "2", "memory": "1Gi"})
    api.create_namespaced_pod(NS, pod_body("huge", container={
        "resources": {"requests": {"cpu": "4"}}}))
    api.create_namespaced_pod(NS, pod_body("gpu", container={
        "resources": {"limits": {"nvidia.com/gpu": "1"}}}))
    for name, lacking in (("huge", "Insufficient cpu"), ("gpu", "Insufficient nvidia.com/gpu")):
        condition = scheduled_condition(api, name)
        assert (condition.status, condition.reason) == ("False", "Unschedulable")
        assert condition.message.startswith("0/1 nodes are available")
        assert lacking in condition.message
        assert api.read_namespaced_pod(name, NS).status.phase == "Pending"

    one_cpu = {"resources": {"requests": {"cpu": "1", "memory": "512Mi"}}}
    api.create_namespaced_pod(NS, pod_body("first", container=one_cpu))
    wait_phase(api, "first", "Running")
    api.create_namespaced_pod(NS, pod_body("second", container={
        "resources": {"requests": {"cpu": "1500m"}}}))
    assert scheduled_condition(api, "second").status == "False"
    api.delete_namespaced_pod("first", NS, grace_period_seconds=0)
    wait_phase(api, "second", "Running")

    cluster.set_node_capacity({"nvidia.com/gpu": "1"})
    wait_phase(api, "gpu", "Running")

    cluster.make_unschedulable()
    api.create_namespaced_pod(NS, pod_body("tainted", "pass"))
    condition = scheduled_condition(api, "tainted")
    assert condition.reason == "Unschedulable" and "were unschedulable" in condition.message
    cluster.clear_faults()
    wait_phase(api, "tainted", "Succeeded")


def test_image_pull_failure_and_slow_start(api: Api, k8s_cluster: Cluster) -> None:
    k8s_cluster.fail_image_pulls()
    api.create_namespaced_pod(NS, pod_body("unpulled", "pass"))

    def waiting_reason() -> Any:
        statuses = api.read_namespaced_pod("unpulled", NS).status.container_statuses or []
        reason = statuses and statuses[0].state.waiting and statuses[0].state.waiting.reason
        return reason if reason == "ImagePullBackOff" else None
    wait_for(waiting_reason)
    assert api.read_namespaced_pod("unpulled", NS).status.phase == "Pending"
    k8s_cluster.clear_faults()
    wait_phase(api, "unpulled", "Succeeded")

    k8s_cluster.slow_starts(0.6)
    started = time.monotonic()
    api.create_namespaced_pod(NS, pod_body("sluggish", "pass"))
    statuses = wait_for(lambda: api.read_namespaced_pod("sluggish", NS).status.container_statuses)
    assert statuses[0].state.waiting.reason == "ContainerCreating"
    wait_phase(api, "sluggish", "Succeeded")
    assert time.monotonic() - started >= 0.6


def test_injected_create_failures(api: Api, k8s_cluster: Cluster) -> None:
    k8s_cluster.make_unschedulable()
    k8s_cluster.fail_pod_creates(2, code=500)
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            api.create_namespaced_pod(NS, pod_body("flaky"))
        assert err.value.status == 500
    api.create_namespaced_pod(NS, pod_body("flaky"))
    k8s_cluster.fail_pod_creates(1, code=403)
    with pytest.raises(ApiException) as err:
        api.create_namespaced_pod(NS, pod_body("denied"))
    assert err.value.status == 403 and body_of(err.value)["reason"] == "Forbidden"
    api.create_namespaced_pod(NS, pod_body("denied"))


def test_patch_replace_and_status(api: Api, k8s_cluster: Cluster) -> None:
    k8s_cluster.make_unschedulable()
    before = api.create_namespaced_pod(NS, pod_body("patched", labels={"a": "1"}))
    after = api.patch_namespaced_pod("patched", NS, {"metadata": {"labels": {"b": "2"}}})
    assert after.metadata.labels == {"a": "1", "b": "2"}
    assert int(after.metadata.resource_version) > int(before.metadata.resource_version)
    after = api.patch_namespaced_pod("patched", NS, [
        {"op": "remove", "path": "/metadata/labels/a"}])
    assert after.metadata.labels == {"b": "2"}
    after = api.patch_namespaced_pod_status("patched", NS, {"status": {"message": "hello"}})
    assert after.status.message == "hello" and after.metadata.labels == {"b": "2"}
    with pytest.raises(ApiException) as err:
        api.patch_namespaced_pod("patched", NS, {"spec": {"restartPolicy": "Always"}})
    assert err.value.status == 422

    secret = api.create_namespaced_secret(NS, {"metadata": {"name": "cas"},
                                               "stringData": {"k": "1"}})
    secret.string_data = {"k": "2"}
    api.replace_namespaced_secret("cas", NS, secret)
    with pytest.raises(ApiException) as err:  # stale resourceVersion
        api.replace_namespaced_secret("cas", NS, secret)
    assert err.value.status == 409 and body_of(err.value)["reason"] == "Conflict"
    assert api.read_namespaced_secret("cas", NS).data["k"] == base64.b64encode(b"2").decode()


def test_namespaces_paging_and_deletecollection(api: Api, k8s_cluster: Cluster) -> None:
    api.create_namespace({"metadata": {"name": "team"}})
    assert api.read_namespace("team").status.phase == "Active"
    for i in range(5):
        api.create_namespaced_secret("team", {"metadata": {"name": f"s{i}",
                                                           "labels": {"odd": str(i % 2)}}})
    page = api.list_namespaced_secret("team", limit=2)
    names = [s.metadata.name for s in page.items]
    while page.metadata._continue:
        page = api.list_namespaced_secret("team", limit=2, _continue=page.metadata._continue)
        names += [s.metadata.name for s in page.items]
    assert names == ["s0", "s1", "s2", "s3", "s4"]
    api.delete_collection_namespaced_secret("team", label_selector="odd=1")
    assert [s.metadata.name for s in api.list_namespaced_secret("team").items] == ["s0", "s2", "s4"]

    api.create_namespaced_pod("team", pod_body("member"))
    wait_for(lambda: k8s_cluster.pod_pids("member", "team"))
    pid = k8s_cluster.pod_pids("member", "team")[0]
    api.delete_namespace("team")
    with pytest.raises(ApiException):
        api.read_namespace("team")
    wait_for(lambda: gone(pid), timeout=3)
    with pytest.raises(ApiException) as err:
        api.delete_namespace("default")
    assert err.value.status == 403


def test_multi_container_pod_and_crash_hook(api: Api, k8s_cluster: Cluster) -> None:
    body = pod_body("pair", "print('one')")
    body["spec"]["containers"].append({"name": "side", "image": "busybox",
                                       "command": [PY, "-c", SLEEP]})
    api.create_namespaced_pod(NS, body)
    wait_for(lambda: len(k8s_cluster.pod_pids("pair")) == 1)  # main done, side running
    assert api.read_namespaced_pod("pair", NS).status.phase == "Running"
    with pytest.raises(ApiException) as err:
        log_of(api, "pair")
    assert err.value.status == 400
    assert log_of(api, "pair", container="main") == "one\n"
    k8s_cluster.kill_pod("pair")  # as an OOM kill would
    pod = wait_phase(api, "pair", "Failed")
    states = {s.name: s.state.terminated for s in pod.status.container_statuses}
    assert (states["main"].exit_code, states["side"].exit_code) == (0, 137)
    assert states["side"].signal == 9


def test_no_orphan_processes_after_stop(tmp_path: Path) -> None:
    daemon = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
              "        print(os.getpid(), flush=True); time.sleep(120)\n    os._exit(0)\n"
              "time.sleep(120)")
    deaf = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(120)"
    leaver = "import subprocess\nsubprocess.Popen(['sleep', '120'])\nprint('left one')"
    with Cluster(tmp_path) as cluster:
        api = core(config.new_client_from_config(str(cluster.kubeconfig)))
        shell = {"command": ["sh", "-c", "sleep 120 & sleep 120"]}
        for name, script, extra in (("daemon", daemon, {}), ("deaf", deaf, {}),
                                    ("shell", "", shell), ("leaver", leaver, {})):
            api.create_namespaced_pod(NS, pod_body(name, script, container=extra))
        wait_phase(api, "leaver", "Succeeded")
        wait_for(lambda: logged(api, "daemon", "\n"))
        leaver_uid = api.read_namespaced_pod("leaver", NS).metadata.uid
        # a container's end kills its rest (SIGKILL is sent at once, death takes a moment)
        wait_for(lambda: not marked_pids(f"{cluster.id}/{leaver_uid}/"), timeout=2)
        # daemon: main + setsid grandchild; deaf: 1; shell: sh + sleep (+ sleep)
        pids = wait_for(lambda: len(marked_pids(f"{cluster.id}/")) >= 5
                        and marked_pids(f"{cluster.id}/"))
        assert int(log_of(api, "daemon")) in pids
        api.api_client.close()
    assert all(gone(pid) for pid in pids)
    assert not marked_pids(f"{cluster.id}/")


def test_standalone_main(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    main = Path(__file__).parent / "cluster" / "__main__.py"
    process = subprocess.Popen([PY, str(main), "--kubeconfig", str(kubeconfig)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        wait_for(kubeconfig.exists)
        api_client = config.new_client_from_config(str(kubeconfig))
        names = [n.metadata.name for n in core(api_client).list_namespace().items]
        assert "default" in names
        api_client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0


_NO_NETNS = netns_unavailable()
netns = pytest.mark.skipif(_NO_NETNS is not None, reason=_NO_NETNS or "")


@netns
def test_netns_pods_get_own_ip_and_hostname(tmp_path: Path) -> None:
    host_seen: list[tuple[str, str]] = []
    with Cluster(tmp_path, runtime="netns") as cluster:
        api_client = config.new_client_from_config(str(cluster.kubeconfig))
        api = core(api_client)
        master = socket.create_server((cluster.host_ip, 0))

        def accept() -> None:
            conn, (address, _) = master.accept()
            with conn:
                host_seen.append((address, conn.recv(100).decode()))
        threading.Thread(target=accept, daemon=True).start()
        server = ("import socket\ns = socket.create_server(('0.0.0.0', 7000))\nprint('listening')\n"
                  "c, _ = s.accept()\nc.sendall(socket.gethostname().encode())")
        api.create_namespaced_pod(NS, pod_body("pod-a", server))
        wait_for(lambda: logged(api, "pod-a", "listening"))
        a_ip = api.read_namespaced_pod("pod-a", NS).status.pod_ip
        client_script = f"""
import socket
with socket.create_connection(("{cluster.host_ip}", {master.getsockname()[1]}), timeout=5) as c:
    c.sendall(socket.gethostname().encode())
with socket.create_connection(("{a_ip}", 7000), timeout=5) as c:
    print(c.recv(100).decode(), socket.gethostbyname(socket.gethostname()))
"""
        api.create_namespaced_secret(NS, {"metadata": {"name": "kubeconfig"},
                                          "stringData": {"config": cluster.pod_kubeconfig()}})
        client_script += ("from kubernetes import client, config\n"
                          "config.load_kube_config('/etc/kube/config')\n"
                          "print(len(client.CoreV1Api().list_namespaced_pod('default').items))")
        api.create_namespaced_pod(NS, pod_body("pod-b", client_script, container={
            "volumeMounts": [{"name": "kube", "mountPath": "/etc/kube"}],
            "env": [{"name": "PYTHONWARNINGS", "value": "ignore"}]},
            volumes=[{"name": "kube", "secret": {"secretName": "kubeconfig"}}]))
        b = wait_phase(api, "pod-b", "Succeeded", "Failed")
        log = log_of(api, "pod-b")
        assert b.status.phase == "Succeeded", log
        assert a_ip != "127.0.0.1" and b.status.pod_ip not in ("127.0.0.1", a_ip)
        assert b.status.host_ip == cluster.host_ip
        assert log.split() == ["pod-a", b.status.pod_ip, "2"]  # 2: pods seen from inside
        assert host_seen == [(b.status.pod_ip, "pod-b")]
        assert socket.gethostname() not in ("pod-a", "pod-b")
        master.close()
        api_client.close()
    leftovers = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert f"fbt{cluster.id}" not in leftovers
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"fbt{cluster.id}" not in namespaces
    assert not os.path.exists(f"/etc/netns/fbt{cluster.id}-0")


@netns
def test_netns_fixture(k8s_netns_cluster: Cluster) -> None:
    config.load_kube_config()
    api = core()
    api.create_namespaced_pod(NS, pod_body("where", "import socket; print(socket.gethostname())"))
    pod = wait_phase(api, "where", "Succeeded")
    assert pod.status.pod_ip.startswith(k8s_netns_cluster.host_ip.rsplit(".", 1)[0])
    assert log_of(api, "where") == "where\n"
    api.create_namespaced_pod(NS, pod_body("on-host", "import socket; print(socket.gethostname())",
                                           hostNetwork=True))
    pod = wait_phase(api, "on-host", "Succeeded")
    assert pod.status.pod_ip == k8s_netns_cluster.host_ip
    assert log_of(api, "on-host") == socket.gethostname() + "\n"
