"""`flamed`: run the daemons.

    flamed session-manager [--frontend EP] [--backend EP] [--state-dir DIR] [--config FILE]
    flamed executor-manager [--backend EP] [--node-name NAME] [--slots N] [--config FILE]
    flamed object-cache [--bind EP] [--state-dir DIR] [--frontend EP] [--config FILE]
    flamed cluster [--executors N] [--frontend EP] [--backend EP] [--cache EP] [--state-dir DIR] ...
    flamed status [--endpoint EP] [--json]
    flamed config show [--config FILE]
    flamed keygen --out DIR [--name NAME]

Exit codes: 0 clean stop, 1 runtime failure (message on stderr), 2 bad arguments or config.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from flamed import __version__
from flamed.config import Config, ConfigError, check_endpoint, load_config
from flamed.logs import setup_logging

if TYPE_CHECKING:
    from flamed.session_manager import SessionManager

log = logging.getLogger("flamed")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="config file (default: $FLAME_CONF, then the user config dir)")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="log level (default: config log.level, info)"
    )
    parser.add_argument(
        "--log-format", choices=["text", "json"], help="log line format (default: config log.format, text)"
    )


def _metrics(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics",
        metavar="ADDR",
        help="serve Prometheus metrics at http://ADDR/metrics (HOST:PORT, :PORT = all interfaces; default: off)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flamed",
        description="Flame daemons: the session manager, executor managers, or a whole local cluster.",
    )
    parser.add_argument("--version", action="version", version=f"flamed {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sm = commands.add_parser("session-manager", help="run the session manager (control plane)")
    sm.add_argument("--frontend", metavar="EP", help="endpoint clients connect to (default: tcp://127.0.0.1:8080)")
    sm.add_argument("--backend", metavar="EP", help="endpoint executor managers connect to (default: :8081)")
    sm.add_argument("--state-dir", metavar="DIR", help="state directory (default: config, then user state dir)")
    sm.add_argument(
        "--cache", metavar="EP", help="object cache endpoint handed to clients and nodes (default: cache.endpoint)"
    )
    _metrics(sm)
    _common(sm)

    oc = commands.add_parser("object-cache", help="run the object cache (put_object / get_object)")
    oc.add_argument("--bind", metavar="EP", help="endpoint to bind (default: cache.bind, then cache.endpoint)")
    oc.add_argument(
        "--state-dir", metavar="DIR", help="state directory (default: cache.state_dir, then user state dir)"
    )
    oc.add_argument(
        "--frontend",
        metavar="EP",
        help="session manager frontend, asked about deleted sessions (default: client endpoint, then cluster.frontend)",
    )
    _common(oc)

    em = commands.add_parser("executor-manager", help="run an executor manager (one per node)")
    em.add_argument("--backend", metavar="EP", help="session manager backend endpoint (default: :8081)")
    em.add_argument("--node-name", metavar="NAME", help="node name (default: the host name)")
    em.add_argument("--slots", metavar="N", type=_positive_int, help="executor slots (default: number of CPUs)")
    em.add_argument("--runtime-dir", metavar="DIR", help="directory for instance sockets and work dirs")
    _metrics(em)
    _common(em)

    cluster = commands.add_parser(
        "cluster", help="run a session manager and N executor managers on this host, in the foreground"
    )
    cluster.add_argument("--frontend", metavar="EP", help="frontend endpoint (default: tcp://127.0.0.1:8080)")
    cluster.add_argument("--backend", metavar="EP", help="backend endpoint (default: tcp://127.0.0.1:8081)")
    cluster.add_argument(
        "--executors", metavar="N", type=_positive_int, default=1, help="executor managers to start (default: 1)"
    )
    cluster.add_argument(
        "--slots", metavar="N", type=_positive_int, help="slots per executor manager (default: number of CPUs)"
    )
    cluster.add_argument(
        "--cache",
        metavar="EP",
        help="object cache endpoint (default: cache.endpoint; with another --frontend, next to it: tcp port + 2)",
    )
    cluster.add_argument(
        "--state-dir", metavar="DIR", help="state directory of the session manager (the cache uses DIR/object-cache)"
    )
    _common(cluster)

    status = commands.add_parser(
        "status",
        help="ask a running session manager for its version, uptime, nodes, sessions, tasks and storage facts",
    )
    status.add_argument("--endpoint", metavar="EP", help="frontend endpoint (default: FLAME_ENDPOINT, then config)")
    status.add_argument("--timeout", metavar="SECONDS", type=_seconds, default=5.0, help="reply timeout (default: 5)")
    status.add_argument("--json", action="store_true", help="print the raw stats and info as JSON")
    _common(status)

    config = commands.add_parser("config", help="look at the config file")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = config_commands.add_parser(
        "show", help="print the effective config as TOML, each value with where it came from"
    )
    show.add_argument("--config", metavar="FILE", help="config file (default: $FLAME_CONF, then the user config dir)")

    keygen = commands.add_parser(
        "keygen",
        help="write a CURVE key pair: NAME.key (public) and NAME.key_secret (mode 0600) in DIR (mode 0700)",
        description="Write a CurveZMQ key pair for [security] curve = true. Name a node's key after the node "
        "(its NAME.key goes in the session manager's allow_dir_nodes); a client's key goes in allow_dir_clients.",
    )
    keygen.add_argument("--out", metavar="DIR", required=True, help="directory for the key files (created 0700)")
    keygen.add_argument(
        "--name",
        metavar="NAME",
        default="server",
        help="key name: a node name, a client name, or 'server' for the session manager (default: server)",
    )
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and 0 < value <= 3600):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds in (0, 3600]")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "keygen":
        return run_keygen(args)
    try:
        config = load_config(args.config)
        for name in ("frontend", "backend", "cache", "bind"):
            value = getattr(args, name, None)
            if value:
                check_endpoint(value, f"--{name}")
    except ConfigError as exc:
        parser.exit(2, f"flamed: error: {exc}\n")
    if args.command == "config":
        from flamed.cli.config_show import show_config

        print(show_config(args.config), end="")
        return 0
    setup_logging(args.log_level or config.log.level, args.log_format or config.log.format)
    try:
        if args.command == "session-manager":
            return run_session_manager(args, config)
        if args.command == "executor-manager":
            return run_executor_manager(args, config)
        if args.command == "status":
            return run_status(args)
        if args.command == "object-cache":
            return run_object_cache(args, config)
        from flamed.cli.cluster import run_cluster

        return run_cluster(args, config)
    except ConfigError as exc:
        print(f"flamed: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def state_dir_of(args: argparse.Namespace, config: Config) -> Path:
    """--state-dir, else the config's storage.state_dir, else the platformdirs user state dir."""
    from flamed.session_manager.durability import default_state_dir

    if args.state_dir:
        return Path(args.state_dir)
    if config.storage.state_dir:
        return Path(config.storage.state_dir)
    return default_state_dir()


