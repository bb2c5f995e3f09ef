"""A forked instance runs its preloaded module from the code the zygote loaded once
(flamed/executor_manager/zygote.py `load_code`, `run_module`): exactly as `python -m` (and
runpy.run_module with alter_sys) would run it, as `__main__`, with the same spec, file and argv."""

from __future__ import annotations

import json
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flamed.executor_manager import zygote

pytestmark = pytest.mark.timeout(30)

PROBE = """\
import json, os, sys
with open(os.environ["PROBE_OUT"], "w") as out:
    json.dump({
        "name": __name__,
        "argv0": sys.argv[0],
        "spec": __spec__.name,
        "file": __file__,
        "package": __package__,
        "main_is_me": sys.modules["__main__"].__dict__ is globals(),
    }, out)
"""


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    package = tmp_path / "zprobe_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "probe.py").write_text(PROBE)
    out = tmp_path / "out.json"
    monkeypatch.setenv("PROBE_OUT", str(out))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["-m"])
    yield out
    for name in ("zprobe_pkg", "zprobe_pkg.probe"):
        sys.modules.pop(name, None)
    zygote._COMPILED.pop("zprobe_pkg.probe", None)


def test_a_module_runs_from_the_loaded_code_as_python_m_runs_it(probe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A forked instance would run its module differently from `python -m` (another `__name__`,
    spec, file or argv), or look it up again, if the zygote's loaded code were run wrongly."""
    runpy.run_module("zprobe_pkg.probe", run_name="__main__", alter_sys=True)
    expected = json.loads(probe.read_text())
    zygote.load_code(("zprobe_pkg.probe", "zprobe_pkg"))
    assert "zprobe_pkg.probe" in zygote._COMPILED
    assert "zprobe_pkg" not in zygote._COMPILED  # a package: `python -m` runs its __main__
    probe.unlink()

    def not_found_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("the module was looked up again")

    monkeypatch.setattr(runpy, "run_module", not_found_again)
    zygote.run_module("zprobe_pkg.probe")
    assert json.loads(probe.read_text()) == expected
    assert expected["name"] == "__main__"
    assert expected["spec"] == "zprobe_pkg.probe"
    assert expected["argv0"].endswith("probe.py")
    assert expected["main_is_me"]
