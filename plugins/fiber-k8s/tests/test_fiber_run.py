"""``fiber run`` on the test cluster: a master pod running a Pool whose workers are pods."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("kubernetes")
from cluster import Cluster
from conftest import TEST_IMAGE, fiber_env

from fiber_k8s.cli import build_commands

FIBER = [sys.executable, "-m", "fiber_core.cli", "run"]
PROGRAM = """
import socket, sys, fiber_core

def where(x):
    return x * x, fiber_core.current_process().name

if __name__ == "__main__":
    with fiber_core.Pool(2) as pool:
        results = pool.map(where, range(6))
    print("squares", [square for square, _ in results])
    print("workers", sorted({name.split(".")[0] for _, name in results}))
    sys.exit(3)
"""


def test_attach_streams_output_and_returns_the_exit_code(k8s_nesting_cluster: Cluster,
                                                         tmp_path: Path) -> None:
    cluster = k8s_nesting_cluster
    program = tmp_path / "program.py"
    program.write_text(textwrap.dedent(PROGRAM))
    env = fiber_env(cluster)
    passed = [f"--env={key}={env[key]}" for key in ("FIBER_K8S_PYTHON", "FIBER_IMAGE")]
    result = subprocess.run(
        [*FIBER, "--image", TEST_IMAGE, "--cpu", "0.5", "--memory", "512M", *passed,
         "--attach", "--", sys.executable, str(program)],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    name, *output = result.stdout.splitlines()
    assert result.returncode == 3, result.stdout + result.stderr
    assert name.startswith("fiber-run-")
    assert "squares [0, 1, 4, 9, 16, 25]" in output
    assert any(line.startswith("workers ['PoolWorker-") for line in output)


def test_detached_run_leaves_the_pod_and_build_pushes_first(k8s_nesting_cluster: Cluster,
                                                            tmp_path: Path) -> None:
    """--build runs docker build and push (a stand-in docker here) and uses the image."""
    cluster = k8s_nesting_cluster
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "docker").chmod(0o755)
    app = tmp_path / "My App"
    app.mkdir()
    result = subprocess.run(
        [*FIBER, "--build", "--registry", "127.0.0.1:5000", "--volume", "data:/data",
         "--", "true"], capture_output=True, text=True, timeout=60, cwd=app,
        env={**os.environ, **cluster.env, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    build, push = calls.read_text().splitlines()
    tag = push.split()[-1]
    assert tag.startswith("127.0.0.1:5000/my-app:") and build == f"build -t {tag} {app}"
    # the test cluster has no persistent volume claims: the pod is refused (422)
    assert result.returncode == 2 and "persistentVolumeClaim" in result.stderr

    result = subprocess.run([*FIBER, "--image", TEST_IMAGE, "--name", "detached", "--",
                             "true"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, **cluster.env})
    name = result.stdout.strip()
    assert result.returncode == 0 and name.startswith("detached-")
    pod = cluster.store.get("pods", "default", name)
    assert pod["spec"]["containers"][0]["command"] == ["true"]
    env = {var["name"]: var.get("value") for var in pod["spec"]["containers"][0]["env"]}
    assert env["FIBER_BACKEND"] == "kubernetes"
    cluster.registry.delete("pods", "default", name, {"gracePeriodSeconds": 0})


def test_build_commands() -> None:
    assert build_commands("reg:5000/", "team/app:1", "/src") == [
        ["docker", "build", "-t", "reg:5000/team/app:1", "/src"],
        ["docker", "push", "reg:5000/team/app:1"]]
    build, _ = build_commands("reg", None, "/work/Pi Estimation")
    assert build[3].startswith("reg/pi-estimation:")


def test_usage_errors() -> None:
    result = subprocess.run([*FIBER, "--image", "x"], capture_output=True, text=True)
    assert result.returncode == 2 and "no command" in result.stderr
    result = subprocess.run([*FIBER, "--build", "--", "true"], capture_output=True, text=True)
    assert result.returncode == 2 and "--registry" in result.stderr
