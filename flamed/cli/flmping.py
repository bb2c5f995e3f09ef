"""`flmping`: run N tasks of the `flmping` application and report (Flame's flmping, FLAME.md 5.2).

    flmping [-t N] [-c TEXT] [-d MS] [-m SIZE] [-p] [-P PRIORITY] [-r RESREQ] [-a APP]

Creates a session, submits every task at once through `Session.run` futures, prints a table of
the outputs (or, with -p, the BENCHMARK RESULTS block), then closes the session. Exit codes:
0 every task succeeded; 1 a task failed (stderr says how many and why) or the cluster could not
be used; 2 bad arguments. On a terminal a progress bar shows how far the run is (`--progress`
forces it, `--no-progress` turns it off). Task outputs, error messages and the session id come
from the wire: they are printed with their control characters escaped (`printable`; the table
does it for its cells).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future

from flamed.cli.flmctl import PRIORITY, format_table, int_in
from flamed.client import FlameError, FlameErrorCode, open_connection, progress
from flamed.client.text import printable
from protocol.resources import parse_resreq, parse_size
from protocol.types import ResourceRequirement

#: One run's tasks are held in memory here (a future each): the session manager's default
#: `limits.max_tasks_per_session` is also the most one flmping asks for.
MAX_TASKS = 10_000_000
MAX_DURATION_MS = 24 * 3600 * 1000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flmping", description="Flame Ping: run tasks of a ping service.")
    parser.add_argument(
        "-t", "--task-num", type=int_in(0, MAX_TASKS), default=10, help="the number of tasks to run (default: 10)"
    )
    parser.add_argument("-c", "--common-data", help="the common data to pass to the tasks")
    parser.add_argument(
        "-d", "--duration", type=int_in(0, MAX_DURATION_MS), help="the duration (milliseconds) each task sleeps"
    )
    parser.add_argument("-m", "--memory", help="the memory each task allocates, e.g. 1Mi")
    parser.add_argument("-p", "--perf", action="store_true", help="benchmark mode (summary only)")
    parser.add_argument("-P", "--priority", type=PRIORITY, default=0, help="session priority (default: 0 = lowest)")
    parser.add_argument("-r", "--resreq", help='resources per executor, "cpu=N,mem=SIZE,gpu=N"')
    parser.add_argument("-a", "--app", default="flmping", help="the application (default: flmping)")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar on stderr while tasks run (default: when stderr is a terminal)",
    )
    parser.add_argument("--endpoint", metavar="EP", help="session manager frontend (default: $FLAME_ENDPOINT, config)")
    parser.add_argument("--config", metavar="FILE", help="config file (default: $FLAME_CONF, then the user config dir)")
    return parser


def ping_input(duration: int | None, memory: str | None) -> bytes | None:
    """The service's input: Flame's PingRequest as JSON, or None when neither is given."""
    if duration is None and memory is None:
        return None
    request: dict[str, object] = {}
    if duration is not None:
        request["duration"] = duration
    if memory is not None:
        request["memory"] = memory
    return json.dumps(request).encode()


def human_count(n: int) -> str:
    return f"{n:,}"


def perf_summary(succeeded: int, task_num: int, duration_ms: int) -> str:
    """Flame's BENCHMARK RESULTS block (throughput = succeeded / wall time of the task phase)."""
    seconds = duration_ms / 1000
    throughput = succeeded / seconds if seconds > 0 else 0.0
    rule = "=" * 60
    return "\n".join(
        [
            "",
            rule,
            "BENCHMARK RESULTS",
            rule,
            f"Duration:        {seconds:.2f}s",
            f"Succeeded:       {succeeded}/{task_num}",
            f"Failed:          {task_num - succeeded}",
            f"Throughput:      {throughput:.2f} tasks/sec",
            rule,
            "",
        ]
    )


def completion_line(task_num: int, succeeded: int, elapsed_ms: int) -> str:
    """The last line of a table run: how many ran, how long, and how many of them failed."""
    line = f"<{human_count(task_num)}> tasks was completed in <{human_count(elapsed_ms)} ms>"  # Flame's words
    failed = task_num - succeeded
    if failed:
        return f"{line}: {human_count(succeeded)} succeeded, {human_count(failed)} failed."
    return line + "."


def failure_summary(futures: list[Future[bytes | None]]) -> str:
    """One line for stderr: how many tasks failed, and the first reason."""
    errors = [e for e in (f.exception() for f in futures) if e is not None]
    first = errors[0].message if isinstance(errors[0], FlameError) else str(errors[0])
    return f"{human_count(len(errors))} of {human_count(len(futures))} tasks failed; the first: {printable(first)}"


def task_output(future: Future[bytes | None]) -> tuple[str, str]:
    """(state, output text) of a finished run future."""
    error = future.exception()
    if error is None:
        output = future.result()
        try:
            message = json.loads(output or b"{}").get("message", "")
        except (ValueError, AttributeError):
            message = (output or b"").decode(errors="replace")
        return "Succeed", str(message)
    if isinstance(error, FlameError):
        cancelled = error.code is FlameErrorCode.INVALID_STATE and hasattr(future, "task_id")
        state = "Cancelled" if cancelled else "Failed"
        return state, f"code <{int(error.code)}>: {error.message}"
    return "Failed", str(error)


def _check(args: argparse.Namespace) -> ResourceRequirement | None:
    """What argparse's types cannot say (the numbers are bounded by them)."""
    if args.memory is not None:
        parse_size(args.memory)
    return parse_resreq(args.resreq) if args.resreq else None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        resreq = _check(args)
        common_data = json.dumps({"value": args.common_data}).encode() if args.common_data is not None else None
        with open_connection(args.endpoint, args.config) as conn:
            start = time.monotonic()
            session = conn.create_session(args.app, common_data, priority=args.priority, resreq=resreq)
            created_ms = int((time.monotonic() - start) * 1000)
            print(
                f"Session <{printable(session.id)}> was created in <{created_ms} ms>, "
                f"start to run <{human_count(args.task_num)}> tasks in the session:\n"
            )
            data = ping_input(args.duration, args.memory)
            start = time.monotonic()
            futures = [session.run(data) for _ in range(args.task_num)]
            progress(futures, description=f"session {printable(session.id)}", show=args.progress)  # waits for all
            elapsed_ms = int((time.monotonic() - start) * 1000)
            succeeded = sum(1 for f in futures if f.exception() is None)
            if args.perf:
                print(perf_summary(succeeded, args.task_num, elapsed_ms))
            else:
                rows = []
                for index, future in enumerate(futures):
                    state, output = task_output(future)
                    rows.append((session.id, getattr(future, "task_id", index + 1), state, output))
                print(format_table(["Session", "Task", "State", "Output"], rows))
                print(f"\n\n{completion_line(args.task_num, succeeded, elapsed_ms)}\n")
            session.close()
            if succeeded < args.task_num:
                print(f"flmping: error: {failure_summary(futures)}", file=sys.stderr)
    except (FlameError, ValueError) as exc:
        print(f"flmping: error: {printable(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0 if succeeded == args.task_num else 1


if __name__ == "__main__":
    sys.exit(main())
