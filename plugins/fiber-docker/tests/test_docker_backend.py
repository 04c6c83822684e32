"""fiber-docker against a real Docker engine, beyond the contract suite: container
settings through ``docker inspect``, the secret, output forwarding, clean-up after
a normal exit, an exception and a SIGKILL of the master, and error messages."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

import fiber_core
import fiber_docker
from fiber_core import context
from fiber_core.testing.contract import targets
from fiber_docker import containers, engine

pytestmark = pytest.mark.usefixtures("docker_engine")

CLEANUP_LIMIT = 15.0


@pytest.fixture
def configure() -> Iterator[Callable[..., Any]]:
    """``configure(**keys)``: run on docker with these keys for this test only."""
    saved = dict(context._code_values)
    fiber_core.init(backend="docker")
    yield lambda **keys: fiber_core.init(backend="docker", **keys)
    for child in fiber_core.active_children():
        child.kill()
        child.join(30)
    context._code_values.clear()
    context._code_values.update(saved)
    fiber_core.init()


def docker_cli(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True,
                          timeout=60).stdout


def containers_of(run_id: str) -> List[str]:
    """Names of the run's containers, running or not (`docker ps -a --filter label=...`)."""
    return docker_cli("ps", "-a", "--filter", f"label={containers.RUN_LABEL}={run_id}",
                      "--format", "{{.Names}}").split()


def wait_until(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "condition not met in time"
        time.sleep(0.2)
    return time.monotonic() - start


def run_id() -> str:
    return context.runtime().run_id


def test_created_container_settings_via_inspect(configure: Callable[..., Any]) -> None:
    """@meta hints, labels, name, init, auto-remove, mounts; the secret is a file only."""
    configure(docker_mounts="fiber-docker-test-volume:/cache:ro")
    secret = "not-in-inspect-" + os.urandom(8).hex()
    spec = fiber_core.hookspecs.JobSpec(
        command=(sys.executable, "-m", "fiber_core.worker"), env={"ONE": "1"},
        secret=secret, name="Process-7:1", run_id="inspect-" + os.urandom(4).hex(),
        cpu=1.5, memory=300, gpu=2)
    api = engine.client()
    created = containers.create(api, spec, context.current_config())
    try:
        info = json.loads(docker_cli("inspect", created["Id"]))[0]
        host = info["HostConfig"]
        assert host["NanoCpus"] == 1_500_000_000 and host["Memory"] == 300 * 1024 * 1024
        [gpus] = host["DeviceRequests"]
        assert (gpus["Driver"], gpus["Count"], gpus["Capabilities"]) == ("nvidia", 2, [["gpu"]])
        assert host["Init"] is True and host["AutoRemove"] is True
        assert host["NetworkMode"] == "host"
        assert info["Name"] == "/" + created["Name"]
        assert created["Name"].startswith("fiber-Process-7.1-")
        labels = info["Config"]["Labels"]
        assert labels[containers.RUN_LABEL] == spec.run_id
        assert labels[containers.PROCESS_LABEL] == "Process-7:1"
        assert info["Config"]["Cmd"] == ["python3", "-m", "fiber_core.worker"]
        assert info["Config"]["WorkingDir"] == os.getcwd()
        mounts = {(m["Type"], m.get("Name") or m["Source"], m["Destination"], m["RW"])
                  for m in info["Mounts"]}
        assert ("volume", "fiber-docker-test-volume", "/cache", False) in mounts
        assert ("bind", os.getcwd(), os.getcwd(), True) in mounts
        assert secret not in json.dumps(info)
        env = dict(item.split("=", 1) for item in info["Config"]["Env"])
        assert env["ONE"] == "1" and env[containers.CONTAINER_ENV] == spec.run_id
        stream, _ = api.get_archive(created["Id"], containers.SECRET_PATH)
        assert secret.encode() in b"".join(stream)
        assert containers_of(spec.run_id) == [created["Name"]]
    finally:
        api.remove_container(created["Id"], force=True)
        api.remove_volume("fiber-docker-test-volume", force=True)


def test_running_process_is_found_by_label_and_sized_by_meta(
        configure: Callable[..., Any]) -> None:
    @fiber_core.meta(cpu=0.5, memory="128M")
    def sized_sleep() -> None:
        time.sleep(30)

    process = fiber_core.Process(target=sized_sleep, name="sized")
    process.start()
    try:
        names = docker_cli("ps", "--filter", f"label={containers.RUN_LABEL}={run_id()}",
                           "--filter", f"label={containers.PROCESS_LABEL}=sized",
                           "--format", "{{.Names}}").split()
        assert len(names) == 1 and names[0].startswith("fiber-sized-")
        info = json.loads(docker_cli("inspect", names[0]))[0]
        assert info["HostConfig"]["NanoCpus"] == 500_000_000
        assert info["HostConfig"]["Memory"] == 128 * 1024 * 1024
        assert context.runtime().secret not in json.dumps(info)
        assert process.is_alive()
    finally:
        process.terminate()
        process.join(30)
    assert process.exitcode == -signal.SIGTERM
    wait_until(lambda: not containers_of(run_id()), CLEANUP_LIMIT)


def test_children_run_in_containers_and_inherit_the_backend(
        configure: Callable[..., Any]) -> None:
    queue = fiber_core.SimpleQueue()

    def report(queue: Any) -> None:
        queue.put((os.path.exists("/.dockerenv"), fiber_docker.detect_environment(),
                   context.runtime().backend.name))

    process = fiber_core.Process(target=targets.start_child, args=(queue, report, queue))
    process.start()
    process.join(60)
    assert queue.get() == (True, True, "docker")
    assert queue.get() == 0 and process.exitcode == 0


def test_gpu_request_without_gpus_fails_clearly_and_leaves_nothing(
        configure: Callable[..., Any]) -> None:
    @fiber_core.meta(gpu=1)
    def wants_gpu() -> None:
        pass

    process = fiber_core.Process(target=wants_gpu)
    with pytest.raises(engine.DockerBackendError, match="cannot start container.*NVIDIA"):
        process.start()
    assert not containers_of(run_id())
    assert not fiber_docker._runs[run_id()].exits.running()


def test_missing_image_is_named_without_hanging(configure: Callable[..., Any]) -> None:
    image = "127.0.0.1:9/fiber-missing:1"  # a registry address where nothing listens
    configure(image=image)
    start = time.monotonic()
    with pytest.raises(engine.ImageUnavailable, match=f"{image}.*cannot be pulled.*build"):
        fiber_core.Process(target=targets.sleep, args=(0,)).start()
    configure(image="fiber-missing-locally:1", docker_pull="never")
    with pytest.raises(engine.ImageUnavailable, match="fiber-missing-locally:1.*'never'"):
        fiber_core.Process(target=targets.sleep, args=(0,)).start()
    assert time.monotonic() - start < 20


def test_container_exiting_before_connecting_back_is_reported_with_its_output(
        configure: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
    configure(docker_python="/no/such/python3")
    process = fiber_core.Process(target=targets.sleep, args=(0,))
    with caplog.at_level(logging.ERROR, logger="fiber"):
        process.start()
        process.join(60)
    assert process.exitcode is not None and process.exitcode > 0
    message = "\n".join(record.getMessage() for record in caplog.records)
    assert f"{process.name} (job " in message and "exited with code" in message
    assert "before connecting back" in message and "/no/such/python3" in message


# Master programs run as separate processes: their output, exit and death.

MASTER = """
import sys, time
import fiber_core
from fiber_core import context
from fiber_core.testing.contract import targets

def talk():
    print("out from the child")
    print("err from the child", file=sys.stderr)

if __name__ == "__main__":
    print(context.runtime().run_id, flush=True)
"""


def start_master(tmp_path: Path, body: str, **env: str) -> subprocess.Popen:
    script = tmp_path / "master.py"
    script.write_text(MASTER + textwrap.indent(textwrap.dedent(body), "    "))
    return subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "FIBER_BACKEND": "docker", **env})


