"""What the core is configured with: `CoreConfig`, built once by the daemon from the TOML
config (`session_manager.daemon.core_config`) and read, never changed, by every part.

Every field has the default the daemon's config has; docs/operations.md documents the keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.types import ResourceRequirement


@dataclass(frozen=True)
class CoreConfig:
    default_resreq: ResourceRequirement = field(default_factory=ResourceRequirement)
    heartbeat_interval: float = 1.0
    heartbeat_liveness: int = 5
    drain_timeout: float = 30.0
    #: the longest an executor manager waits between two connection or registration tries
    #: (`recovery.reconnect_backoff_max`): a node that was live when the session manager
    #: stopped is back within this plus detection, so the drain after a restart covers both
    reconnect_backoff_max: float = 16.0
    task_retry_limit: int = 3
    session_bind_retry_limit: int = 5
    schedule_interval: float = 0.1
    policies: tuple[str, ...] = ("priority", "drf")
    dispatch_depth: int = 128
    rebalance_after: float = 0.5
    max_sessions: int = 100_000
    max_tasks: int = 10_000_000
    max_tasks_per_session: int = 10_000_000
    max_task_input_size: int = 16 * 1024 * 1024
    max_task_output_size: int = 16 * 1024 * 1024
    max_common_data_size: int = 16 * 1024 * 1024
    max_watches_per_client: int = 1_000
    max_watch_task_ids: int = 10_000
    max_watched_tasks_per_client: int = 1_000_000
    max_watched_tasks: int = 5_000_000
    max_subscribers: int = 100
    max_subscriptions_per_client: int = 5
    max_page_tasks: int = 10_000
    max_page_bytes: int = 1024 * 1024
    client_ttl: float = 30.0
    #: retention (flamed/core/retention.py): seconds a closed session is kept; finished tasks
    #: held in all; seconds an idle open session stays open (0 = forever); seconds between checks
    closed_session_ttl: float = 86400.0
    max_finished_tasks: int = 1_000_000
    idle_session_ttl: float = 0.0
    retention_interval: float = 1.0
    cluster_name: str = "flame"
    #: handed to clients (Welcome) and executor managers (Registered)
    cache_endpoint: str = ""
    #: what `Welcome` and `GetStats` say this session manager runs (the daemon sets the
    #: package version; the core does not import the package it runs in)
    server_version: str = ""
