"""The executor manager's entry point: the options the CLI parses and the run that turns them
into an exit code (`flamed executor-manager`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from flamed.config import Config
from flamed.executor_manager.manager import ExecutorManager

__all__ = ["ExecutorManagerOptions", "run_executor_manager"]

log = logging.getLogger("flamed.executor_manager")


@dataclass
class ExecutorManagerOptions:
    backend: str
    node_name: str
    slots: int
    #: instance sockets and work dirs; None = the platformdirs user runtime dir
    runtime_dir: Path | None
    config: Config
    #: re-read on SIGHUP; the command-line log level/format win over it
    config_path: str | None = None
    log_level: str | None = None
    log_format: str | None = None
    #: serve Prometheus metrics on this HOST:PORT (None: off)
    metrics: str | None = None


def run_executor_manager(options: ExecutorManagerOptions) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code (0 clean stop, 1 fatal error).
    Every instance is stopped before it returns, whatever happened."""
    try:
        manager = ExecutorManager(
            options.backend, options.node_name, options.slots, options.runtime_dir, options.config
        )
    except Exception as exc:  # e.g. cannot bind the instance socket (a zmq error: only transport names zmq)
        log.error("executor manager for node %s cannot start: %s", options.node_name, exc)
        return 1
    manager.config_path, manager.log_level, manager.log_format = (
        options.config_path,
        options.log_level,
        options.log_format,
    )
    if options.metrics:
        from flamed.metrics import MetricsServer

        try:
            MetricsServer(manager.loop, options.metrics, manager.stats)
        except Exception as exc:  # ConfigError: cannot listen; stop the instances we hold none of yet
            log.error("executor manager for node %s cannot start: %s", options.node_name, exc)
            manager.shutdown()
            return 2
    manager.install_signal_handlers()
    return manager.run()
