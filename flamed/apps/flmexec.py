"""The `flmexec` service (`python -m flamed.apps.flmexec`): run a script, as Flame's flmexec.

Input is Flame's `Script` as JSON: `{"language": "python" | "shell", "runtime": str | null,
"code": str, "input": [bytes as ints] | null}`; output is `ScriptOutput`, `{"data": [ints]}`:
the script's standard output. `input` is the script's standard input. A Python script runs
with the executor manager's interpreter (which has flamed, so a script can start a Runner), or
`python<runtime>` from PATH when `runtime` names another version; a shell script with
`runtime` (default `sh`). Each script runs in a fresh directory, removed afterwards, with the
instance's environment (so it finds the cluster: FLAME_ENDPOINT, FLAME_CACHE_ENDPOINT). A
script's stderr goes to the instance's log. As Flame's, a script that exits non-zero still
answers what it printed; one that printed nothing fails the task with its exit code and the
tail of its stderr (there is nothing else to answer).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from flamed.pythons import find_python, normalize
from flamed.service import FlameService, SessionContext, TaskContext, run

LANGUAGES = ("python", "shell")
#: Bytes of a failed script's stderr put in the task's message.
STDERR_TAIL = 4000


def python_for(runtime: str | None) -> str:
    """The interpreter for `runtime` ("3.12", "python3.12"; None: this one)."""
    found = find_python(runtime)
    if found is None:
        raise ValueError(f"Python {normalize(runtime)} is not installed on this node")
    return found


def parse_script(data: bytes | None) -> dict[str, Any]:
    if not data:
        raise ValueError("flmexec needs a Script: {language, code, runtime?, input?}")
    script = json.loads(data)
    if not isinstance(script, dict) or not isinstance(script.get("code"), str):
        raise ValueError("flmexec needs a Script: {language, code, runtime?, input?}")
    language = str(script.get("language") or "").strip().lower()
    if language not in LANGUAGES:
        raise ValueError(f"Unsupported language: {script.get('language')}")
    script["language"] = language
    return script


def run_script(script: dict[str, Any]) -> bytes:
    """Run the script to its end; its standard output."""
    stdin = bytes(script["input"]) if script.get("input") is not None else b""
    runtime = script.get("runtime")
    work = tempfile.mkdtemp(prefix=f"flmexec-{script['language']}-")
    try:
        if script["language"] == "python":
            entry = os.path.join(work, "main.py")
            argv = [python_for(runtime), entry]
        else:
            entry = os.path.join(work, "main.sh")
            argv = [runtime or "sh", entry]
        with open(entry, "w", encoding="utf-8") as f:
            f.write(script["code"])
        done = subprocess.run(argv, input=stdin, capture_output=True, cwd=work, check=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.stderr.buffer.write(done.stderr)  # the instance's log
    if done.returncode != 0 and not done.stdout:
        tail = done.stderr[-STDERR_TAIL:].decode(errors="replace")
        raise RuntimeError(f"script exited with code {done.returncode} and printed nothing:\n{tail}")
    return done.stdout


class ExecService(FlameService):
    def on_session_enter(self, context: SessionContext) -> None:
        pass

    def on_task_invoke(self, context: TaskContext) -> bytes | None:
        output = run_script(parse_script(context.input))
        return json.dumps({"data": list(output)}).encode()

    def on_session_leave(self) -> None:
        pass


def main() -> None:
    run(ExecService())


if __name__ == "__main__":
    main()
