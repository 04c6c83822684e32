"""From a pod spec to what a container process gets: argv, environment, volume files."""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

from .labels import field_value
from .meta import Obj
from .scheduler import quantity

SecretLookup = Callable[[str], Optional[Obj]]  # secret name in the pod's namespace -> secret
_REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_FIELDS = ("metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
           "spec.serviceAccountName", "status.hostIP", "status.podIP")


class ConfigError(Exception):
    """The container cannot start yet; ``reason`` is its waiting reason."""

    def __init__(self, message: str, reason: str = "CreateContainerConfigError"):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: unknown references stay, ``$$`` escapes."""
    def substitute(m: re.Match[str]) -> str:
        return "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0))
    return _REFERENCE.sub(substitute, text)


def argv(container: Obj, env: Mapping[str, str]) -> list[str]:
    words = (container.get("command") or []) + (container.get("args") or [])
    return [expand(str(word), env) for word in words]


def _secret_value(secret: Obj, key: str) -> str | None:
    data = secret.get("data") or {}
    return base64.b64decode(data[key]).decode("utf-8", "replace") if key in data else None


def _field(pod: Obj, path: str) -> str:
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((pod["metadata"].get(m.group(1)) or {}).get(m.group(2), ""))
    if path not in _FIELDS:
        raise ConfigError(f"unsupported fieldRef fieldPath {path!r}")
    return field_value(pod, path)


def _resource(pod: Obj, container: Obj, ref: Obj, capacity: Mapping[str, str]) -> str:
    name = ref.get("containerName") or container["name"]
    target = next(c for c in pod["spec"]["containers"] if c["name"] == name)
    kind, _, resource = ref.get("resource", "").partition(".")
    value = ((target.get("resources") or {}).get(kind) or {}).get(resource)
    if value is None:
        value = capacity.get(resource, "0") if kind == "limits" else "0"
    return str(math.ceil(quantity(value) / quantity(ref.get("divisor") or "1")))


def environment(pod: Obj, container: Obj, secret: SecretLookup,
                capacity: Mapping[str, str], service: Mapping[str, str]) -> dict[str, str]:
    """The container's own variables: ``service`` ones, then envFrom, then env (last wins)."""
    env = dict(service)
    namespace = pod["metadata"]["namespace"]
    for source in container.get("envFrom") or []:
        ref = source.get("secretRef")
        if ref is None:
            raise ConfigError("envFrom: the test cluster has no ConfigMaps")
        found = secret(ref.get("name", ""))
        if found is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'secret "{ref.get("name")}" not found')
        for key in found.get("data") or {}:
            if _ENV_NAME.fullmatch(source.get("prefix", "") + key):
                env[source.get("prefix", "") + key] = _secret_value(found, key) or ""
    for var in container.get("env") or []:
        source = var.get("valueFrom")
        if source is None:
            env[var["name"]] = expand(var.get("value", ""), env)
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            found = secret(ref["name"])
            value = None if found is None else _secret_value(found, ref["key"])
            if value is not None:
                env[var["name"]] = value
            elif not ref.get("optional"):
                raise ConfigError(
                    f'secret "{ref["name"]}" not found' if found is None else
                    f"couldn't find key {ref['key']} in Secret {namespace}/{ref['name']}")
        elif "fieldRef" in source:
            env[var["name"]] = _field(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            env[var["name"]] = _resource(pod, container, source["resourceFieldRef"], capacity)
        else:
            raise ConfigError(f"env {var['name']}: the test cluster has no ConfigMaps")
    return env


def _write_secret(volume: Obj, target: Path, secret: SecretLookup) -> None:
    source = volume["secret"]
    found = secret(source.get("secretName", ""))
    if found is None:
        if source.get("optional"):
            return
        raise ConfigError(f'MountVolume.SetUp failed for volume "{volume["name"]}" : secret '
                          f'"{source.get("secretName")}" not found', reason="ContainerCreating")
    data = found.get("data") or {}
    for item in source.get("items") or [{"key": key, "path": key} for key in data]:
        if item["key"] not in data:
            if source.get("optional"):
                continue
            raise ConfigError(f'MountVolume.SetUp failed for volume "{volume["name"]}" : '
                              f'references non-existent secret key: {item["key"]}',
                              reason="ContainerCreating")
        path = target / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data[item["key"]]))
        path.chmod(item.get("mode", source.get("defaultMode", 0o644)))


def volumes(pod: Obj, root: Path, secret: SecretLookup) -> dict[str, tuple[Path, bool]]:
    """Materialise the pod's volumes under ``root``: name -> (host path, always read-only)."""
    paths: dict[str, tuple[Path, bool]] = {}
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        if "hostPath" in volume:
            path = Path(volume["hostPath"]["path"])
            if volume["hostPath"].get("type") == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            paths[name] = (path, False)
            continue
        target = root / name
        target.mkdir(parents=True, exist_ok=True)
        if "secret" in volume:
            _write_secret(volume, target, secret)
        paths[name] = (target, "secret" in volume)
    return paths


def mounts(container: Obj, paths: Mapping[str, tuple[Path, bool]]) -> list[Mount]:
    """The container's volume mounts, parents before children."""
    found = []
    for mount in container.get("volumeMounts") or []:
        source, always_read_only = paths[mount["name"]]
        read_only = always_read_only or bool(mount.get("readOnly"))
        found.append(Mount(source, mount["mountPath"], read_only))
    return sorted(found, key=lambda m: m.target.count("/"))
