"""``@meta``: resource hints on a process target, passed to the backend."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, TypeVar

from fiber_core.config import size

F = TypeVar("F", bound=Callable[..., Any])

HINTS: Dict[str, Callable[[Any], Any]] = {"cpu": float, "memory": size, "gpu": int}
"""The hints and how each is parsed: cores, MiB (or a size like "4G"), GPUs."""
ATTRIBUTE = "__fiber_meta__"


def meta(**hints: Any) -> Callable[[F], F]:
    """Record resource hints on a function: ``@meta(cpu=2, memory="4G", gpu=1)``.

    The backend sizes the job of a process (or a Pool's workers) that runs the
    function accordingly."""
    unknown = sorted(set(hints) - set(HINTS))
    if unknown:
        raise TypeError(f"unknown resource hint(s) {', '.join(unknown)} for @meta; "
                        f"valid hints: {', '.join(HINTS)}")
    parsed = {}
    for name, value in hints.items():
        try:
            parsed[name] = HINTS[name](value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"bad value for @meta hint {name!r}: {error}") from None
        if parsed[name] < 0:
            raise ValueError(f"@meta hint {name!r} must not be negative, got {value!r}")

    def decorate(function: F) -> F:
        setattr(function, ATTRIBUTE, {**get_meta(function), **parsed})
        return function

    return decorate


def get_meta(function: Optional[Callable[..., Any]]) -> Dict[str, Any]:
    """The hints recorded on ``function`` ({} when none)."""
    return dict(getattr(function, ATTRIBUTE, None) or {})
