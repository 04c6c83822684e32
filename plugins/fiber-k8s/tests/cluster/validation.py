"""Field validation worded as the apiserver words it; each check returns a list of causes.

Pod names are held to 63 characters (a DNS-1123 label's length), stricter than the
apiserver's 253, because a pod's name becomes its hostname and a backend that makes
longer names would lose the tail of them there.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from .meta import ApiError, Obj
from .scheduler import quantity

Causes = list[Obj]

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = rf"{_LABEL}(\.{_LABEL})*"
_QUALIFIED = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_ENV_NAME = r"[-._a-zA-Z][-._a-zA-Z0-9]*"
_SECRET_KEY = r"[-._a-zA-Z0-9]+"
POD_NAME_MAX = 63
SUPPORTED_VOLUMES = ("secret", "emptyDir", "hostPath")


def cause(field: str, reason: str, message: str) -> Obj:
    return {"field": field, "reason": reason, "message": message}


def _bad(field: str, value: Any, why: str) -> Obj:
    return cause(field, "FieldValueInvalid", f'Invalid value: "{value}": {why}')


def _required(field: str, what: str = "") -> Obj:
    return cause(field, "FieldValueRequired", "Required value" + (f": {what}" if what else ""))


def _unsupported(field: str, why: str) -> Obj:
    return cause(field, "FieldValueNotSupported", f"Unsupported value: {why}")


def dns_name(field: str, value: str, max_length: int, subdomain: bool = True) -> Causes:
    """RFC 1123 subdomain (or label) syntax and length."""
    causes = []
    if len(value) > max_length:
        causes.append(_bad(field, value, f"must be no more than {max_length} characters"))
    pattern = _SUBDOMAIN if subdomain else _LABEL
    if not re.fullmatch(pattern, value):
        kind = "subdomain" if subdomain else "label"
        extra = "'-' or '.'" if subdomain else "'-'"
        causes.append(_bad(field, value, (
            f"a lowercase RFC 1123 {kind} must consist of lower case alphanumeric characters, "
            f"{extra}, and must start and end with an alphanumeric character "
            f"(regex used for validation is '{pattern}')")))
    return causes


def labels(field: str, values: Any) -> Causes:
    """Label keys (optional DNS prefix + qualified name) and values."""
    if values is None:
        return []
    if not isinstance(values, dict):
        return [_bad(field, values, "must be a map of strings")]
    causes: Causes = []
    for key, value in values.items():
        prefix, _, name = key.rpartition("/")
        if prefix:
            causes += dns_name(field, prefix, 253)
        if len(name) > 63 or not re.fullmatch(_QUALIFIED, name):
            causes.append(_bad(field, key, "name part must consist of alphanumeric characters, "
                                           "'-', '_' or '.', and must start and end with an "
                                           "alphanumeric character, at most 63 characters"))
        valid = isinstance(value, str) and len(value) <= 63
        if not valid or not re.fullmatch(f"({_QUALIFIED})?", value):
            causes.append(_bad(field, value,
                               "a valid label must be an empty string or consist of alphanumeric "
                               "characters, '-', '_' or '.', and must start and end with an "
                               "alphanumeric character, at most 63 characters"))
    return causes


def object_meta(obj: Obj, name_max: int, subdomain: bool = True) -> Causes:
    """Name, labels and ownerReferences of any object."""
    metadata = obj.get("metadata") or {}
    causes = dns_name("metadata.name", metadata.get("name", ""), name_max, subdomain)
    causes += labels("metadata.labels", metadata.get("labels"))
    for i, ref in enumerate(metadata.get("ownerReferences") or []):
        for key in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(key):
                causes.append(_required(f"metadata.ownerReferences[{i}].{key}"))
    return causes


def _resources(path: str, resources: Obj) -> Causes:
    """Quantities parse, and no request exceeds its limit."""
    causes: Causes = []
    parsed: dict[str, dict[str, Any]] = {}
    for kind in ("requests", "limits"):
        for name, value in (resources.get(kind) or {}).items():
            try:
                parsed.setdefault(kind, {})[name] = quantity(value)
            except ApiError:
                causes.append(_bad(f"{path}.resources.{kind}[{name}]", value,
                                   "must be a valid quantity"))
    for name, request in parsed.get("requests", {}).items():
        limit = parsed.get("limits", {}).get(name)
        if limit is not None and request > limit:
            causes.append(_bad(f"{path}.resources.requests[{name}]", resources["requests"][name],
                               f"must be less than or equal to {name} limit of "
                               f"{resources['limits'][name]}"))
    return causes


def _env(path: str, env: list[Obj]) -> Causes:
    causes: Causes = []
    for j, var in enumerate(env):
        where = f"{path}.env[{j}]"
        if not re.fullmatch(_ENV_NAME, var.get("name") or ""):
            causes.append(_bad(f"{where}.name", var.get("name", ""),
                               "a valid environment variable name must consist of alphabetic "
                               "characters, digits, '_', '-', or '.'"))
        source = var.get("valueFrom")
        if source is None:
            continue
        if var.get("value"):
            causes.append(cause(f"{where}.valueFrom", "FieldValueInvalid", "Invalid value: \"\": "
                                "may not be specified when `value` is not empty"))
        if len(source) != 1:
            causes.append(cause(f"{where}.valueFrom", "FieldValueInvalid",
                                "Invalid value: \"\": must specify exactly one of: `fieldRef`, "
                                "`resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"))
        ref = source.get("secretKeyRef")
        if ref is not None and not (ref.get("key") and ref.get("name")):
            causes.append(_required(f"{where}.valueFrom.secretKeyRef.key"))
        if "fieldRef" in source and not source["fieldRef"].get("fieldPath"):
            causes.append(_required(f"{where}.valueFrom.fieldRef.fieldPath"))
    return causes


def pod(obj: Obj) -> Causes:
    """Pod spec checks, plus what the test cluster refuses to pretend it supports."""
    spec = obj.get("spec") or {}
    causes = object_meta(obj, POD_NAME_MAX)
    containers = spec.get("containers") or []
    if not containers:
        causes.append(_required("spec.containers"))
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    for i, volume in enumerate(spec.get("volumes") or []):
        kinds = [k for k in volume if k != "name"]
        if not kinds or kinds[0] not in SUPPORTED_VOLUMES:
            causes.append(_unsupported(f"spec.volumes[{i}]", f"{kinds}: the test cluster "
                                       f"supports only {', '.join(SUPPORTED_VOLUMES)} volumes"))
    names = set()
    for i, container in enumerate(containers):
        path = f"spec.containers[{i}]"
        name = container.get("name") or ""
        if not name:
            causes.append(_required(f"{path}.name"))
        causes += dns_name(f"{path}.name", name, 63, subdomain=False) if name else []
        if name in names:
            causes.append(cause(f"{path}.name", "FieldValueDuplicate",
                                f'Duplicate value: "{name}"'))
        names.add(name)
        if not container.get("image"):
            causes.append(_required(f"{path}.image"))
        causes += _env(path, container.get("env") or [])
        causes += _resources(path, container.get("resources") or {})
        for j, mount in enumerate(container.get("volumeMounts") or []):
            if mount.get("name") not in volumes:
                causes.append(cause(f"{path}.volumeMounts[{j}].name", "FieldValueNotFound",
                                    f'Not found: "{mount.get("name")}"'))
            if not str(mount.get("mountPath", "")).startswith("/"):
                causes.append(_required(f"{path}.volumeMounts[{j}].mountPath", "an absolute path"))
            if mount.get("subPath"):
                causes.append(_unsupported(f"{path}.volumeMounts[{j}].subPath",
                                           "the test cluster does not support subPath"))
    if spec.get("restartPolicy") != "Never":
        causes.append(_unsupported("spec.restartPolicy", f'"{spec.get("restartPolicy")}": '
                                   'supported values: "Never" (the test cluster never restarts '
                                   "containers; set spec.restartPolicy: Never)"))
    for field in ("initContainers", "ephemeralContainers"):
        if spec.get(field):
            causes.append(_unsupported(f"spec.{field}", "not supported by the test cluster"))
    return causes


def secret(obj: Obj) -> Causes:
    causes = object_meta(obj, 253)
    for key, value in (obj.get("data") or {}).items():
        if not re.fullmatch(_SECRET_KEY, key):
            causes.append(_bad(f"data[{key}]", key, "a valid config key must consist of "
                               "alphanumeric characters, '-', '_' or '.'"))
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError):
            causes.append(_bad(f"data[{key}]", "<value>", "illegal base64 data"))
    return causes