def run_session_manager(args: argparse.Namespace, config: Config) -> int:
    from flamed.session_manager import SessionManager, SessionManagerOptions
    from flamed.storage import Storage, StorageError
    from flamed.transport import TransportError
    from flamed.transport.security import SecurityError

    state_dir = state_dir_of(args, config)
    options = SessionManagerOptions(
        config=config,
        frontend=args.frontend or config.cluster.frontend,
        backend=args.backend or config.cluster.backend,
        state_dir=state_dir,
        config_path=args.config,
        log_level=args.log_level,
        log_format=args.log_format,
        cache_endpoint=args.cache,
    )
    try:
        storage = Storage.open(
            state_dir,
            fsync=config.storage.fsync,
            fsync_interval=config.storage.fsync_interval,
            segment_bytes=config.storage.segment_bytes,
            snapshot_records=config.storage.snapshot_records,
            snapshot_log_bytes=config.storage.snapshot_log_bytes,
        )
    except StorageError as exc:
        # LockedError, CorruptLogError and friends say which file, where, and what to do.
        print(f"flamed: error: {exc}", file=sys.stderr)
        return 1
    try:
        manager = SessionManager(options, storage)
    except SecurityError as exc:
        storage.close()
        print(f"flamed: error: {exc}", file=sys.stderr)
        return 1
    except StorageError as exc:
        storage.close()
        print(f"flamed: error: {exc}", file=sys.stderr)
        return 1
    except TransportError as exc:
        storage.close()
        print(f"flamed: error: cannot bind {options.frontend} / {options.backend}: {exc}", file=sys.stderr)
        return 1
    if args.metrics:
        from flamed.metrics import MetricsServer

        try:
            MetricsServer(manager.loop, args.metrics, lambda: metrics_of(manager))
        except ConfigError:
            manager.close()
            raise
    manager.install_signal_handlers()
    manager.start()
    return manager.run()


