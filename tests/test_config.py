"""Configuration: precedence, types and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fiber_core import config
from fiber_core.config import ConfigError, resolve
from fiber_core.hookspecs import ConfigKey

KEYS = [*config.CORE_KEYS, ConfigKey("memory_limit", config.size, 512, ""),
        ConfigKey("mount_cwd", config.boolean, True, "")]


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path / ".fiberconfig"


def test_defaults_without_any_source(config_file: Path) -> None:
    resolved = resolve(KEYS, {}, environ={})
    assert resolved.backend is None and resolved.log_level == "WARNING"
    assert resolved.memory_limit == 512 and resolved.explicit == {}


def test_precedence_code_over_env_over_file(config_file: Path) -> None:
    config_file.write_text("[default]\nlog_level = info\nheartbeat = 3\nbackend = local\n")
    environ = {"FIBER_LOG_LEVEL": "error", "FIBER_HEARTBEAT": "2"}
    resolved = resolve(KEYS, {"heartbeat": 0.5}, environ=environ)
    assert resolved.backend == "local"          # file
    assert resolved.log_level == "ERROR"        # env over file
    assert resolved.heartbeat == 0.5            # code over env
    assert resolved.explicit == {"backend": "local", "log_level": "ERROR", "heartbeat": 0.5}


@pytest.mark.parametrize("text, expected", [
    ("512", 512), ("512M", 512), ("4G", 4096), ("4Gi", 4096), ("1.5g", 1536), ("2048k", 2)])
def test_sizes(text: str, expected: int) -> None:
    assert config.size(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("yes", True), ("On", True), ("1", True), ("false", False), ("no", False), (False, False)])
def test_booleans(text: object, expected: bool) -> None:
    assert config.boolean(text) is expected


def test_typed_values_from_env(config_file: Path) -> None:
    resolved = resolve(KEYS, {}, environ={"FIBER_MEMORY_LIMIT": "2G",
                                          "FIBER_MOUNT_CWD": "off"})
    assert resolved.memory_limit == 2048 and resolved.mount_cwd is False


def test_unknown_key_lists_valid_keys(config_file: Path) -> None:
    with pytest.raises(ConfigError) as error:
        resolve(KEYS, {"bakend": "local"}, environ={})
    message = str(error.value)
    assert "unknown configuration key 'bakend' (given in code)" in message
    assert "backend" in message and "memory_limit" in message


def test_unknown_key_in_env_and_file(config_file: Path) -> None:
    with pytest.raises(ConfigError, match="'imagee' .from FIBER_. environment"):
        resolve(KEYS, {}, environ={"FIBER_IMAGEE": "x"})
    config_file.write_text("[default]\ncolour = blue\n")
    with pytest.raises(ConfigError, match=r"'colour' \(in .fiberconfig\)"):
        resolve(KEYS, {}, environ={})


def test_internal_worker_variables_are_not_keys(config_file: Path) -> None:
    resolve(KEYS, {}, environ={"FIBER_WORKER_SECRET": "x", "FIBER_WORKER_KEY": "y"})


@pytest.mark.parametrize("key, value, fragment", [
    ("heartbeat", "soon", "could not convert"),
    ("log_level", "LOUD", "expected a level"),
    ("memory_limit", "lots", "expected a size"),
    ("mount_cwd", "maybe", "expected a boolean"),
])
def test_bad_values_name_the_key(config_file: Path, key: str, value: str,
                                 fragment: str) -> None:
    with pytest.raises(ConfigError, match=f"bad value for configuration key '{key}'.*{fragment}"):
        resolve(KEYS, {key: value}, environ={})


def test_file_sections(config_file: Path) -> None:
    config_file.write_text("[production]\nbackend = kubernetes\n")
    with pytest.raises(ConfigError, match="unknown section.*production.*under \\[default\\]"):
        resolve(KEYS, {}, environ={})
    config_file.write_text("not an ini file\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        resolve(KEYS, {}, environ={})


def test_init_validates_and_applies(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fiber_core
    from fiber_core import context

    monkeypatch.setattr(context, "_code_values", {})
    with pytest.raises(ConfigError, match="unknown configuration key 'nope'"):
        fiber_core.init(nope=1)
    with pytest.raises(fiber_core.BackendError, match="pip install fiber-slurm"):
        fiber_core.init(backend="slurm")
    assert fiber_core.init(backend="local", log_level="debug").log_level == "DEBUG"
    assert fiber_core.current_config().backend == "local"
    fiber_core.init(log_level="warning")
