"""Config: defaults that work, errors that name the key, endpoint lookup order."""

from __future__ import annotations

from pathlib import Path

import pytest

from flamed.config import ConfigError, check_endpoint, client_endpoint, load_config, parse_config

pytestmark = pytest.mark.timeout(10)


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Breaks if the defaults used without any config file change (frontend, retry limit, fsync)."""
    monkeypatch.delenv("FLAME_CONF", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    config = load_config(None)
    assert config.cluster.frontend == "tcp://127.0.0.1:8080"
    assert config.recovery.task_retry_limit == 3
    assert config.storage.fsync == "always"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"recovery": {"heartbeat_intervall": 1}}, "heartbeat_intervall"),
        ({"recovery": {"heartbeat_interval": -1}}, "recovery.heartbeat_interval"),
        ({"recovery": {"heartbeat_interval": "soon"}}, "recovery.heartbeat_interval"),
        ({"storage": {"fsync": "sometimes"}}, "storage.fsync"),
        ({"nonsense": {}}, "nonsense"),
    ],
)
def test_bad_values_name_the_key(raw: dict[str, object], words: str) -> None:
    """Breaks if a bad value is accepted, or refused without naming its key."""
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        parse_config(raw)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    """Breaks if a config file that is not TOML, or is missing, fails without saying so."""
    bad = tmp_path / "flame.toml"
    bad.write_text("[cluster\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.toml"))


def test_endpoint_lookup_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Breaks if the client endpoint is not taken from the argument, then $FLAME_ENDPOINT, then the config
    file, in that order."""
    conf = tmp_path / "flame.toml"
    conf.write_text('[client]\nendpoint = "tcp://10.0.0.1:8080"\n')
    monkeypatch.delenv("FLAME_ENDPOINT", raising=False)
    assert client_endpoint(None, str(conf)) == "tcp://10.0.0.1:8080"
    monkeypatch.setenv("FLAME_ENDPOINT", "ipc:///tmp/x")
    assert client_endpoint(None, str(conf)) == "ipc:///tmp/x"
    assert client_endpoint("tcp://h:1", str(conf)) == "tcp://h:1"


@pytest.mark.parametrize("endpoint", ["http://h:8080", "tcp://", "h:8080", "tcp://h:port"])
def test_bad_endpoints_are_refused(endpoint: str) -> None:
    """Breaks if something that is not a ZeroMQ endpoint is accepted as one."""
    with pytest.raises(ConfigError):
        check_endpoint(endpoint, "--frontend")
