"""The edge's import contracts (pyproject.toml; `lint-imports` checks them in CI) name every room
of flamed.

What would break: "sdk-layering" and "tui-on-sdk" list what the SDK and the TUI must not import
(import-linter has no "only these" contract); a module or package added under flamed/ and left
out of those lists could be imported by the SDK or the TUI without any contract noticing.
"""

from __future__ import annotations

import pkgutil
import tomllib

import flamed
from tests.support.daemons import REPO

#: What the SDK may import of flamed (itself and the transport), and the TUI (the SDK's client).
SDK = {"flamed.client", "flamed.service", "flamed.cache", "flamed.transport"}
TUI = {"flamed.client"}


def forbidden_modules(contract: str) -> set[str]:
    """The forbidden_modules of import contract `contract` in pyproject.toml."""
    listed = contracts()[contract]["forbidden_modules"]
    assert isinstance(listed, list), listed
    return {str(module) for module in listed}


def contracts() -> dict[str, dict[str, object]]:
    with open(REPO / "pyproject.toml", "rb") as f:
        listed = tomllib.load(f)["tool"]["importlinter"]["contracts"]
    return {c["id"]: c for c in listed}


def rooms() -> set[str]:
    """Every module and package directly under flamed/ (but `python -m flamed`'s entry point)."""
    return {f"flamed.{m.name}" for m in pkgutil.iter_modules(flamed.__path__)} - {"flamed.__main__"}


def test_every_room_of_flamed_is_either_the_sdk_or_forbidden_to_it() -> None:
    """Breaks if a package added under flamed/ is neither part of the SDK nor named in the sdk-layering
    contract (the SDK could import it unchecked)."""
    forbidden = forbidden_modules("sdk-layering")
    assert rooms() - SDK <= forbidden, sorted(rooms() - SDK - forbidden)
    assert not forbidden & SDK


def test_every_room_of_flamed_but_the_client_is_forbidden_to_the_tui() -> None:
    """Breaks if a package added under flamed/ is not named in the tui-on-sdk contract, or the TUI may import
    zmq."""
    forbidden = forbidden_modules("tui-on-sdk")
    assert rooms() - TUI <= forbidden, sorted(rooms() - TUI - forbidden)
    assert "zmq" in forbidden
    assert not forbidden & TUI
