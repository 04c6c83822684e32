"""fiber-docker pieces that need no Docker engine: registration, configuration,
container arguments, exit codes, errors."""

from __future__ import annotations

import signal
from typing import Any, Dict

import pytest

import fiber_docker
from fiber_core import config as config_module
from fiber_core.config import ConfigError
from fiber_core.hookspecs import SECRET_FILE_ENV, JobSpec
from fiber_core.plugins import Registry
from fiber_docker import containers, engine, settings
from fiber_docker.watch import exit_code


def make_config(**values: Any) -> config_module.Config:
    return config_module.resolve([*config_module.CORE_KEYS, *settings.CONFIG_KEYS], values,
                                 environ={}, path="")


def make_spec(**fields: Any) -> JobSpec:
    defaults: Dict[str, Any] = dict(
        command=("/usr/bin/python3.11", "-m", "fiber_core.worker"),
        env={"FIBER_WORKER_ADDRESS": "tcp://127.0.0.1:1"}, secret="s3cret-value",
        name="Process-1:2", run_id="abc123def456")
    return JobSpec(**{**defaults, **fields})


def test_registered_between_local_and_kubernetes(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = Registry().backends["docker"]
    assert backend.distribution == "fiber-docker" and backend.priority == 50
    monkeypatch.delenv(containers.CONTAINER_ENV, raising=False)
    assert not backend.applies()
    monkeypatch.setenv(containers.CONTAINER_ENV, "abc123def456")
    assert backend.applies()


def test_config_keys_parse_and_report_bad_values() -> None:
    config = make_config(docker_mounts="/data:/data:ro, cache:/root/.cache",
                         docker_pull="Always", docker_mount_cwd="no")
    assert config.docker_mounts == (("/data", "/data", True), ("cache", "/root/.cache", False))
    assert config.docker_pull == "always" and config.docker_mount_cwd is False
    assert (config.image, config.docker_network, config.docker_python) == (None, "host",
                                                                          "python3")
    assert make_config(docker_mounts=config.docker_mounts).docker_mounts == config.docker_mounts
    with pytest.raises(ConfigError, match="docker_pull.*missing, always, never"):
        make_config(docker_pull="sometimes")
    with pytest.raises(ConfigError, match="docker_mounts.*SOURCE:TARGET"):
        make_config(docker_mounts="/only-one-part")
    with pytest.raises(ConfigError, match="absolute"):
        make_config(docker_mounts="/data:relative")


def test_container_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/engine.sock")
    spec = make_spec(cpu=1.5, memory=256, gpu=2, volumes={"/host/in": "/in"})
    args = containers.create_args(spec, make_config(image="app:1", docker_mounts="vol:/v:ro",
                                                    docker_python="/opt/py/bin/python"))
    assert args["image"] == "app:1"
    assert args["command"] == ["/opt/py/bin/python", "-m", "fiber_core.worker"]
    assert args["name"].startswith("fiber-Process-1.2-")
    assert args["labels"] == {"fiber.run": "abc123def456", "fiber.process": "Process-1:2"}
    assert args["working_dir"] == str(tmp_path)
    environment = args["environment"]
    assert environment[SECRET_FILE_ENV] == containers.SECRET_PATH
    assert environment["DOCKER_HOST"] == "unix:///run/engine.sock"
    assert "s3cret-value" not in repr(args)
    host = args["host_config"]
    assert (host["nano_cpus"], host["mem_limit"]) == (1_500_000_000, 256 * 1024 * 1024)
    assert host["device_requests"][0]["Count"] == 2
    assert host["device_requests"][0]["Driver"] == "nvidia"
    assert host["auto_remove"] and host["init"] and host["network_mode"] == "host"
    mounts = {(m["Source"], m["Target"], m["Type"], m["ReadOnly"]) for m in host["mounts"]}
    assert mounts == {("vol", "/v", "volume", True), ("/host/in", "/in", "bind", False),
                      ("/run/engine.sock", "/run/engine.sock", "bind", False),
                      (str(tmp_path), str(tmp_path), "bind", False)}


def test_no_hints_no_limits_and_no_engine_access_when_not_nested(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")
    args = containers.create_args(make_spec(gpu=0), make_config(image="app:1",
                                                                docker_nested=False))
    assert args["working_dir"] is None and args["host_config"]["mounts"] == []
    assert not {"nano_cpus", "mem_limit", "device_requests"} & set(args["host_config"])
    assert "DOCKER_HOST" not in args["environment"]


def test_missing_image_says_how_to_set_it() -> None:
    with pytest.raises(containers.ImageNotSet, match="FIBER_IMAGE=.*fiberconfig.*init"):
        containers.create_args(make_spec(), make_config())


def test_secret_archive_is_private_to_a_root_user() -> None:
    import io
    import tarfile

    for user, mode in (("", 0o400), ("root", 0o400), ("1000", 0o444)):
        with tarfile.open(fileobj=io.BytesIO(containers.secret_archive("xyz", user))) as tar:
            member = tar.getmember(containers.SECRET_PATH.lstrip("/"))
            assert member.mode == mode
            assert tar.extractfile(member).read() == b"xyz"  # type: ignore[union-attr]


@pytest.mark.parametrize("status, code", [(0, 0), (1, 1), (3, 3), (128, 128), (137, -9),
                                          (143, -15), (129, -1), (255, 255)])
def test_exit_status_128_plus_n_is_death_by_signal_n(status: int, code: int) -> None:
    assert exit_code(status) == code
    assert exit_code(128 + signal.SIGKILL) == -signal.SIGKILL


def test_unreachable_engine_names_the_address_and_the_fix(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(engine.EngineUnavailable) as error:
        fiber_docker.spawn(spec=make_spec(), config=make_config(image="app:1"))
    message = str(error.value)
    assert "DOCKER_HOST=unix:///nonexistent/docker.sock" in message
    assert "dockerd" in message and "docker info" in message
    monkeypatch.delenv("DOCKER_HOST")
    monkeypatch.setattr(engine, "DEFAULT_HOST", "unix:///nonexistent/default.sock")
    with pytest.raises(engine.EngineUnavailable, match="default.sock .DOCKER_HOST is unset"):
        engine.client()


def test_master_address(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeClient:
        def inspect_network(self, name: str) -> Dict[str, Any]:
            gateways = {"apps": [{"Subnet": "10.9.0.0/16", "Gateway": "10.9.0.1"}], "none": []}
            return {"IPAM": {"Config": gateways[name]}}

    monkeypatch.delenv(containers.CONTAINER_ENV, raising=False)
    monkeypatch.setattr(engine, "client", FakeClient)
    assert fiber_docker.master_address(config=make_config()) == "127.0.0.1"
    assert fiber_docker.master_address(config=make_config(docker_network="apps")) == "10.9.0.1"
    with pytest.raises(engine.DockerBackendError, match="no gateway.*docker_network=host"):
        fiber_docker.master_address(config=make_config(docker_network="none"))
