"""Pod and Secret manifests (plain dicts), built from a JobSpec or the ``fiber run`` options.

Pure functions: no API calls, so the tests can check every field.
"""

from __future__ import annotations

import base64
import re
import secrets
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from fiber_k8s.environment import POD_IP_ENV, POD_NAME_ENV, POD_NAMESPACE_ENV
from fiber_k8s.settings import Claim

Obj = Dict[str, Any]
NAME_MAX = 63
"""A pod's name becomes its hostname: a DNS-1123 label."""
LABEL_PREFIX = "fiber-core.io/"
RUN_LABEL = LABEL_PREFIX + "run"
PROCESS_LABEL = LABEL_PREFIX + "process"
SPAWNER_LABEL = LABEL_PREFIX + "spawner"
ROLE_LABEL = LABEL_PREFIX + "role"
SECRET_KEY = "secret"
CONTAINER = "fiber"
GPU_RESOURCE = "nvidia.com/gpu"
SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
PER_POD_VOLUMES = ("emptyDir", "ephemeral", "downwardAPI")
"""Volume types that belong to one pod: never handed on to workers."""
DOWNWARD_ENV = ((POD_NAME_ENV, "metadata.name"), (POD_NAMESPACE_ENV, "metadata.namespace"),
                (POD_IP_ENV, "status.podIP"))


def dns_label(text: str, limit: int = NAME_MAX) -> str:
    """``text`` made a lowercase DNS-1123 label of at most ``limit`` characters."""
    label = re.sub(r"[^a-z0-9]+", "-", text.lower())[:limit].strip("-")
    return label or "fiber"


def pod_name(process_name: str) -> str:
    """A unique pod name from a process name: ``process-1-2-3f9a0c``."""
    suffix = secrets.token_hex(3)
    return f"{dns_label(process_name, NAME_MAX - len(suffix) - 1)}-{suffix}"


def label_value(text: str) -> str:
    """``text`` made a valid label value (63 characters, alphanumeric at both ends)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63].strip("-_.")


def secret_name(run_id: str) -> str:
    return f"fiber-run-{dns_label(run_id, NAME_MAX - 10)}"


def resources(cpu: Optional[float], memory: Optional[int], gpu: Optional[int]) -> Obj:
    """Requests equal to limits from ``@meta`` hints: cores, MiB, GPUs (0 or None: unset)."""
    amounts: Dict[str, str] = {}
    if cpu:
        amounts["cpu"] = f"{round(cpu * 1000)}m"
    if memory:
        amounts["memory"] = f"{memory}Mi"
    if gpu:
        amounts[GPU_RESOURCE] = str(gpu)
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def claim_volumes(claims: Iterable[Claim]) -> Tuple[List[Obj], List[Obj]]:
    """Volumes and mounts for persistent volume claims."""
    volumes, mounts = [], []
    for claim, path in claims:
        name = dns_label(f"claim-{claim}")
        volumes.append({"name": name, "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": name, "mountPath": path})
    return volumes, mounts


def inherited_volumes(pod: Obj) -> Tuple[List[Obj], List[Obj]]:
    """The master pod's shareable volumes and its first container's mounts of them:
    claims, host paths, secrets, config maps..., but no per-pod scratch space and no
    service-account token (Kubernetes mounts the workers' own)."""
    container = pod["spec"]["containers"][0]
    mounts = [m for m in container.get("volumeMounts") or []
              if not m.get("mountPath", "").startswith(SERVICE_ACCOUNT_MOUNT)]
    used = {m["name"] for m in mounts}
    volumes = [v for v in pod["spec"].get("volumes") or []
               if v["name"] in used and not any(kind in v for kind in PER_POD_VOLUMES)]
    kept = {v["name"] for v in volumes}
    return volumes, [m for m in mounts if m["name"] in kept]


def owner_reference(pod: Obj) -> Obj:
    """An ownerReference to ``pod``: its dependents are deleted when it is."""
    return {"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"],
            "uid": pod["metadata"]["uid"]}


def pod(name: str, namespace: str, image: str, command: Sequence[str], *,
        labels: Mapping[str, str], env: Optional[Mapping[str, str]] = None,
        env_from: Sequence[Obj] = (), resources: Optional[Obj] = None,
        volumes: Sequence[Obj] = (), mounts: Sequence[Obj] = (),
        owner: Optional[Obj] = None, service_account: Optional[str] = None,
        pull_secrets: Sequence[Obj] = (), working_dir: Optional[str] = None) -> Obj:
    """A one-container pod that runs ``command`` once (restartPolicy Never) and knows
    its own name, namespace and IP through the downward API."""
    variables: List[Obj] = [{"name": key, "value": value}
                            for key, value in (env or {}).items()]
    variables += list(env_from)
    variables += [{"name": key, "valueFrom": {"fieldRef": {"fieldPath": path}}}
                  for key, path in DOWNWARD_ENV]
    container: Obj = {"name": CONTAINER, "image": image, "command": list(command),
                      "env": variables}
    if resources:
        container["resources"] = resources
    if mounts:
        container["volumeMounts"] = list(mounts)
    if working_dir:
        container["workingDir"] = working_dir
    spec: Obj = {"restartPolicy": "Never", "containers": [container]}
    if volumes:
        spec["volumes"] = list(volumes)
    if service_account:
        spec["serviceAccountName"] = service_account
    if pull_secrets:
        spec["imagePullSecrets"] = list(pull_secrets)
    metadata: Obj = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if owner:
        metadata["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def secret_env(name: str, key: str, secret: str) -> Obj:
    """An env entry taking its value from a Secret (never the value itself)."""
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def run_secret(run_id: str, namespace: str, value: str, owner: Optional[Obj]) -> Obj:
    """The Secret holding a run's secret; owned by the master pod when there is one."""
    metadata: Obj = {"name": secret_name(run_id), "namespace": namespace,
                     "labels": {RUN_LABEL: label_value(run_id)}}
    if owner:
        metadata["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": metadata,
            "data": {SECRET_KEY: base64.b64encode(value.encode()).decode()}}


def inherited_env(pod: Obj, skip: Iterable[str]) -> List[Obj]:
    """The master container's env entries, except ``skip`` and the downward-API ones."""
    skipped = {*skip, *(key for key, _ in DOWNWARD_ENV)}
    container = pod["spec"]["containers"][0]
    return [dict(var) for var in container.get("env") or [] if var["name"] not in skipped]


def labels(run_id: str, process: str, spawner: str) -> Dict[str, str]:
    return {RUN_LABEL: label_value(run_id), PROCESS_LABEL: label_value(process),
            SPAWNER_LABEL: label_value(spawner), "app.kubernetes.io/managed-by": "fiber"}


def selector(values: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in values.items())

