"""Config: every key round trips through `flamed config show`; a bad key, type or endpoint
is an error naming the key; `config show` says where each value came from."""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec
import pytest

from flamed.cli.config_show import config_to_toml, show_config
from flamed.cli.flamed import main
from flamed.config import Config, ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "systemd" / "flame.toml.example"


def _every_key_changed() -> Config:
    """A config where every key differs from its default (so a key dropped by the dump shows)."""
    data = msgspec.to_builtins(Config())
    for section, values in data.items():
        for key, value in values.items():
            if isinstance(value, bool):
                values[key] = not value
            elif isinstance(value, int | float):
                values[key] = value + 1
            elif isinstance(value, list):
                values[key] = list(reversed(value))
            elif key in ("frontend", "backend", "endpoint", "bind"):
                values[key] = f"tcp://example.org:{9000 + len(key)}"
            elif key == "fsync":
                values[key] = "never"
            elif key == "level":
                values[key] = "debug"
            elif key == "format":
                values[key] = "json"
            elif key == "resreq":
                values[key] = "cpu=2,mem=2Gi,gpu=0"
            else:
                values[key] = f"/x/{section}-{key}"
        data[section] = values
    data["recovery"]["reconnect_backoff_max"] = 100.0
    return msgspec.convert(data, Config)


def test_every_key_round_trips(tmp_path: Path) -> None:
    """Breaks if a config key is lost or changed on the way to TOML and back (every key set to a non-default
    value)."""
    changed = _every_key_changed()
    assert all(
        getattr(getattr(changed, s), k) != getattr(getattr(Config(), s), k)
        for s in Config.__struct_fields__
        for k in type(getattr(Config(), s)).__struct_fields__
    )
    path = tmp_path / "flame.toml"
    path.write_text(config_to_toml(changed, {}))
    assert load_config(str(path)) == changed
    assert parse_config(tomllib.loads(config_to_toml(Config()))) == Config()


def test_example_config_is_valid_and_lists_every_key() -> None:
    """Breaks if the shipped example config does not load, or misses or invents a key of some section."""
    raw = tomllib.loads(EXAMPLE.read_text())
    load_config(str(EXAMPLE))
    for section in Config.__struct_fields__:
        fields = type(getattr(Config(), section)).__struct_fields__
        assert set(raw[section]) == set(fields), section


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("[recovery]\nheartbeat_intervl = 1.0\n", "recovery.heartbeat_intervl", "unknown"),
        ("[nonsense]\nx = 1\n", "nonsense", "unknown"),
        ('[recovery]\nheartbeat_interval = "fast"\n', "recovery.heartbeat_interval", "float"),
        ('[log]\nlevel = "loud"\n', "log.level", "debug"),
        ('[cluster]\nfrontend = "http://localhost:80"\n', "cluster.frontend", "tcp://HOST:PORT"),
        ('[cluster]\nbackend = "tcp://host:99999"\n', "cluster.backend", "tcp://HOST:PORT"),
        ("[executor_manager]\nstop_grace = -1\n", "executor_manager.stop_grace", ">= 0"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str, expected: str) -> None:
    """Breaks if a bad config value fails without naming the key, what was expected and the file."""
    path = tmp_path / "flame.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    message = str(caught.value)
    assert key in message, message
    assert expected.lower() in message.lower(), message
    assert str(path) in message, message


def test_config_show_names_the_source_of_each_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Breaks if `flamed config show` does not say where each value comes from (file or default), or its output
    is not itself a valid config."""
    path = tmp_path / "flame.toml"
    path.write_text('[cluster]\nname = "prod"\n')
    text = show_config(str(path))
    assert f'name = "prod"  # file {path}' in text
    assert 'fsync = "always"  # default' in text
    assert tomllib.loads(text)["cluster"]["name"] == "prod"  # the output is a config file too
    assert main(["config", "show", "--config", str(path)]) == 0
    assert f"# config file: {path} (from --config)" in capsys.readouterr().out


def test_config_show_with_a_bad_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Breaks if `flamed config show` on a bad file does not exit 2 naming the bad key."""
    path = tmp_path / "flame.toml"
    path.write_text("[cluster]\nbogus = 1\n")
    with pytest.raises(SystemExit) as caught:
        main(["config", "show", "--config", str(path)])
    assert caught.value.code == 2
    assert "cluster.bogus" in capsys.readouterr().err
