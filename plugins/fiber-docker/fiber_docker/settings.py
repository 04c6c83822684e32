"""The configuration keys of the docker backend and their parsers."""

from __future__ import annotations

from typing import Any, Tuple

from fiber_core.config import boolean
from fiber_core.hookspecs import ConfigKey

Mount = Tuple[str, str, bool]
"""(source: a host path or a volume name, target path in the container, read-only)."""

PULL_POLICIES = ("missing", "always", "never")


def mounts(value: Any) -> Tuple[Mount, ...]:
    """Parse ``SOURCE:TARGET[:ro|:rw]`` items, comma-separated in a string or as a list."""
    items = value.split(",") if isinstance(value, str) else list(value)
    parsed = []
    for item in items:
        if isinstance(item, (tuple, list)):
            source, target, read_only = item
            parsed.append((str(source), str(target), bool(read_only)))
            continue
        parts = str(item).strip().split(":")
        if parts == [""]:
            continue
        mode = parts.pop() if len(parts) == 3 else "rw"
        if len(parts) != 2 or not all(parts) or mode not in ("ro", "rw"):
            raise ValueError(f"expected SOURCE:TARGET or SOURCE:TARGET:ro, got {item!r}")
        if not parts[1].startswith("/"):
            raise ValueError(f"the mount target must be an absolute path, got {item!r}")
        parsed.append((parts[0], parts[1], mode == "ro"))
    return tuple(parsed)


def pull_policy(value: Any) -> str:
    """Parse when to pull the image: missing, always or never."""
    policy = str(value).strip().lower()
    if policy not in PULL_POLICIES:
        raise ValueError(f"expected one of {', '.join(PULL_POLICIES)}, got {value!r}")
    return policy


CONFIG_KEYS = (
    ConfigKey("image", str, None,
              "container image the processes run in (required by the docker backend)"),
    ConfigKey("docker_network", str, "host",
              "network mode of the containers: host, or the name of a Docker network"),
    ConfigKey("docker_mounts", mounts, (),
              "extra mounts, comma-separated SOURCE:TARGET[:ro] (host path or volume name)"),
    ConfigKey("docker_mount_cwd", boolean, True,
              "mount the working directory at the same path and start there"),
    ConfigKey("docker_pull", pull_policy, "missing",
              "when to pull the image: missing, always (once per process) or never"),
    ConfigKey("docker_python", str, "python3",
              "the Python interpreter inside the image (same minor version as the master's)"),
    ConfigKey("docker_nested", boolean, True,
              "give containers the engine's socket so their processes can start processes "
              "(note: that grants control of the engine)"),
)
