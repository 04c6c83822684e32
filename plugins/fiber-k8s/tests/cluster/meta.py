"""API errors as Kubernetes Status objects, timestamps and object metadata helpers."""

from __future__ import annotations

import logging
import random
import uuid
from datetime import datetime, timezone
from typing import Any

LOG = logging.getLogger("fiber.testcluster")

# The alphabet of the apiserver's 5-character generateName suffixes.
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

Obj = dict[str, Any]


class ApiError(Exception):
    """An error the server answers with a ``Status`` object and the same HTTP code."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        """The Status body for this error."""
        body: Obj = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def not_found(resource: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{resource} "{name}" not found',
                    {"name": name, "kind": resource})


def already_exists(resource: str, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists',
                    {"name": name, "kind": resource})


def conflict(resource: str, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}": {why}',
                    {"name": name, "kind": resource})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def invalid(kind: str, name: str, causes: list[Obj]) -> ApiError:
    """422 Invalid listing every cause, worded as the apiserver words it."""
    texts = [f"{c['field']}: {c['message']}" for c in causes]
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {summary}',
                    {"name": name, "kind": kind, "causes": causes})


def now() -> str:
    """The current time in RFC 3339 with second precision, as Kubernetes writes it."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_uid() -> str:
    return str(uuid.uuid4())


def generated_name(prefix: str, max_length: int) -> str:
    """``generateName`` plus a random 5-character suffix, the prefix cut to fit."""
    suffix = "".join(random.choices(_SUFFIX_ALPHABET, k=5))
    return prefix[: max_length - len(suffix)] + suffix


def meta(obj: Obj) -> Obj:
    """The object's metadata, created if absent."""
    metadata: Obj = obj.setdefault("metadata", {})
    return metadata


def owner_uids(obj: Obj) -> set[str]:
    return {ref.get("uid", "") for ref in meta(obj).get("ownerReferences") or []}
