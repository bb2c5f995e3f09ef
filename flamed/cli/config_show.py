"""`flamed config show`: the effective config as TOML, each value with where it came from.

The output is itself a valid config file (comments carry the sources), so
`flamed config show > flame.toml` is a way to start one with every key and its default.
"""

from __future__ import annotations

import json
import os
import socket
import tomllib
from typing import Any

import msgspec

from flamed.config import Config, ConfigError, find_config_path, load_config


def toml_value(value: Any) -> str:
    """One TOML value: strings as basic strings (JSON escapes are TOML's), lists inline."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def config_to_toml(config: Config, sources: dict[str, str] | None = None) -> str:
    """Every section and key of `config`; with `sources`, a `# from ...` comment per key."""
    lines: list[str] = []
    data = msgspec.to_builtins(config)
    for section, values in data.items():
        if lines:
            lines.append("")
        lines.append(f"[{section}]")
        for key, value in values.items():
            line = f"{key} = {toml_value(value)}"
            if sources is not None:
                line += f"  # {sources.get(f'{section}.{key}', 'default')}"
            lines.append(line)
    return "\n".join(lines) + "\n"


def show_config(explicit: str | None) -> str:
    """Raises ConfigError when the file is missing or bad (the caller exits 2)."""
    path = find_config_path(explicit)
    config = load_config(explicit)
    sources: dict[str, str] = {}
    if path is None:
        header = "# no config file: built-in defaults (--config, $FLAME_CONF or the user config dir)"
    else:
        how = "--config" if explicit else "$FLAME_CONF" if os.environ.get("FLAME_CONF") else "user config dir"
        header = f"# config file: {path} (from {how})"
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:  # load_config already vetted it
            raise ConfigError(f"cannot read {path}: {exc}") from None
        for section, values in raw.items():
            if isinstance(values, dict):
                for key in values:
                    sources[f"{section}.{key}"] = f"file {path}"
    if os.environ.get("FLAME_ENDPOINT"):
        sources["client.endpoint"] = "overridden for clients by $FLAME_ENDPOINT=" + os.environ["FLAME_ENDPOINT"]
    for key, in_use in resolved_defaults(config).items():
        sources[key] = f"{sources.get(key, 'default')}; in use here: {in_use}"
    return header + "\n" + config_to_toml(config, sources)


def resolved_defaults(config: Config) -> dict[str, str]:
    """What the keys left empty (or 0) mean on this host: the directories, node name and slots
    a daemon started here would use (a command-line flag still wins over both)."""
    from flamed.executor_manager.node import default_runtime_dir
    from flamed.session_manager.durability import default_state_dir

    resolved: dict[str, str] = {}
    if not config.storage.state_dir:
        resolved["storage.state_dir"] = str(default_state_dir())
    if not config.executor_manager.runtime_dir:
        resolved["executor_manager.runtime_dir"] = str(default_runtime_dir())
    if not config.executor_manager.node_name:
        resolved["executor_manager.node_name"] = socket.gethostname()
    if not config.executor_manager.slots:
        resolved["executor_manager.slots"] = str(os.cpu_count() or 1)
    if not config.client.endpoint and not os.environ.get("FLAME_ENDPOINT"):
        resolved["client.endpoint"] = config.cluster.frontend
    return resolved
