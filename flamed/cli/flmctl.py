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
arguments. Tables are Flame's borderless layout: a header row, cells padded by one space.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import sys
from collections.abc import Sequence
from typing import Any

import msgspec
import yaml

from flamed.client import Connection, FlameError, open_connection
from flamed.client.types import application_spec
from protocol import frontend as fe
from protocol.resources import format_resreq, format_size, parse_resreq
from protocol.types import Application, ApplicationSpec, Event, Executor, Node, ResourceRequirement, Session, Task

# ---------------------------------------------------------------- formatting (pure)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Borderless table (comfy-table's NOTHING preset): one space of padding each side of a
    cell, columns as wide as their widest cell, no rules; trailing blanks trimmed."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["".join(f" {cell:<{width}} " for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def clock(ms: int | None) -> str:
    """`HH:MM:SS` (UTC) of a Unix-ms time, or `-`."""
    if not ms:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime("%H:%M:%S")


def clock_ms(ms: int) -> str:
    """`HH:MM:SS.mmm` (UTC) of a Unix-ms time."""
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%H:%M:%S.") + f"{ms % 1000:03d}"


def resources(resreq: ResourceRequirement | None) -> str:
    return format_resreq(resreq) if resreq is not None else "-"


def application_table(applications: Sequence[Application]) -> str:
    rows = [
        (
            a.name,
            a.state,
            a.spec.shim,
            ", ".join(a.spec.labels) or "-",
            clock(a.creation_time),
            a.spec.command or "-",
        )
        for a in applications
    ]
    return format_table(["Name", "State", "Shim", "Tags", "Created", "Command"], rows)


def _session_order(a: Session, b: Session) -> int:
    """Open first, then by numeric id; ids that are not numbers compare equal (as Flame)."""
    if (a.state == "Open") != (b.state == "Open"):
        return -1 if a.state == "Open" else 1
    if a.id.isdigit() and b.id.isdigit():
        return (int(a.id) > int(b.id)) - (int(a.id) < int(b.id))
    return 0


def session_table(sessions: Sequence[Session]) -> str:
    ordered = sorted(sessions, key=functools.cmp_to_key(_session_order))
    rows = [
        (
            s.id,
            s.state,
            s.spec.application,
            resources(s.spec.resreq),
            s.spec.priority,
            s.pending,
            s.running,
            s.succeed,
            s.failed,
            clock(s.creation_time),
        )
        for s in ordered
    ]
    headers = ["ID", "State", "App", "Resources", "Priority", "Pending", "Running", "Succeed", "Failed", "Created"]
    return format_table(headers, rows)


def executor_table(executors: Sequence[Executor]) -> str:
    rows = [(e.id, e.state, e.session_id or "-", e.node) for e in executors]
    return format_table(["ID", "State", "Session", "Node"], rows)


def node_status(node: Node) -> str:
    """The node state, with `,Drained` when it is cordoned (as kubectl's SchedulingDisabled)
    and `,Stopping` while its executor manager drains to stop."""
    return str(node.state) + (",Drained" if node.drained else "") + (",Stopping" if node.stopping else "")


def node_table(nodes: Sequence[Node]) -> str:
    """Flame's columns, then the link as the session manager sees it: connection state
    (Connected / Draining, `-` once closed) and seconds since the node was last heard."""
    rows = [
        (
            n.name,
            n.hostname,
            node_status(n),
            n.capacity.cpu,
            format_size(n.capacity.memory),
            n.arch or "-",
            n.os or "-",
            n.connection or "-",
            "-" if n.last_heartbeat_age is None else f"{n.last_heartbeat_age:.1f}s",
        )
        for n in nodes
    ]
    return format_table(["NAME", "HOSTNAME", "STATUS", "CPU", "MEMORY", "ARCH", "OS", "CONNECTION", "HEARTBEAT"], rows)


def stats_table(stats: dict[str, float]) -> str:
    """`GetStats` as a two-column table, counters (`*_total`) and gauges alike, sorted by name."""
    rows = [(name, f"{value:g}") for name, value in sorted(stats.items())]
    return format_table(["NAME", "VALUE"], rows)


