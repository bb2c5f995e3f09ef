"""Applications the session manager registers at start (Flame registers its defaults too)."""

from __future__ import annotations

from protocol.types import ApplicationSpec

DEFAULT_APPLICATIONS: dict[str, ApplicationSpec] = {
    "flmping": ApplicationSpec(
        description="No-op / echo service shipped with flamed (flmping's default application)",
        labels=["builtin"],
        # ${FLAME_PYTHON} is the executor manager's own interpreter, which has flamed installed.
        command="${FLAME_PYTHON}",
        arguments=["-m", "flamed.apps.flmping"],
        delay_release=60.0,
    ),
}
