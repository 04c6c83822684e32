"""PATCH bodies: JSON merge patch, strategic merge patch (lists merged by key), JSON patch."""

from __future__ import annotations

import copy
from typing import Any

from .meta import ApiError, Obj, bad_request

# The patchMergeKey of the list fields the test cluster's objects have.
MERGE_KEYS = {
    "containers": "name", "env": "name", "volumes": "name", "volumeMounts": "mountPath",
    "ports": "containerPort", "conditions": "type", "containerStatuses": "name",
    "ownerReferences": "uid", "imagePullSecrets": "name", "podIPs": "ip", "hostIPs": "ip",
}


def merge(target: Any, patch: Any, strategic: bool) -> Any:
    """RFC 7386 merge; with ``strategic`` lists of keyed items merge item by item."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if strategic and patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif strategic and key in MERGE_KEYS and isinstance(value, list):
            result[key] = _merge_list(result.get(key) or [], value, MERGE_KEYS[key])
        else:
            result[key] = merge(result.get(key), value, strategic)
    return result


def _merge_list(current: list[Obj], patch: list[Obj], key: str) -> list[Obj]:
    merged = [copy.deepcopy(item) for item in current]
    for item in patch:
        index = next((i for i, old in enumerate(merged) if old.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(merge({}, item, True))
        else:
            merged[index] = merge(merged[index], item, True)
    return merged


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer: {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _parent(doc: Any, parts: list[str]) -> Any:
    for part in parts[:-1]:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _parent(doc, parts)
    return parent[int(parts[-1])] if isinstance(parent, list) else parent[parts[-1]]


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    parent = _parent(doc, parts)
    return parent.pop(int(parts[-1]) if isinstance(parent, list) else parts[-1])


def _add(doc: Any, path: str, value: Any, replace: bool) -> None:
    parts = _pointer(path)
    parent = _parent(doc, parts)
    if isinstance(parent, list):
        index = len(parent) if parts[-1] == "-" else int(parts[-1])
        if replace:
            parent[index] = value
        else:
            parent.insert(index, value)
    else:
        if replace and parts[-1] not in parent:
            raise KeyError(parts[-1])
        parent[parts[-1]] = value


def json_patch(doc: Obj, operations: list[Obj]) -> Obj:
    """RFC 6902 add, remove, replace, move, copy and test."""
    doc = copy.deepcopy(doc)
    for op in operations:
        name, path = op.get("op"), op.get("path", "")
        try:
            if name == "test":
                if _get(doc, path) != op.get("value"):
                    raise ApiError(422, "Invalid", "the server rejected our request due to an "
                                   f"error in our request: testing value {path} failed")
            elif name == "remove":
                _remove(doc, path)
            elif name in ("add", "replace"):
                _add(doc, path, copy.deepcopy(op.get("value")), replace=name == "replace")
            elif name in ("move", "copy"):
                value = _get(doc, op["from"]) if name == "copy" else _remove(doc, op["from"])
                _add(doc, path, copy.deepcopy(value), replace=False)
            else:
                raise bad_request(f"Unexpected kind: {name}")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, "Invalid", f"the server rejected our request due to an error in "
                           f"our request: {name} {path}: {exc!r}") from None
    return doc


def apply(doc: Obj, content_type: str, body: Any) -> Obj:
    """The patched copy of ``doc`` for a PATCH request's content type."""
    kind = content_type.split(";")[0].strip()
    if kind == "application/json-patch+json":
        if not isinstance(body, list):
            raise bad_request("json patch must be a list of operations")
        return json_patch(doc, body)
    if kind in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        if not isinstance(body, dict):
            raise bad_request("merge patch must be a JSON object")
        merged: Obj = merge(doc, body, strategic=kind.startswith("application/strategic"))
        return merged
    raise ApiError(415, "UnsupportedMediaType",
                   f"the body of the request was in an unknown format - accepted media types "
                   f"include: application/json-patch+json, application/merge-patch+json, "
                   f"application/strategic-merge-patch+json (got {kind!r})")
