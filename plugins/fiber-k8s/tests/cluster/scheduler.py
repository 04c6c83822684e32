"""Resource quantities and the one-node fit check that keeps too-large pods Pending."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Iterable, Mapping

from .meta import Obj, bad_request

NODE_NAME = "fiber-test-node"
DEFAULT_CAPACITY = {"cpu": "64", "memory": "256Gi", "pods": "110", "ephemeral-storage": "100Gi"}
_SUFFIXES = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}


def quantity(value: str | int | float) -> Decimal:
    """Parse a Kubernetes quantity: ``500m``, ``2``, ``1.5Gi``, ``1e3``."""
    m = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)", str(value).strip())
    if not m or m.group(2) not in _SUFFIXES:
        raise bad_request(f"quantities must match the regular expression "
                          f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {value!r}")
    try:
        return Decimal(m.group(1)) * _SUFFIXES[m.group(2)]
    except InvalidOperation:
        raise bad_request(f"invalid quantity {value!r}") from None


def container_requests(container: Obj) -> dict[str, Decimal]:
    """Requests, with limits standing in where only a limit is set (as the apiserver defaults)."""
    resources = container.get("resources") or {}
    merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return {name: quantity(value) for name, value in merged.items()}


def pod_requests(pod: Obj) -> dict[str, Decimal]:
    total: dict[str, Decimal] = {"pods": Decimal(1)}
    for container in pod.get("spec", {}).get("containers") or []:
        for name, amount in container_requests(container).items():
            total[name] = total.get(name, Decimal(0)) + amount
    return total


def insufficient(pod: Obj, running: Iterable[Obj], capacity: Mapping[str, str]) -> list[str]:
    """The resources the node lacks for ``pod`` beside the ``running`` pods, sorted."""
    used: dict[str, Decimal] = {}
    for other in running:
        for name, amount in pod_requests(other).items():
            used[name] = used.get(name, Decimal(0)) + amount
    return sorted(name for name, amount in pod_requests(pod).items()
                  if amount > 0 and used.get(name, Decimal(0)) + amount
                  > quantity(capacity.get(name, "0")))


def unschedulable_message(resources: list[str]) -> str:
    reasons = ", ".join(f"1 Insufficient {name}" for name in resources)
    return (f"0/1 nodes are available: {reasons}. preemption: 0/1 nodes are available: "
            f"1 No preemption victims found for incoming pod.")


def qos_class(pod: Obj) -> str:
    containers = pod.get("spec", {}).get("containers") or []
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        all(name in (r.get("limits") or {}) for name in ("cpu", "memory"))
        and all(quantity(v) == quantity((r.get("limits") or {}).get(k, v))
                for k, v in (r.get("requests") or {}).items())
        for r in resources)
    return "Guaranteed" if guaranteed else "Burstable"