def run_object_cache(args: argparse.Namespace, config: Config) -> int:
    from flamed.config import client_endpoint
    from flamed.object_cache import ObjectCache, ObjectCacheOptions
    from flamed.storage import StorageError
    from flamed.storage.objects import ObjectFiles
    from flamed.transport import TransportError
    from flamed.transport.security import SecurityError

    if args.state_dir:
        state_dir = Path(args.state_dir)
    elif config.cache.state_dir:
        state_dir = Path(config.cache.state_dir)
    else:
        from flamed.session_manager.durability import default_state_dir

        state_dir = default_state_dir() / "object-cache"
    options = ObjectCacheOptions(
        config=config,
        bind=args.bind or config.cache.bind or config.cache.endpoint,
        state_dir=state_dir,
        frontend=client_endpoint(args.frontend, args.config),
        config_path=args.config,
        log_level=args.log_level,
        log_format=args.log_format,
    )
    try:
        files = ObjectFiles.open(state_dir)
    except StorageError as exc:
        print(f"flamed: error: {exc}", file=sys.stderr)
        return 1
    try:
        cache = ObjectCache(options, files)
    except (StorageError, SecurityError) as exc:
        files.close()
        print(f"flamed: error: {exc}", file=sys.stderr)
        return 1
    except TransportError as exc:
        files.close()
        print(f"flamed: error: cannot bind {options.bind}: {exc}", file=sys.stderr)
        return 1
    cache.install_signal_handlers()
    cache.start()
    return cache.run()


def run_keygen(args: argparse.Namespace) -> int:
    from flamed.transport.security import SecurityError, write_key_pair

    try:
        public, secret = write_key_pair(Path(args.out), args.name)
    except (SecurityError, OSError) as exc:
        print(f"flamed: error: {exc}", file=sys.stderr)
        return 1
    print(f"public key: {public}\nsecret key: {secret} (mode 0600; keep it on this host only)")
    return 0


def metrics_of(manager: SessionManager) -> dict[str, float]:
    """What `GetStats` says (storage facts included), for the metrics endpoint."""
    from flamed.metrics import SESSION_MANAGER_COUNTERS

    stats = manager.controller.stats()
    for name in SESSION_MANAGER_COUNTERS:
        stats.setdefault(f"{name}_total", 0.0)
    for key, value in manager.storage_stats().items():
        if not isinstance(value, str):
            stats[f"storage_{key}"] = float(value)
    return stats


def run_executor_manager(args: argparse.Namespace, config: Config) -> int:
    from flamed.executor_manager.daemon import ExecutorManagerOptions
    from flamed.executor_manager.daemon import run_executor_manager as run

    options = ExecutorManagerOptions(
        backend=args.backend or config.cluster.backend,
        node_name=args.node_name or config.executor_manager.node_name or socket.gethostname(),
        slots=args.slots or config.executor_manager.slots or os.cpu_count() or 1,
        runtime_dir=Path(args.runtime_dir or config.executor_manager.runtime_dir)
        if (args.runtime_dir or config.executor_manager.runtime_dir)
        else None,
        config=config,
        config_path=args.config,
        log_level=args.log_level,
        log_format=args.log_format,
        metrics=args.metrics,
    )
    return run(options)


