"""The configuration keys of the kubernetes backend and their parsers."""

from __future__ import annotations

from typing import Any, Tuple

from fiber_core.hookspecs import ConfigKey

Claim = Tuple[str, str]
"""(persistent volume claim name, mount path in the pod)."""

CLAIM_MOUNT_ROOT = "/mnt"


def claim(text: str) -> Claim:
    """Parse ``CLAIM[:PATH]``; the path defaults to /mnt/CLAIM."""
    name, _, path = text.strip().partition(":")
    if not name:
        raise ValueError(f"expected CLAIM or CLAIM:/mount/path, got {text!r}")
    path = path or f"{CLAIM_MOUNT_ROOT}/{name}"
    if not path.startswith("/"):
        raise ValueError(f"the mount path must be absolute, got {text!r}")
    return name, path


def claims(value: Any) -> Tuple[Claim, ...]:
    """Parse ``CLAIM[:PATH]`` items, comma-separated in a string or as a list."""
    items = value.split(",") if isinstance(value, str) else list(value)
    parsed = []
    for item in items:
        if isinstance(item, (tuple, list)):
            parsed.append(claim(":".join(item)))
        elif str(item).strip():
            parsed.append(claim(str(item)))
    return tuple(parsed)


def seconds(value: Any) -> float:
    """Parse a non-negative number of seconds."""
    number = float(value)
    if number < 0:
        raise ValueError(f"expected a non-negative number of seconds, got {value!r}")
    return number


CONFIG_KEYS = (
    ConfigKey("image", str, None,
              "container image the processes run in (kubernetes: default the master pod's)"),
    ConfigKey("k8s_namespace", str, None,
              "namespace of the worker pods (default: the master pod's, else the "
              "kubeconfig context's, else 'default')"),
    ConfigKey("k8s_python", str, "python3",
              "the Python interpreter inside the image (same minor version as the master's)"),
    ConfigKey("k8s_master_address", str, None,
              "address worker pods reach this process at when it is not in a pod (default: "
              "this host's address on the route to the API server)"),
    ConfigKey("k8s_pod_name", str, None,
              "this process's own pod when the downward API does not set POD_NAME"),
    ConfigKey("k8s_pending_timeout", seconds, 120.0,
              "seconds a pod may be unschedulable or fail to pull its image before its "
              "process fails with the scheduler's reason"),
    ConfigKey("k8s_grace_period", int, 30,
              "seconds terminate() gives a pod between SIGTERM and SIGKILL"),
    ConfigKey("k8s_volumes", claims, (),
              "persistent volume claims for worker pods, comma-separated CLAIM[:PATH] "
              "(default: the master pod's volumes)"),
    ConfigKey("k8s_service_account", str, None,
              "service account of the pods (default: the master pod's)"),
)
