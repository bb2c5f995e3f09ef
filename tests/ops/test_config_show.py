"""`flamed config show` says what an empty key means on this host, not just `""`.

Before, `state_dir = ""` left the operator to guess where the state lives.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from flamed.cli.config_show import show_config
from flamed.session_manager.durability import default_state_dir

pytestmark = pytest.mark.timeout(30)


def test_empty_directories_show_the_ones_in_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The comment of each defaulted directory names the directory a daemon would use; the
    output stays a valid config file with the same (empty) values."""
    monkeypatch.delenv("FLAME_ENDPOINT", raising=False)
    config = tmp_path / "flame.toml"
    config.write_text("[log]\nlevel = 'debug'\n")
    text = show_config(str(config))
    line = next(line for line in text.splitlines() if line.startswith("state_dir"))
    assert f"in use here: {default_state_dir()}" in line, line
    assert any(line.startswith("runtime_dir") and "in use here: /" in line for line in text.splitlines())
    assert tomllib.loads(text)["storage"]["state_dir"] == ""


def test_a_set_directory_is_shown_as_it_is(tmp_path: Path) -> None:
    """A key the file sets has no 'in use here' guess: its value is what is used."""
    config = tmp_path / "flame.toml"
    config.write_text(f"[storage]\nstate_dir = '{tmp_path / 'state'}'\n")
    line = next(line for line in show_config(str(config)).splitlines() if line.startswith("state_dir"))
    assert "in use here" not in line, line
    assert str(tmp_path / "state") in line, line
