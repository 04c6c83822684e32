"""The "process" runtime: a container is a local process group; pods share 127.0.0.1.

Every container process carries ``TESTCLUSTER_POD=<cluster>/<pod uid>`` in its
environment so that descendants which left the process group (daemons) are still
found and killed when the container ends, as a container's PID namespace would.
Volumes are bind-mounted in a private mount namespace (``unshare --mount``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from .meta import LOG, Obj
from .podspec import Mount

MARKER = "TESTCLUSTER_POD"
"""Not FIBER_*: fiber-core reads those as configuration keys and refuses unknown ones."""


class StartError(Exception):
    """The container process could not be started (exit code 128, reason StartError)."""


@dataclass
class Sandbox:
    """What a pod's containers share: an IP and, in the netns runtime, a namespace."""

    ip: str
    netns: str = ""
    link: str = ""
    hostname: str = ""


def marked_pids(value_prefix: str) -> list[int]:
    """Processes whose environment has ``MARKER`` starting with ``value_prefix``."""
    needle = f"{MARKER}={value_prefix}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    environ = f.read()
            except OSError:
                continue
            if any(var.startswith(needle) for var in environ.split(b"\0")):
                found.append(int(entry.name))
    return found


def kill_quietly(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _check_executable(argv: list[str], env: dict[str, str], cwd: str | None,
                      mounts: list[Mount]) -> None:
    if not argv:
        raise StartError("no command: the test cluster runs no images, so set a command")
    exe = argv[0]
    if any(exe.startswith(m.target.rstrip("/") + "/") for m in mounts):
        return  # only visible once the volumes are mounted
    if "/" in exe:
        ok = os.access(os.path.join(cwd or os.getcwd(), exe), os.X_OK)
    else:
        ok = shutil.which(exe, path=env.get("PATH", os.defpath)) is not None
    if not ok:
        raise StartError(f'exec: "{exe}": executable file not found in $PATH')
    if cwd and not os.path.isdir(cwd) and not mounts:
        raise StartError(f'chdir to cwd ("{cwd}") set in config.json failed: '
                         "no such file or directory")


class ProcessRuntime:
    """Runs each container as a process group in the host's network namespace."""

    name = "process"

    def __init__(self) -> None:
        self.host_ip = "127.0.0.1"
        self._made_dirs: list[Path] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """Prepare host-wide resources (none for plain processes)."""

    def close(self) -> None:
        """Remove the mount-point folders this runtime had to create on the host."""
        for path in sorted(self._made_dirs, key=lambda p: len(p.parts), reverse=True):
            try:
                path.rmdir()
            except OSError:
                pass
        self._made_dirs.clear()

    def create_sandbox(self, pod: Obj) -> Sandbox:
        return Sandbox(ip="127.0.0.1")

    def destroy_sandbox(self, sandbox: Sandbox) -> None:
        """Free what ``create_sandbox`` took."""

    def sandbox_pids(self, sandbox: Sandbox) -> list[int]:
        return []

    def _prefix(self, sandbox: Sandbox, mounts: list[Mount]) -> list[str]:
        return ["unshare", "--mount", "--propagation", "private"] if mounts else []

    def _setup(self, sandbox: Sandbox) -> list[str]:
        return []

    def _mount_point(self, target: str) -> None:
        path = Path(target)
        missing = [p for p in [path, *path.parents] if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._made_dirs.extend(missing)

    def launch(self, sandbox: Sandbox, argv: list[str], env: dict[str, str], cwd: str | None,
               mounts: list[Mount], log: Path) -> subprocess.Popen[bytes]:
        """Start one container process with stdout and stderr appended to ``log``."""
        _check_executable(argv, env, cwd, mounts)
        if mounts and os.geteuid() != 0:
            raise StartError("volumes need root: the test cluster bind-mounts them in a "
                             "private mount namespace")
        script = self._setup(sandbox)
        for mount in mounts:
            self._mount_point(mount.target)
            target = shlex.quote(mount.target)
            script.append(f"mount --bind {shlex.quote(str(mount.source))} {target}")
            if mount.read_only:
                script.append(f"mount -o remount,bind,ro {target}")
        if script and cwd:
            script.append(f"cd {shlex.quote(cwd)}")
        command = self._prefix(sandbox, mounts)
        if script:
            command += ["sh", "-c", "set -e; " + "; ".join(script) + '; exec "$@"', "sh"]
        LOG.debug("launching %s", command + argv)
        with open(log, "ab") as out:
            try:
                return subprocess.Popen(command + argv, env=env, cwd=None if script else cwd,
                                        stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                raise StartError(str(exc)) from exc
