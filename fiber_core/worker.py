"""``python -m fiber_core.worker``: what every backend runs in a new job.

It reads its parent's address and its key from the environment and the run's
secret from the environment or a file, connects back, fetches and runs its
process, reports the exit and leaves. When the parent vanishes it kills its own
children and exits, so a killed master leaves nothing behind.
"""

from __future__ import annotations

import atexit
import os
import pickle
import sys
from typing import NoReturn

from fiber_core import config, context, transport
from fiber_core.hookspecs import SECRET_ENV, SECRET_FILE_ENV
from fiber_core.peers import HubLost, Peer, Peers
from fiber_core.process import (
    ADDRESS_ENV,
    EXIT,
    HELLO,
    KEY_ENV,
    Payload,
    _ParentProcess,
    current_process,
    kill_children,
    set_worker_identity,
)

_DEFAULTS = {key.name: key.default for key in config.CORE_KEYS}


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"fiber worker: {message}\n")
    sys.stderr.flush()
    os._exit(1)


def _read_secret() -> str:
    secret = os.environ.pop(SECRET_ENV, None)
    if secret:
        return secret
    path = os.environ.get(SECRET_FILE_ENV)
    if not path:
        _fail(f"no run secret: neither {SECRET_ENV} nor {SECRET_FILE_ENV} is set "
              "(the backend must deliver JobSpec.secret)")
    try:
        with open(path) as file:
            return file.read().strip()
    except OSError as error:
        _fail(f"cannot read the run secret from {path}: {error}")


def _orphaned(reason: str) -> None:
    sys.stderr.write(f"fiber worker: {current_process().name} lost its parent ({reason}); "
                     "exiting\n")
    sys.stderr.flush()
    try:
        kill_children()
    finally:
        os._exit(1)


def _connect(address: str, key: str, secret: str) -> tuple:
    peers = Peers(secret, _DEFAULTS["heartbeat"], _DEFAULTS["orphan_timeout"])
    parent = peers.get(address, on_lost=_orphaned)
    try:
        status, *frames = parent.request(
            HELLO, key.encode(), str(os.getpid()).encode(),
            transport.python_version().encode(), timeout=_DEFAULTS["start_timeout"])
    except (TimeoutError, HubLost) as error:
        _fail(f"cannot reach the parent process at {address}: {error}")
    if status.bytes != b"ok":
        _fail(frames[0].bytes.decode(errors="replace"))
    return peers, parent, frames


def main() -> None:
    """Run the process this job was started for, then exit with its exit code."""
    try:
        address, key = os.environ.pop(ADDRESS_ENV), os.environ.pop(KEY_ENV)
    except KeyError as missing:
        _fail(f"{missing} is not set: this module is started by fiber backends, not by hand")
    secret = _read_secret()
    peers, parent, frames = _connect(address, key, secret)
    payload: Payload = pickle.loads(frames[0].bytes)
    sys.path.extend(entry for entry in payload.sys_path
                    if entry not in sys.path and os.path.exists(entry))
    runtime = context.adopt(payload.config, payload.run_id, secret, payload.identity, peers)
    try:
        process = transport.loads(frames[1:])
    except Exception as error:
        _fail(f"cannot load the process sent by {payload.parent[0]}: "
              f"{type(error).__name__}: {error}. The target and its arguments must be "
              "defined in __main__ or importable here (installed in this image or "
              "environment, with the same versions as in the parent)")
    exitcode = 1
    runtime.at_close(lambda: _report_exit(parent, key, exitcode))
    set_worker_identity(process, _ParentProcess(*payload.parent))
    exitcode = process._bootstrap()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exitcode)


def _report_exit(parent: Peer, key: str, exitcode: int) -> None:
    try:
        parent.request(EXIT, key.encode(), str(exitcode).encode(), timeout=5)
    except (TimeoutError, HubLost):
        pass  # the parent learns the exit code from the backend anyway


if __name__ == "__main__":
    main()
