"""Applications the session manager registers at start (Flame registers its defaults too):
`flmping` (no-op / echo), `flmexec` (runs scripts) and `flmrun` (the Runner's template)."""

from __future__ import annotations

import json

from protocol.types import ApplicationSchema, ApplicationSpec

#: Flame's flmexec schemas (common/src/lib.rs).
_SCRIPT_INPUT = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "language": {"type": "string", "description": "The language of the script, e.g. python or shell"},
        "code": {"type": "string", "description": "The code of the script to run"},
        "input": {"type": "array", "items": {"type": "integer"}, "description": "Bytes given on stdin"},
    },
    "required": ["language", "code"],
}
_SCRIPT_OUTPUT = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "string",
    "description": "The output of the script in UTF-8.",
}

DEFAULT_APPLICATIONS: dict[str, ApplicationSpec] = {
    "flmping": ApplicationSpec(
        description="No-op / echo service shipped with flamed (flmping's default application)",
        labels=["builtin"],
        # ${FLAME_PYTHON} is the executor manager's own interpreter, which has flamed installed.
        command="${FLAME_PYTHON}",
        arguments=["-m", "flamed.apps.flmping"],
        delay_release=60.0,
    ),
    "flmexec": ApplicationSpec(
        description="The Flame Executor application, which is used to run scripts.",
        labels=["builtin"],
        command="${FLAME_PYTHON}",
        arguments=["-m", "flamed.apps.flmexec"],
        schema=ApplicationSchema(input=json.dumps(_SCRIPT_INPUT), output=json.dumps(_SCRIPT_OUTPUT)),
        delay_release=60.0,
    ),
    "flmrun": ApplicationSpec(
        description="The Flame Runner application for executing customized Python applications.",
        labels=["builtin"],
        # A Runner's application is a copy of this one with its package as `url`: the executor
        # manager installs the package and sets ${FLAME_PYTHON} to the package's environment.
        command="${FLAME_PYTHON}",
        arguments=["-m", "flamed.apps.flmrun"],
        installer="python",
        delay_release=60.0,
    ),
}
