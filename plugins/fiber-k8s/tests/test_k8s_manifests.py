"""Pod manifests, names, exit codes and waiting reasons: pure functions, no cluster."""

from __future__ import annotations

import re
import signal

import pytest

pytest.importorskip("kubernetes")
from fiber_k8s import manifests
from fiber_k8s.settings import claims
from fiber_k8s.watch import exit_code, pod_exit_code, waiting_reason

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@pytest.mark.parametrize("process", ["Process-1:2:3", "PoolWorker-ab12.7", "_" * 5,
                                     "Ünïcode name", "x" * 200])
def test_pod_names_are_dns_labels(process: str) -> None:
    name = manifests.pod_name(process)
    assert DNS_LABEL.fullmatch(name) and len(name) <= 63
    assert manifests.pod_name(process) != name  # unique per call
    assert re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?",
                        manifests.label_value(process) or "a")


def test_resources_from_meta_hints() -> None:
    assert manifests.resources(None, None, None) == {}
    assert manifests.resources(0.25, 1024, 0) == {
        "requests": {"cpu": "250m", "memory": "1024Mi"},
        "limits": {"cpu": "250m", "memory": "1024Mi"}}
    assert manifests.resources(2, None, 1)["limits"] == {"cpu": "2000m", "nvidia.com/gpu": "1"}


def test_claims_and_their_volumes() -> None:
    parsed = claims("data, models:/models")
    assert parsed == (("data", "/mnt/data"), ("models", "/models"))
    volumes, mounts = manifests.claim_volumes(parsed)
    assert volumes[1] == {"name": "claim-models",
                          "persistentVolumeClaim": {"claimName": "models"}}
    assert mounts[1] == {"name": "claim-models", "mountPath": "/models"}
    with pytest.raises(ValueError):
        claims("data:relative")


def test_inherited_volumes_skip_per_pod_ones() -> None:
    master = {"spec": {"volumes": [
        {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "kube-api-access-x", "projected": {"sources": []}},
        {"name": "unmounted", "persistentVolumeClaim": {"claimName": "other"}}],
        "containers": [{"volumeMounts": [
            {"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"},
            {"name": "kube-api-access-x", "mountPath": manifests.SERVICE_ACCOUNT_MOUNT}]}]}}
    volumes, mounts = manifests.inherited_volumes(master)
    assert [v["name"] for v in volumes] == ["data"]
    assert mounts == [{"name": "data", "mountPath": "/data"}]


@pytest.mark.parametrize("terminated, code", [
    ({"exitCode": 0}, 0), ({"exitCode": 3}, 3), ({"exitCode": 137}, -signal.SIGKILL),
    ({"exitCode": 143}, -signal.SIGTERM), ({"exitCode": 2, "signal": 9}, -9),
    ({"exitCode": 255}, 255)])
def test_exit_codes(terminated: dict, code: int) -> None:
    assert exit_code(terminated) == code


def test_pod_exit_code_and_waiting_reason() -> None:
    running = {"metadata": {"name": "p"}, "status": {"phase": "Running"}}
    assert pod_exit_code(running) is None
    evicted = {"metadata": {"name": "p"}, "status": {"phase": "Failed", "reason": "Evicted"}}
    assert pod_exit_code(evicted) == -signal.SIGKILL
    pending = {"status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/3 nodes are available"}]}}
    assert waiting_reason(pending) == "Unschedulable: 0/3 nodes are available"
    pulling: dict = {"status": {"phase": "Pending", "containerStatuses": [
        {"state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    assert waiting_reason(pulling) == ""  # slow is not stuck
    pulling["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] = "ErrImagePull"
    assert waiting_reason(pulling).startswith("ErrImagePull")


def test_run_secret_holds_the_value_encoded_and_is_owned() -> None:
    owner = {"apiVersion": "v1", "kind": "Pod", "name": "m", "uid": "u"}
    secret = manifests.run_secret("ab12", "ns", "s3cret", owner)
    assert secret["metadata"]["name"] == "fiber-run-ab12"
    assert secret["metadata"]["ownerReferences"] == [owner]
    assert secret["data"] == {"secret": "czNjcmV0"}
