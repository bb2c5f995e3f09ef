"""`flamed`: run the daemons.

    flamed session-manager [--frontend EP] [--backend EP] [--state-dir DIR] [--config FILE]
    flamed executor-manager [--backend EP] [--node-name NAME] [--slots N] [--config FILE]
    flamed cluster [--executors N] [--frontend EP] [--backend EP] [--state-dir DIR] ...

Exit codes: 0 clean stop, 1 runtime failure (message on stderr), 2 bad arguments or config.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

from flamed import __version__
from flamed.config import Config, ConfigError, check_endpoint, load_config
from flamed.logs import setup_logging

log = logging.getLogger("flamed")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="config file (default: $FLAME_CONF, then the user config dir)")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="log level (default: info)"
    )
    parser.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="log line format (default: text)"
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
    _common(sm)

    em = commands.add_parser("executor-manager", help="run an executor manager (one per node)")
    em.add_argument("--backend", metavar="EP", help="session manager backend endpoint (default: :8081)")
    em.add_argument("--node-name", metavar="NAME", help="node name (default: the host name)")
    em.add_argument("--slots", metavar="N", type=_positive_int, help="executor slots (default: number of CPUs)")
    em.add_argument("--runtime-dir", metavar="DIR", help="directory for instance sockets and work dirs")
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
    cluster.add_argument("--state-dir", metavar="DIR", help="state directory of the session manager")
    _common(cluster)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        for name in ("frontend", "backend"):
            value = getattr(args, name, None)
            if value:
                check_endpoint(value, f"--{name}")
    except ConfigError as exc:
        parser.exit(2, f"flamed: error: {exc}\n")
    setup_logging(args.log_level, args.log_format)
    try:
        if args.command == "session-manager":
            return run_session_manager(args, config)
        if args.command == "executor-manager":
            return run_executor_manager(args, config)
        from flamed.cli.cluster import run_cluster

        return run_cluster(args, config)
    except ConfigError as exc:
        print(f"flamed: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def run_session_manager(args: argparse.Namespace, config: Config) -> int:
    import zmq

    from flamed.session_manager import SessionManager, SessionManagerOptions

    options = SessionManagerOptions(
        config=config,
        frontend=args.frontend or config.cluster.frontend,
        backend=args.backend or config.cluster.backend,
        state_dir=Path(args.state_dir) if args.state_dir else None,
    )
    try:
        manager = SessionManager(options)
    except zmq.ZMQError as exc:
        print(f"flamed: error: cannot bind {options.frontend} / {options.backend}: {exc}", file=sys.stderr)
        return 1
    manager.install_signal_handlers()
    manager.start()
    return manager.run()


def run_executor_manager(args: argparse.Namespace, config: Config) -> int:
    from flamed.executor_manager import ExecutorManagerOptions
    from flamed.executor_manager import run_executor_manager as run

    options = ExecutorManagerOptions(
        backend=args.backend or config.cluster.backend,
        node_name=args.node_name or config.executor_manager.node_name or socket.gethostname(),
        slots=args.slots or config.executor_manager.slots or os.cpu_count() or 1,
        runtime_dir=Path(args.runtime_dir or config.executor_manager.runtime_dir)
        if (args.runtime_dir or config.executor_manager.runtime_dir)
        else None,
        config=config,
    )
    return run(options)


if __name__ == "__main__":
    sys.exit(main())
