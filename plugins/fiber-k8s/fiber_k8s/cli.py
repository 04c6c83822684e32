"""``fiber run``: start a program as the master pod of a Fiber run on Kubernetes.

    fiber run [--image IMG | --build --registry REG] [--cpu N] [--memory SIZE] [--gpu N]
              [--volume CLAIM[:PATH]]... [--namespace NS] [--env NAME=VALUE]...
              [--attach] -- COMMAND...

The master pod runs COMMAND with ``FIBER_BACKEND=kubernetes``; its workers become pods
owned by it. With ``--attach`` the command streams the pod's output, exits with its
exit code and deletes the pod (also on Ctrl-C); without, it prints the pod's name and
leaves the pod to you (``kubectl logs -f NAME``).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, List, Optional

from fiber_core import context
from fiber_core.config import ConfigError, size
from fiber_k8s import manifests
from fiber_k8s.settings import claim

if TYPE_CHECKING:
    from fiber_k8s.api import Api
    from fiber_k8s.watch import PodRecord, PodWatcher

MASTER_LABEL = manifests.LABEL_PREFIX + "master"
POLL = 0.1


def add_command(subparsers: Any) -> None:
    """Add ``run`` to the ``fiber`` command (entry point in group ``fiber.commands``)."""
    parser = subparsers.add_parser(
        "run", help="run COMMAND as the master pod of a Fiber program on Kubernetes",
        description=__doc__.split("\n\n")[0], epilog="Example: fiber run --image "
        "registry.example.com/pi:1 --attach -- python3 pi.py")
    parser.add_argument("--image", help="image of the master pod and, by default, its "
                        "workers (default: the image configuration key)")
    parser.add_argument("--build", action="store_true",
                        help="docker build the Dockerfile in the current directory and push "
                             "it to --registry first")
    parser.add_argument("--registry", help="registry to push the built image to "
                        "(e.g. 127.0.0.1:5000, ghcr.io/me)")
    parser.add_argument("--cpu", type=float, help="CPU cores of the master pod")
    parser.add_argument("--memory", type=size, help="memory of the master pod (512M, 4G)")
    parser.add_argument("--gpu", type=int, help="GPUs (nvidia.com/gpu) of the master pod")
    parser.add_argument("--volume", type=claim, action="append", default=[],
                        metavar="CLAIM[:PATH]", help="mount a persistent volume claim "
                        "(default path /mnt/CLAIM); workers inherit it (repeatable)")
    parser.add_argument("--namespace", help="namespace (default: the configured or the "
                        "kubeconfig context's)")
    parser.add_argument("--service-account", help="service account of the master pod "
                        "(needs the Role of deploy/rbac.yaml)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="set a variable in the master pod, e.g. FIBER_K8S_PYTHON=python3.11 "
                             "(repeatable)")
    parser.add_argument("--name", default="fiber-run", help="prefix of the pod's name")
    parser.add_argument("--attach", action="store_true",
                        help="stream the pod's output, exit with its exit code, delete it")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND...")
    parser.set_defaults(func=run)


def build_commands(registry: str, image: Optional[str], directory: str) -> List[List[str]]:
    """The docker commands that build ``directory`` and push it to ``registry``."""
    repository = image or manifests.dns_label(os.path.basename(os.path.abspath(directory)))
    if ":" not in repository.rsplit("/", 1)[-1]:
        repository += time.strftime(":%Y%m%d-%H%M%S")
    tag = f"{registry.rstrip('/')}/{repository}"
    return [["docker", "build", "-t", tag, directory], ["docker", "push", tag]]


def _fail(message: str) -> int:
    print(f"fiber run: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Create the master pod; with --attach follow it to its end."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        return _fail("no command given: fiber run [OPTIONS] -- COMMAND...")
    env = dict(item.partition("=")[::2] for item in args.env)
    if any(not name for name in env):
        return _fail("--env takes NAME=VALUE")
    try:
        config = context.resolve_config()
    except ConfigError as error:
        return _fail(str(error))
    image = args.image or config.get("image")
    if args.build:
        if not args.registry:
            return _fail("--build needs --registry to push the image to")
        steps = build_commands(args.registry, args.image, os.getcwd())
        for step in steps:
            print("+", " ".join(step), file=sys.stderr)
            if subprocess.call(step) != 0:
                return _fail(f"{step[0]} {step[1]} failed")
        image = steps[-1][-1]
    if not image:
        return _fail("no image: pass --image or --build, or set FIBER_IMAGE")

    from fiber_k8s.api import Api, context_namespace  # the client loads only when needed
    from fiber_k8s.watch import PodRecord, PodWatcher

    api = Api()
    namespace = args.namespace or config.get("k8s_namespace") or context_namespace()
    name = manifests.pod_name(args.name)
    volumes, mounts = manifests.claim_volumes(args.volume)
    body = manifests.pod(
        name, namespace, image, command,
        labels={MASTER_LABEL: name, manifests.ROLE_LABEL: "master",
                "app.kubernetes.io/managed-by": "fiber"},
        env={"FIBER_BACKEND": "kubernetes", **env},
        resources=manifests.resources(args.cpu, args.memory, args.gpu),
        volumes=volumes, mounts=mounts,
        service_account=args.service_account or config.get("k8s_service_account"))
    pending = config.get("k8s_pending_timeout")
    record = PodRecord(name, namespace, "the master", config.get("k8s_grace_period"),
                       time.monotonic() + pending)
    watcher = PodWatcher(api, namespace, manifests.selector({MASTER_LABEL: name}),
                         int(min(60, max(1, math.ceil(pending / 4)))),
                         on_end=lambda *_: None, on_stuck=PodRecord.give_up)
    watcher.add(record)
    try:
        api.call("create_namespaced_pod", namespace, body)
        record.created_at = time.monotonic()
        print(name, flush=True)
        return _attach(api, watcher, record) if args.attach else 0
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        from kubernetes.client.rest import ApiException

        from fiber_k8s.backend import api_error
        if isinstance(error, ApiException):
            error = api_error(error, f"create the pod {name}")
        return _fail(str(error))
    finally:
        watcher.stop()
        api.close()


def _attach(api: Api, watcher: PodWatcher, record: PodRecord) -> int:
    """Stream the pod's output, wait for its exit code, delete it; the shell's exit code."""
    try:
        while record.phase == "Pending" and record.exitcode is None:
            watcher.check_stuck()
            time.sleep(POLL)
        if record.failure:
            return _fail(record.failure)
        logs = api.stream("read_namespaced_pod_log", record.name, record.namespace,
                          follow=True)
        try:
            for chunk in logs.stream(amt=None, decode_content=False):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
        finally:
            logs.release_conn()
        while record.exitcode is None:
            time.sleep(POLL)
        return record.exitcode if record.exitcode >= 0 else 128 - record.exitcode
    finally:
        api.delete_pod(record.name, record.namespace, 0 if record.exitcode is not None
                       else record.grace)
