"""Configuration: typed keys from ``.fiberconfig``, ``FIBER_<KEY>`` and ``init()``.

Precedence, highest first: values given in code (``fiber_core.init(**keys)``, or
inherited from the parent process), environment variables, the ``[default]``
section of ``.fiberconfig`` in the working directory, then each key's default.
The core declares the keys in :data:`CORE_KEYS`; each installed backend adds its
own through ``backend_info().config_keys``.
"""

from __future__ import annotations

import configparser
import logging
import os
import re
from typing import Any, Dict, Iterable, Mapping, Optional

from fiber_core.hookspecs import ConfigKey

CONFIG_FILE = ".fiberconfig"
ENV_PREFIX = "FIBER_"
INTERNAL_ENV_PREFIX = "FIBER_WORKER_"
"""Variables the core sets for workers; not configuration keys."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SIZE_UNITS = {"": 1, "k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


def boolean(text: Any) -> bool:
    """Parse yes/no, true/false, on/off, 1/0."""
    if isinstance(text, bool):
        return text
    word = str(text).strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"expected a boolean (true/false, yes/no, 1/0), got {text!r}")


def size(text: Any) -> int:
    """Parse a size in MiB: ``512``, ``512M``, ``4G``, ``4Gi``."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not match:
        raise ValueError(f"expected a size such as 512M or 4G, got {text!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def log_level(text: str) -> str:
    """Parse a logging level name."""
    name = str(text).strip().upper()
    if not isinstance(logging.getLevelName(name), int):
        raise ValueError(f"expected a level such as DEBUG, INFO or WARNING, got {text!r}")
    return name


CORE_KEYS = (
    ConfigKey("backend", str, None, "backend to run processes on; unset: detect"),
    ConfigKey("log_level", log_level, "WARNING", "level of the 'fiber' logger"),
    ConfigKey("log_file", str, None, "also log to this file ('{pid}' is replaced)"),
    ConfigKey("start_timeout", float, 300.0,
              "seconds a started process has to connect back before it counts as failed"),
    ConfigKey("heartbeat", float, 1.0,
              "seconds between liveness checks between a process and its parent"),
    ConfigKey("orphan_timeout", float, 5.0,
              "seconds after which a process that lost its parent exits"),
    ConfigKey("pool_max_attempts", int, 3,
              "times a Pool runs a task whose worker keeps dying before failing it "
              "with WorkerLostError; 1 turns retries off"),
    ConfigKey("encrypt", boolean, None,
              "encrypt traffic between processes (CURVE); unset: unless on loopback"),
)


class ConfigError(ValueError):
    """A configuration key is unknown or its value is invalid."""


class Config:
    """The effective configuration: every known key resolved to a typed value."""

    def __init__(self, keys: Iterable[ConfigKey], values: Mapping[str, Any],
                 explicit: Mapping[str, Any]) -> None:
        self._keys = {key.name: key for key in keys}
        self._values = dict(values)
        self.explicit = dict(explicit)
        """The values set in code, the environment or the file (not defaults):
        what a child process inherits."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(f"no configuration key {name!r}") from None

    def get(self, name: str, default: Any = None) -> Any:
        """Return a key's value, or ``default`` for a key no installed plugin declares."""
        return self._values.get(name, default)

    def __repr__(self) -> str:
        return f"Config({self._values!r})"


def _key_table(keys: Iterable[ConfigKey]) -> Dict[str, ConfigKey]:
    table: Dict[str, ConfigKey] = {}
    for key in keys:
        table.setdefault(key.name, key)
    return table


def _parse(key: ConfigKey, value: Any, source: str) -> Any:
    if value is None:
        return None
    try:
        return key.type(value)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"bad value for configuration key {key.name!r} ({source}): "
                          f"{error}") from None


def _unknown(name: str, source: str, table: Mapping[str, ConfigKey]) -> ConfigError:
    return ConfigError(f"unknown configuration key {name!r} ({source}); "
                       f"valid keys: {', '.join(sorted(table))}")


def read_file(path: str = CONFIG_FILE) -> Dict[str, str]:
    """Return the ``[default]`` section of a ``.fiberconfig`` file ({} if absent)."""
    if not os.path.exists(path):
        return {}
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except configparser.Error as error:
        raise ConfigError(f"cannot parse {os.path.abspath(path)}: {error}") from None
    extra = [name for name in parser.sections() if name != "default"]
    if extra:
        raise ConfigError(f"{os.path.abspath(path)}: unknown section(s) {', '.join(extra)}; "
                          "put the keys under [default]")
    return dict(parser["default"]) if parser.has_section("default") else {}


def read_env(environ: Mapping[str, str]) -> Dict[str, str]:
    """Return the ``FIBER_<KEY>`` variables as lowercase keys."""
    return {name[len(ENV_PREFIX):].lower(): value for name, value in environ.items()
            if name.startswith(ENV_PREFIX) and not name.startswith(INTERNAL_ENV_PREFIX)}


def resolve(keys: Iterable[ConfigKey], code: Mapping[str, Any],
            environ: Optional[Mapping[str, str]] = None,
            path: str = CONFIG_FILE) -> Config:
    """Combine defaults, file, environment and code values, checking each one."""
    table = _key_table(keys)
    layers = [(read_file(path), f"in {path}"),
              (read_env(os.environ if environ is None else environ), "from FIBER_* environment"),
              (dict(code), "given in code")]
    explicit: Dict[str, Any] = {}
    for values, source in layers:
        for name, value in values.items():
            if name not in table:
                raise _unknown(name, source, table)
            explicit[name] = _parse(table[name], value, source)
    values = {name: key.default for name, key in table.items()}
    values.update(explicit)
    return Config(table.values(), values, explicit)
