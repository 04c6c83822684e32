"""Label and field selectors, parsed with the grammar of k8s.io/apimachinery."""

from __future__ import annotations

import re
from typing import Any, Callable

from .meta import Obj, bad_request

Predicate = Callable[[Obj], bool]

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VALUE = r"[-A-Za-z0-9_.]*"
_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s*\(([^()]*)\)$")
_CMP = re.compile(rf"^({_KEY})\s*(==|=|!=|>|<)\s*({_VALUE})$")
_EXISTS = re.compile(rf"^(!?)\s*({_KEY})$")

# Fields each resource may be selected by, as dotted paths into the object.
FIELDS = {
    "pods": {"metadata.name", "metadata.namespace", "status.phase", "status.podIP",
             "spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
             "spec.serviceAccountName"},
    "secrets": {"metadata.name", "metadata.namespace", "type"},
    "namespaces": {"metadata.name", "status.phase"},
    "nodes": {"metadata.name", "spec.unschedulable"},
}


def _split(selector: str) -> list[str]:
    """Split on the commas that are not inside a parenthesised value set."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(selector):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(selector[start:i])
            start = i + 1
    parts.append(selector[start:])
    return [p.strip() for p in parts if p.strip()]


def _requirement(text: str) -> Predicate:
    if m := _SET.match(text):
        key, op = m.group(1), m.group(2)
        values = {v.strip() for v in m.group(3).split(",")}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m := _CMP.match(text):
        key, op, value = m.groups()
        if op in ("=", "=="):
            return lambda labels: labels.get(key) == value
        if op == "!=":
            return lambda labels: labels.get(key) != value
        try:
            bound = int(value)
        except ValueError:
            raise bad_request("unable to parse requirement: for 'gt', 'lt' operators, "
                              "exactly one value is required and must be an integer") from None
        sign = 1 if op == ">" else -1
        return lambda labels: (labels.get(key, "").lstrip("-").isdigit()
                               and sign * (int(labels[key]) - bound) > 0)
    if m := _EXISTS.match(text):
        negate, key = m.group(1) == "!", m.group(2)
        return lambda labels: (key in labels) != negate
    raise bad_request(f"unable to parse requirement: found '{text}', expected: label selector")


def label_selector(selector: str | None) -> Predicate:
    """A predicate for ``labelSelector``: =, ==, !=, in, notin, exists, !exists, >, <."""
    requirements = [_requirement(part) for part in _split(selector or "")]

    def match(obj: Obj) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(req(labels) for req in requirements)
    return match


def field_value(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


def field_selector(resource: str, selector: str | None) -> Predicate:
    """A predicate for ``fieldSelector`` (=, ==, !=) over the fields ``resource`` supports."""
    terms: list[tuple[str, bool, str]] = []
    for part in _split(selector or ""):
        m = re.match(r"^([^=!]+?)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{part}'")
        path, op, value = m.groups()
        if path not in FIELDS.get(resource, set()):
            raise bad_request(f'field label not supported: {path}')
        terms.append((path, op != "!=", value))
    return lambda obj: all((field_value(obj, p) == v) == eq for p, eq, v in terms)