def _line(label: str, value: object = "") -> str:
    return f"{label + ':':<15}{value}".rstrip()


def format_duration(seconds: float) -> str:
    """`1m`, `1m 30s`, `2h`, `500ms` (humantime-like)."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    total = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return " ".join(parts)


def _schema_type(schema: str | None) -> str:
    if not schema:
        return "-"
    try:
        value = json.loads(schema)
    except ValueError:
        return "-"
    kind = value.get("type") if isinstance(value, dict) else None
    return str(kind) if kind else "-"


def view_application(app: Application) -> str:
    spec = app.spec
    lines = [
        _line("Name", app.name),
        _line("Description", spec.description or "-"),
        _line("Shim", spec.shim),
        _line("Image", spec.image or "-"),
        _line("URL", spec.url or "-"),
        _line("Installer", spec.installer or "-"),
        _line("Labels"),
        *[f"\t{label}" for label in spec.labels],
        _line("Command", spec.command or "-"),
        _line("Arguments"),
        *[f"\t{argument}" for argument in spec.arguments],
        _line("Environments"),
        *[f"\t{name}: {value}" for name, value in spec.environments.items()],
        _line("WorkingDir", spec.working_directory or "-"),
        _line("Max Instances", spec.max_instances if spec.max_instances is not None else "-"),
        _line("Delay Release", format_duration(spec.delay_release)),
        _line("Schema"),
        f"\tInput: {_schema_type(spec.schema.input if spec.schema else None)}",
        f"\tOutput: {_schema_type(spec.schema.output if spec.schema else None)}",
        f"\tCommon Data: {_schema_type(spec.schema.common_data if spec.schema else None)}",
    ]
    return "\n".join(lines)


def _events(events: Sequence[Event]) -> list[str]:
    return [_line("Events")] + [f"  {clock_ms(e.creation_time)}: {e.message or ''} ({e.code})" for e in events]


def view_session(session: Session) -> str:
    tasks = f"{session.pending} pending, {session.running} running, {session.succeed} succeed, {session.failed} failed"
    lines = [
        _line("Session", session.id),
        _line("Application", session.spec.application),
        _line("State", session.state),
        _line("Resources", resources(session.spec.resreq)),
        _line("Creation Time", clock(session.creation_time)),
        _line("Tasks", tasks),
        *_events(session.events),
    ]
    return "\n".join(lines)


def view_task(task: Task, application: str) -> str:
    lines = [
        _line("Task", task.id),
        _line("Session", task.session_id),
        _line("Application", application),
        _line("State", task.state),
        *_events(task.events),
    ]
    return "\n".join(lines)


def view_node(node: Node) -> str:
    lines = [
        _line("Name", node.name),
        _line("Hostname", node.hostname),
        _line("Status", node_status(node)),
        _line("Capacity"),
        f"\tCPU: {node.capacity.cpu}",
        f"\tMemory: {format_size(node.capacity.memory)}",
        _line("Info"),
        f"\tArch: {node.arch or '-'}",
        f"\tOS: {node.os or '-'}",
    ]
    return "\n".join(lines)


def _plain(value: object) -> Any:
    """JSON-ready form of a wire struct with every field, defaults included (bytes as base64)."""
    if isinstance(value, msgspec.Struct):
        return {name: _plain(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return msgspec.to_builtins(value)


def session_json(session: Session, tasks: Sequence[Task]) -> str:
    data: dict[str, Any] = _plain(session)
    data["tasks"] = _plain(list(tasks))
    return json.dumps(data, indent=2)


# ---------------------------------------------------------------- application files (pure)


def parse_applications(text: str, source: str = "<file>") -> list[tuple[str, ApplicationSpec]]:
    """Applications in a YAML file of documents `{metadata: {name}, spec: {...}}`; raises
    ValueError naming the file, the document and the problem."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ValueError(f"{source} is not valid YAML: {exc}") from None
    applications = []
    for number, document in enumerate(documents, start=1):
        where = f"{source}, document {number}"
        if not isinstance(document, dict):
            raise ValueError(f"{where}: expected a mapping with metadata and spec")
        metadata = document.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: metadata.name is missing")
        spec = document.get("spec") or {}
        if not isinstance(spec, dict):
            raise ValueError(f"{where}: spec must be a mapping")
        try:
            applications.append((name, application_spec(spec)))
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise ValueError(f"{where} ({name}): {exc}") from None
    if not applications:
        raise ValueError(f"{source} holds no application")
    return applications