_STORAGE_LINES = (
    ("state directory", "info", "storage_state_dir"),
    ("fsync policy", "info", "storage_fsync_policy"),
    ("log bytes", "stats", "storage_log_bytes"),
    ("log segments", "stats", "storage_segments"),
    ("last record", "stats", "storage_last_seq"),
    ("records since snapshot", "stats", "storage_records_since_snapshot"),
    ("last snapshot at record", "stats", "storage_last_snapshot_seq"),
    ("last snapshot bytes", "stats", "storage_last_snapshot_bytes"),
    ("records replayed at start", "stats", "storage_records_replayed"),
    ("recovery seconds", "stats", "storage_recovery_seconds"),
    ("last fsync ms", "stats", "storage_last_fsync_latency_ms"),
    ("max fsync ms", "stats", "storage_max_fsync_latency_ms"),
    ("commit failures", "stats", "storage_commit_failures"),
    ("write failure", "info", "storage_write_failure"),
    ("poisoned", "info", "storage_poisoned"),
)


def run_status(args: argparse.Namespace) -> int:
    """`flamed status`: what the session manager is (version, uptime), what it holds (nodes,
    executors, sessions, tasks) and its storage facts; one Hello and one GetStats, via the SDK."""
    import json

    from flamed.client import FlameError, open_connection
    from flamed.client.text import printable
    from protocol import frontend as fe

    try:
        with open_connection(args.endpoint, args.config, timeout=args.timeout) as conn:
            reply = conn.request(fe.GetStats(), fe.StatsReply)
            version, cluster, endpoint = conn.server_version, conn.cluster, conn.endpoint
    except FlameError as exc:
        print(f"flamed: error: {printable(exc.message)}", file=sys.stderr)
        return 1
    stats, info = reply.stats, reply.info
    if args.json:
        print(json.dumps({"stats": stats, "info": info}, indent=2, sort_keys=True))
        return 0
    for line in status_lines(endpoint, version, cluster, stats, info):
        print(printable(line))  # version, cluster name and storage facts come from the wire
    return 0


def status_lines(endpoint: str, version: str, cluster: str, stats: dict[str, float], info: dict[str, str]) -> list[str]:
    """The human form of `flamed status`: a header, then one `label: value` line per fact."""

    def count(key: str) -> int:
        return int(stats.get(key, 0))

    def counts(prefix: str, states: list[str]) -> str:
        return ", ".join(f"{count(f'{prefix}_{state.lower()}'):,} {state}" for state in states)

    uptime = stats.get("uptime_seconds")
    header = f"session manager at {endpoint}: flamed {version or '?'}, cluster {cluster or '?'}"
    if uptime is not None:
        header += f", up {_duration(uptime)}"
    lines = [header]
    facts = [
        ("nodes", counts("nodes", ["Ready", "Unknown", "NotReady"])),
        ("executors", counts("executors", ["Bound", "Binding", "Idle", "Unbinding", "Releasing"])),
        ("sessions", f"{count('sessions_open'):,} open, {count('sessions_closed'):,} closed"),
        ("tasks", counts("tasks", ["Pending", "Running", "Succeed", "Failed", "Cancelled"])),
    ]
    if "storage_state_dir" not in info:
        facts.append(("state directory", "none: the state is kept in memory only"))
    for label, where, key in _STORAGE_LINES:
        value = (info if where == "info" else stats).get(key)
        if value in (None, ""):
            continue
        facts.append((label, f"{value:g}" if isinstance(value, float) else str(value)))
    lines.extend(f"{label + ':':<28}{text}" for label, text in facts)
    return lines


def _duration(seconds: float) -> str:
    """`3d 4h`, `2h 5m`, `4m 10s` or `12s`: two units at most."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


if __name__ == "__main__":
    sys.exit(main())