def finish(master: subprocess.Popen) -> Dict[str, Any]:
    out, err = master.communicate(timeout=120)
    run, _, rest = out.partition("\n")
    return {"run": run, "out": rest, "err": err, "code": master.returncode}


def test_output_is_forwarded_before_join_returns(tmp_path: Path) -> None:
    result = finish(start_master(tmp_path, """
        process = fiber_core.Process(target=talk)
        process.start()
        process.join()
        print("master after join", process.exitcode)
    """))
    assert result["out"] == "out from the child\nmaster after join 0\n", result
    assert "err from the child" in result["err"]
    assert not containers_of(result["run"])


def test_nothing_left_after_an_exception_in_the_master(tmp_path: Path) -> None:
    result = finish(start_master(tmp_path, """
        fiber_core.Process(target=targets.sleep, args=(60,), daemon=True).start()
        fiber_core.Process(target=targets.sleep, args=(1,)).start()
        raise RuntimeError("the master fails")
    """))
    assert result["code"] == 1 and "RuntimeError: the master fails" in result["err"]
    wait_until(lambda: not containers_of(result["run"]), CLEANUP_LIMIT)


def test_nothing_left_after_the_master_is_killed(tmp_path: Path) -> None:
    master = start_master(tmp_path, """
        queue = fiber_core.SimpleQueue()
        fiber_core.Process(target=targets.sleep, args=(120,)).start()
        fiber_core.Process(target=targets.start_child,
                           args=(queue, targets.sleep, 120)).start()
        time.sleep(120)
    """)
    assert master.stdout is not None
    run = master.stdout.readline().strip()
    try:
        wait_until(lambda: len(containers_of(run)) == 3, 60)
    finally:
        master.send_signal(signal.SIGKILL)
        master.communicate(timeout=30)
    assert wait_until(lambda: not containers_of(run), CLEANUP_LIMIT) < CLEANUP_LIMIT


def test_target_missing_from_the_image_is_reported(tmp_path: Path) -> None:
    (tmp_path / "helper_module.py").write_text("def work():\n    pass\n")
    result = finish(start_master(tmp_path, """
        import helper_module
        process = fiber_core.Process(target=helper_module.work)
        process.start()
        process.join()
        print("exitcode", process.exitcode)
    """, FIBER_DOCKER_MOUNT_CWD="false"))
    assert result["out"] == "exitcode 1\n", result
    assert "cannot load the process sent by MainProcess" in result["err"]
    assert "No module named 'helper_module'" in result["err"]