def read_applications(path: str) -> list[tuple[str, ApplicationSpec]]:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    return parse_applications(text, path)


# ---------------------------------------------------------------- commands


class UsageError(Exception):
    """A request the command line cannot express (reported like a failed request)."""


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
    view.add_argument("-t", "--task", metavar="TASK", type=int, help="with -s: the task to show")
    view.add_argument("-n", "--node", metavar="NODE", help="the node to show")
    view.add_argument("-o", "--output-format", choices=["json"], help="with -s: print JSON with the tasks")

    create = commands.add_parser("create", help="create a session")
    create.add_argument("-a", "--app", required=True, help="the application of the session")
    create.add_argument("-p", "--priority", type=int, default=0, help="priority, higher first (default: 0)")
    create.add_argument("-r", "--resreq", help="per-executor resources, e.g. cpu=1,mem=1Gi,gpu=0")

    close = commands.add_parser("close", help="close a session")
    close.add_argument("-s", "--session", required=True, help="the session to close")

    register = commands.add_parser("register", help="register the applications in a YAML file")
    register.add_argument("-f", "--file", required=True, help="YAML file, one application per document")

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
    raise UsageError("unsupported parameters; use list -a, -s, -e or -n")


def run_view(conn: Connection, args: argparse.Namespace) -> str:
    if args.application:
        return view_application(_wire_application(conn, args.application))
    if args.session:
        session = conn.request(fe.GetSession(session_id=args.session), fe.SessionReply).session
        if args.task is not None:
            task = conn.request(fe.GetTask(session_id=args.session, task_id=args.task), fe.TaskReply).task
            return view_task(task, session.spec.application)
        if args.output_format == "json":
            tasks = conn.request(fe.ListTasks(session_id=args.session), fe.TasksReply).tasks
            return session_json(session, tasks)
        return view_session(session)
    if args.node:
        return view_node(conn.get_node(args.node))
    raise UsageError("unsupported parameters; use view -a APP, -s SESSION [-t TASK] or -n NODE")


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
        return f"Session {session.id} was created."
    if args.command == "close":
        conn.close_session(args.session)
        return f"Session {args.session} was closed."
    if args.command == "register":
        for name, spec in read_applications(args.file):
            conn.request(fe.RegisterApplication(name=name, spec=spec), fe.ApplicationReply)
        return None
    if args.command == "update":
        applications = read_applications(args.application)
        if len(applications) != 1:
            raise UsageError(f"{args.application} holds {len(applications)} applications; update takes one")
        name, spec = applications[0]
        conn.request(fe.UpdateApplication(name=name, spec=spec), fe.ApplicationReply)
        return None
    if args.command == "unregister":
        conn.unregister_application(args.application)
        return None
    if args.command == "drain":
        node = conn.request(fe.DrainNode(name=args.node), fe.NodeReply).node
        return f"Node {node.name} was drained; it gets no new executors ({sum(node.executors.values())} remain)."
    if args.command == "undrain":
        node = conn.request(fe.UndrainNode(name=args.node), fe.NodeReply).node
        return f"Node {node.name} was undrained."
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
        raise UsageError("unsupported parameters; use list -a, -s, -e or -n")
    if args.command == "view" and not (args.application or args.session or args.node):
        raise UsageError("unsupported parameters; use view -a APP, -s SESSION [-t TASK] or -n NODE")
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
        with open_connection(args.endpoint, args.config) as conn:
            output = run_command(conn, args)
    except (FlameError, UsageError, ValueError) as exc:
        print(f"flmctl: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if output:
        print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
