"""`flmctl`: look at and change a Flame cluster from the shell (Flame's flmctl, FLAME.md 5.1).

    flmctl list -a|-s|-e|-n
    flmctl view -a APP | -s SESSION [-t TASK] [-o json] | -n NODE
    flmctl create -a APP [-p PRIORITY] [-r RESREQ]
    flmctl close -s SESSION
    flmctl register -f FILE        (YAML, one application per document)
    flmctl update -a FILE
    flmctl unregister -a NAME
    flmctl drain -n NODE | undrain -n NODE   (cordon: no new executors; existing ones finish)
    flmctl stats

The endpoint is --endpoint, then FLAME_ENDPOINT, then the config file, then tcp://127.0.0.1:8080.
Exit codes: 0 done; 1 the request failed (one line `flmctl: error: ...` on stderr); 2 bad
arguments (including `list` or `view` without saying what). Tables are Flame's borderless
layout: a header row, cells padded by one space.
Everything printed that came from the wire has its control characters escaped (`printable`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from flamed.cli.application_files import parse_applications, read_applications
from flamed.cli.details import (
    format_duration,
    session_json,
    task_json,
    view_application,
    view_node,
    view_session,
    view_task,
)
from flamed.cli.tables import (
    application_table,
    clock,
    clock_ms,
    executor_table,
    format_table,
    node_status,
    node_table,
    resources,
    session_table,
    stats_table,
)
from flamed.client import Connection, FlameError, open_connection
from flamed.client.session import iter_wire_tasks
from flamed.client.text import printable
from flamed.core.validation import RANGES
from protocol import frontend as fe
from protocol.errors import FlameBaseError
from protocol.resources import parse_resreq
from protocol.types import Application, ResourceRequirement

# The formatters and the file parsing live in `tables`, `details` and `application_files`; they
# stay importable from here, where flmping and scripts have always found them.
__all__ = [
    "UsageError",
    "application_table",
    "build_parser",
    "check_arguments",
    "clock",
    "clock_ms",
    "executor_table",
    "format_duration",
    "format_table",
    "int_in",
    "main",
    "node_status",
    "node_table",
    "parse_applications",
    "read_applications",
    "resources",
    "run_command",
    "run_list",
    "run_view",
    "session_json",
    "session_table",
    "stats_table",
    "view_application",
    "view_node",
    "view_session",
    "view_task",
]


class UsageError(FlameBaseError):
    """The command line does not say what to do (exit 2, like argparse's own errors)."""


LIST_WHAT = "say what to list: -a (applications), -s (sessions), -e (executors) or -n (nodes)"
VIEW_WHAT = "say what to view: -a APP, -s SESSION [-t TASK] [-o json] or -n NODE"


#: Largest integer the wire carries (MessagePack int64); ids beyond it cannot exist.
MAX_WIRE_INT = 2**63 - 1


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse `type`: an integer in [low, high], else exit 2 with the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in [{low}, {high}]")
        return value

    return parse


PRIORITY = int_in(int(RANGES["priority"][0]), int(RANGES["priority"][1]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flmctl", description="Look at and change a Flame cluster.")
    parser.add_argument("--endpoint", metavar="EP", help="session manager frontend (default: $FLAME_ENDPOINT, config)")
    parser.add_argument("--config", metavar="FILE", help="config file (default: $FLAME_CONF, then the user config dir)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    listing = commands.add_parser("list", help="list applications, sessions, executors or nodes")
    listing.add_argument("-a", "--application", action="store_true", help="list applications")
    listing.add_argument("-s", "--session", action="store_true", help="list sessions")
    listing.add_argument("-e", "--executor", action="store_true", help="list executors")
    listing.add_argument("-n", "--node", action="store_true", help="list nodes")

    view = commands.add_parser("view", help="show one application, session, task or node")
    view.add_argument("-a", "--application", metavar="APP", help="the application to show")
    view.add_argument("-s", "--session", metavar="SSN", help="the session to show")
    view.add_argument("-t", "--task", metavar="TASK", type=int_in(1, MAX_WIRE_INT), help="with -s: the task to show")
    view.add_argument("-n", "--node", metavar="NODE", help="the node to show")
    view.add_argument("-o", "--output-format", choices=["json"], help="with -s: print JSON with the tasks")

    create = commands.add_parser("create", help="create a session")
    create.add_argument("-a", "--app", required=True, help="the application of the session")
    create.add_argument("-p", "--priority", type=PRIORITY, default=0, help="priority, higher first (default: 0)")
    create.add_argument("-r", "--resreq", help="per-executor resources, e.g. cpu=1,mem=1Gi,gpu=0")

    close = commands.add_parser("close", help="close a session")
    close.add_argument("-s", "--session", required=True, help="the session to close")

    register = commands.add_parser("register", help="register the applications in a YAML file")
    register.add_argument(
        "-f", "--file", required=True, help="YAML file, one application per document (format: docs/applications.md)"
    )

    update = commands.add_parser("update", help="update an application from a YAML file")
    update.add_argument("-a", "--application", required=True, metavar="FILE", help="YAML file of one application")

    unregister = commands.add_parser("unregister", help="unregister an application")
    unregister.add_argument("-a", "--application", required=True, metavar="NAME", help="the application")

    drain = commands.add_parser("drain", help="cordon a node: no new executors; the existing ones finish")
    drain.add_argument("-n", "--node", required=True, metavar="NODE", help="the node to drain")
    undrain = commands.add_parser("undrain", help="let a drained node take new executors again")
    undrain.add_argument("-n", "--node", required=True, metavar="NODE", help="the node to undrain")
    commands.add_parser("stats", help="the session manager's counters and gauges (GetStats)")
    return parser


def run_list(conn: Connection, args: argparse.Namespace) -> str:
    if args.application:
        return application_table([_wire_application(conn, a.name) for a in conn.list_applications()])
    if args.session:
        return session_table(conn.request(fe.ListSessions(), fe.SessionsReply).sessions)
    if args.executor:
        return executor_table(conn.list_executors())
    if args.node:
        return node_table(conn.list_nodes())
    raise UsageError(LIST_WHAT)


def run_view(conn: Connection, args: argparse.Namespace) -> str:
    if args.application:
        return view_application(_wire_application(conn, args.application))
    if args.session:
        session = conn.request(fe.GetSession(session_id=args.session), fe.SessionReply).session
        if args.task is not None:
            task = conn.request(fe.GetTask(session_id=args.session, task_id=args.task), fe.TaskReply).task
            if args.output_format == "json":
                return task_json(task, session.spec.application)
            return view_task(task, session.spec.application)
        if args.output_format == "json":
            return session_json(session, list(iter_wire_tasks(conn, args.session)))
        return view_session(session)
    if args.node:
        return view_node(conn.get_node(args.node))
    raise UsageError(VIEW_WHAT)


def _wire_application(conn: Connection, name: str) -> Application:
    return conn.request(fe.GetApplication(name=name), fe.ApplicationReply).application


def run_command(conn: Connection, args: argparse.Namespace) -> str | None:
    if args.command == "list":
        return run_list(conn, args)
    if args.command == "view":
        return run_view(conn, args)
    if args.command == "create":
        resreq = _resreq(args.resreq)
        session = conn.create_session(args.app, priority=args.priority, resreq=resreq)
        return f"Session {printable(session.id)} was created."
    if args.command == "close":
        conn.close_session(args.session)
        return f"Session {printable(args.session)} was closed."
    if args.command == "register":
        done = []
        for name, spec in read_applications(args.file):
            conn.request(fe.RegisterApplication(name=name, spec=spec), fe.ApplicationReply)
            done.append(f"Application {printable(name)} was registered.")
        return "\n".join(done)
    if args.command == "update":
        applications = read_applications(args.application)
        if len(applications) != 1:
            raise UsageError(f"{args.application} holds {len(applications)} applications; update takes one")
        name, spec = applications[0]
        reply = conn.request(fe.UpdateApplication(name=name, spec=spec), fe.ApplicationReply)
        return f"Application {printable(name)} was updated (version {reply.application.version})."
    if args.command == "unregister":
        conn.unregister_application(args.application)
        return f"Application {printable(args.application)} was unregistered."
    if args.command == "drain":
        node = conn.request(fe.DrainNode(name=args.node), fe.NodeReply).node
        remain = sum(node.executors.values())
        return f"Node {printable(node.name)} was drained; it gets no new executors ({remain} remain)."
    if args.command == "undrain":
        node = conn.request(fe.UndrainNode(name=args.node), fe.NodeReply).node
        return f"Node {printable(node.name)} was undrained."
    if args.command == "stats":
        return stats_table(conn.get_stats())
    raise UsageError(f"unknown command {args.command!r}")


def _resreq(text: str | None) -> ResourceRequirement | None:
    if text is None:
        return None
    try:
        return parse_resreq(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def check_arguments(args: argparse.Namespace) -> None:
    """Argument problems found before connecting (so they need no session manager)."""
    if args.command == "list" and not (args.application or args.session or args.executor or args.node):
        raise UsageError(LIST_WHAT)
    if args.command == "view" and not (args.application or args.session or args.node):
        raise UsageError(VIEW_WHAT)
    if args.command == "view" and args.task is not None and not args.session:
        raise UsageError("-t/--task needs -s/--session")
    if args.command == "create":
        _resreq(args.resreq)
    if args.command == "register":
        read_applications(args.file)
    if args.command == "update":
        read_applications(args.application)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_arguments(args)
    except UsageError as exc:
        print(f"flmctl {args.command}: error: {printable(str(exc))}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"flmctl: error: {printable(str(exc))}", file=sys.stderr)
        return 1
    try:
        with open_connection(args.endpoint, args.config) as conn:
            output = run_command(conn, args)
    except (FlameError, UsageError, ValueError) as exc:
        print(f"flmctl: error: {printable(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if output:
        print_output(output)
    return 0


def print_output(text: str) -> None:
    """Print to stdout; a reader that went away (`flmctl list -s | head`) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit: point it at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
