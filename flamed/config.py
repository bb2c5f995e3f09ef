"""The one TOML config file shared by both daemons and the clients.

Lookup: `--config PATH`, then `$FLAME_CONF`, then `<user config dir>/flame/flame.toml` if it
exists, else built-in defaults. Unknown keys and bad values are errors (`ConfigError`) that name
the key and the expected form. Every key and its default is listed in docs/CONFIG.md.
"""

from __future__ import annotations

import math
import os
import tomllib
import typing
from pathlib import Path
from typing import Literal

import msgspec
import platformdirs

from protocol.errors import FlameBaseError

DEFAULT_FRONTEND = "tcp://127.0.0.1:8080"
DEFAULT_BACKEND = "tcp://127.0.0.1:8081"
DEFAULT_CACHE = "tcp://127.0.0.1:8082"


class ConfigError(FlameBaseError):
    """The config file or a command-line value is not acceptable; the message says why."""


class Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class ClusterConfig(Section):
    name: str = "flame"
    #: Frontend endpoint: clients connect, the session manager binds.
    frontend: str = DEFAULT_FRONTEND
    #: Backend endpoint: executor managers connect, the session manager binds.
    backend: str = DEFAULT_BACKEND
    #: Default per-executor resources of a session that gives none ("cpu=N,mem=SIZE,gpu=N").
    resreq: str = "cpu=1,mem=1Gi,gpu=0"
    policies: list[Literal["priority", "drf"]] = msgspec.field(default_factory=lambda: ["priority", "drf"])
    #: Seconds between periodic scheduling passes (events also trigger passes).
    schedule_interval: float = 0.1
    #: How many tasks may be queued on one executor beyond the one it runs.
    dispatch_depth: int = 128
    #: Seconds an executor of a session may stay idle while another executor of the session
    #: holds tasks it has not started; they are then recalled and shared again (executors that
    #: joined a running session get work). 0 = never recall.
    rebalance_after: float = 0.5


class StorageConfig(Section):
    #: State directory (write-ahead log, snapshots, LOCK); `--state-dir` wins over it; empty =
    #: the platformdirs user state dir for "flame". Created with mode 0700.
    state_dir: str = ""
    #: When a change is acknowledged: "always" = after an fsync (one per loop turn: group
    #: commit); "interval" = after the write, fsynced within `fsync_interval` (a crash of the
    #: machine, not of the process, may lose that much); "never" = left to the OS.
    fsync: Literal["always", "interval", "never"] = "always"
    #: Seconds between fsyncs under the "interval" policy.
    fsync_interval: float = 1.0
    #: Write a snapshot after this many log records (a record holds a batch of tasks); older
    #: segments are then deleted. Start-up replays at most about this many records.
    snapshot_records: int = 200_000
    #: Also write a snapshot once the log since the last one is at least this many bytes and
    #: as big as that snapshot: the directory then stays proportional to the state held
    #: (which [retention] bounds), not to the traffic. 0 = by `snapshot_records` only.
    snapshot_log_bytes: int = 4 * 1024 * 1024
    #: Size at which a log segment is closed and a new one started.
    segment_bytes: int = 64 * 1024 * 1024


class RecoveryConfig(Section):
    heartbeat_interval: float = 1.0
    heartbeat_liveness: int = 5
    drain_timeout: float = 30.0
    reconnect_backoff_min: float = 0.2
    reconnect_backoff_max: float = 0.5
    task_retry_limit: int = 3
    session_bind_retry_limit: int = 5


class ExecutorManagerConfig(Section):
    #: Node name; empty = the host name.
    node_name: str = ""
    #: Executor slots on this node; 0 = the number of CPUs.
    slots: int = 0
    #: Directory for instance sockets and work dirs; empty = platformdirs user runtime dir.
    runtime_dir: str = ""
    #: Seconds an instance gets to exit after SIGTERM before SIGKILL.
    instance_stop_timeout: float = 5.0
    #: On SIGTERM: seconds running tasks get to finish (no new binds meanwhile) before the
    #: instances are stopped. Keep it below the unit's TimeoutStopSec minus twice
    #: `instance_stop_timeout`.
    stop_grace: float = 60.0


class LimitsConfig(Section):
    #: Largest ZeroMQ message (all frames) a socket accepts (MAXMSGSIZE); a bigger one drops
    #: that peer's connection, never the daemon.
    max_message_size: int = 64 * 1024 * 1024
    #: Sessions the session manager holds (open and closed); CreateSession beyond: LimitExceeded.
    max_sessions: int = 100_000
    #: Tasks one session holds (created and not yet expired under [retention]); CreateTasks
    #: beyond: LimitExceeded.
    max_tasks_per_session: int = 10_000_000
    #: Bytes of one task input; a bigger one is refused with TooLarge.
    max_task_input_size: int = 16 * 1024 * 1024
    #: Bytes of one task output; a bigger one fails the task with a message saying so.
    max_task_output_size: int = 16 * 1024 * 1024
    #: Bytes of a session's common data; a bigger one is refused with TooLarge.
    max_common_data_size: int = 16 * 1024 * 1024
    #: Tasks the session manager holds in all sessions (about 200 bytes of memory each plus
    #: their inputs and outputs); CreateTasks beyond: LimitExceeded. Delete closed sessions.
    max_tasks: int = 10_000_000
    #: Open task watches of one client (WatchTasks and CreateTasks{watch}); beyond: LimitExceeded.
    #: A client is a CURVE key, or in plain mode one connection.
    max_watches_per_client: int = 1_000
    #: Task ids in one WatchTasks request; more: LimitExceeded (watch fewer, or the whole session).
    max_watch_task_ids: int = 10_000
    #: Task ids one client watches in all its watches (WatchTasks ids, CreateTasks{watch}
    #: batches; a whole-session watch counts none); a watch beyond: LimitExceeded.
    max_watched_tasks_per_client: int = 1_000_000
    #: Task ids watched by all clients together; a watch beyond: LimitExceeded.
    max_watched_tasks: int = 5_000_000
    #: Cluster subscribers (flame-tui) at once; SubscribeCluster beyond: LimitExceeded.
    max_subscribers: int = 100
    #: Cluster subscriptions of one client (one per connection); beyond: LimitExceeded.
    max_subscriptions_per_client: int = 5
    #: Most tasks in one ListTasks reply or TaskUpdates push (a client may ask for fewer).
    max_page_tasks: int = 10_000
    #: Most bytes in one ListTasks reply or TaskUpdates push (a page holds at least one task,
    #: so one task with bigger data makes a bigger page).
    max_page_bytes: int = 1024 * 1024
    #: Messages ZeroMQ queues for one client connection (the frontend's SNDHWM). When it is
    #: full the session manager keeps up to `max_queued_bytes_per_client` of replies itself,
    #: then stops building replies and pushes for that client until it reads again.
    client_send_hwm: int = 64
    #: Bytes of replies the session manager keeps for one client connection whose ZeroMQ
    #: queue is full; beyond, replies are dropped (counted) and reads go unanswered.
    max_queued_bytes_per_client: int = 4 * 1024 * 1024
    #: Messages ZeroMQ reads ahead from one connection (client or executor manager) before the
    #: session manager takes them (RCVHWM). A peer that sends faster is held back by TCP, not
    #: buffered: a flood costs at most this many messages per connection.
    receive_hwm: int = 1000


class RetentionConfig(Section):
    """What a long-running session manager keeps (docs/operations.md "Retention"): memory and
    the state directory are bounded by these keys, not by history. Expired sessions and tasks
    are deleted by a logged record; reading one answers NotFound saying it expired."""

    #: Seconds a closed session (and its tasks) is kept after closing; then it is deleted.
    closed_session_ttl: float = 86400.0
    #: Finished tasks (Succeed, Failed, Cancelled) held in all sessions; beyond, the oldest go:
    #: closed sessions first (whole, oldest closed first), then the oldest finished tasks of
    #: open sessions (a session's counts keep their totals).
    max_finished_tasks: int = 1_000_000
    #: Seconds an open session may go without new tasks or results while it has no Pending or
    #: Running task; then it is closed (and later expires as closed). 0 = never.
    idle_session_ttl: float = 0.0
    #: Seconds between retention checks.
    check_interval: float = 1.0


class SecurityConfig(Section):
    """CurveZMQ (docs/operations.md "Security"). Paths are key files written by `flamed keygen`."""

    #: Encrypt and authenticate the frontend and backend with CURVE (every process must agree).
    curve: bool = False
    #: Session manager: its secret key file (NAME.key_secret, mode 0600).
    server_secret_key: str = ""
    #: Clients and executor managers: the session manager's public key file (NAME.key).
    server_public_key: str = ""
    #: Clients and executor managers: their own secret key file (NAME.key_secret, mode 0600);
    #: an executor manager's key must be named after its node.
    client_secret_key: str = ""
    #: Session manager: directory of client public keys (one NAME.key per client) allowed on
    #: the frontend; re-read when it changes.
    allow_dir_clients: str = ""
    #: Session manager: directory of node public keys (NODE.key, named after the node) allowed
    #: on the backend; re-read when it changes.
    allow_dir_nodes: str = ""


class ClientConfig(Section):
    #: Endpoint used by clients when neither --endpoint nor FLAME_ENDPOINT is given.
    endpoint: str = ""
    #: Seconds a client waits for a reply before it reports the session manager unreachable.
    timeout: float = 30.0
    #: Seconds a client waits for its first connection before it says that nothing answers at
    #: the endpoint (a wrong endpoint, or no session manager running); later calls wait `timeout`.
    connect_timeout: float = 3.0


class LogConfig(Section):
    #: debug, info, warning or error; `--log-level` wins; re-read on SIGHUP.
    level: Literal["debug", "info", "warning", "error"] = "info"
    #: "text" (no timestamps under journald) or "json" (one object per line); `--log-format` wins.
    format: Literal["text", "json"] = "text"


class CacheConfig(Section):
    """The object cache (`flamed object-cache`, docs/object-cache.md)."""

    #: Endpoint clients and instances reach the object cache at; the session manager hands it
    #: to them (Welcome, Registered), so users configure nothing. `--cache` wins over it.
    endpoint: str = DEFAULT_CACHE
    #: Endpoint `flamed object-cache` binds; empty = `endpoint` (set it to bind a wildcard
    #: address such as tcp://0.0.0.0:8082 while `endpoint` names the host).
    bind: str = ""
    #: State directory of the object cache; `--state-dir` wins; empty = `object-cache` in the
    #: platformdirs user state dir for "flame". Created with mode 0700.
    state_dir: str = ""
    #: Bytes of objects (bases and deltas) the cache keeps; past it the least recently used
    #: objects are evicted to make room for new writes.
    max_bytes: int = 4 * 1024 * 1024 * 1024
    #: Largest object (one base or one delta) in bytes; a bigger write is refused (TooLarge).
    max_object_size: int = 1024 * 1024 * 1024
    #: Deltas one object holds (patch_object); one more is refused until a put or update.
    max_deltas: int = 1000
    #: Bytes per message of a streamed read or write (and the largest part sent inline); the
    #: object cache uses at most half of `limits.max_message_size`.
    chunk_size: int = 1024 * 1024
    #: Uploads in progress at once (all clients); more are refused with LimitExceeded.
    max_uploads: int = 64
    #: Seconds an upload may wait for its next chunk before it is dropped.
    upload_timeout: float = 60.0
    #: Seconds between checks with the session manager for deleted sessions, whose objects
    #: are then removed (0 = never check).
    session_check_interval: float = 10.0
    #: Bytes of node-local copies the instances of one executor manager keep (in its runtime
    #: dir), so a second instance on the node reads a current object without the network.
    local_copy_bytes: int = 2 * 1024 * 1024 * 1024


class Config(Section):
    cluster: ClusterConfig = msgspec.field(default_factory=ClusterConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    recovery: RecoveryConfig = msgspec.field(default_factory=RecoveryConfig)
    executor_manager: ExecutorManagerConfig = msgspec.field(default_factory=ExecutorManagerConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)
    client: ClientConfig = msgspec.field(default_factory=ClientConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir("flame")) / "flame.toml"


def find_config_path(explicit: str | None) -> Path | None:
    """The config file to read, or None for built-in defaults."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("FLAME_CONF")
    if env:
        return Path(env)
    path = default_config_path()
    return path if path.exists() else None


def load_config(explicit: str | None = None) -> Config:
    """Load and validate the config; raises ConfigError with the file and key at fault."""
    path = find_config_path(explicit)
    if path is None:
        return Config()
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return parse_config(raw, source=str(path))


def parse_config(raw: dict[str, object], source: str = "<config>") -> Config:
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_explain(exc)}") from None
    _check(config, source)
    return config


def _explain(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    # msgspec says "... - at `$.recovery.heartbeat_interval`"; turn the path into a TOML key.
    message, _, where = text.partition(" - at `$.")
    where = where.rstrip("`")
    if message.startswith("Object contains unknown field `"):
        name = message.split("`")[1]
        key = f"{where}.{name}" if where else name
        section: type[msgspec.Struct] = Config
        for part in where.split(".") if where else []:
            section = type(getattr(section(), part))
        known = ", ".join(section.__struct_fields__)
        return f"key {key}: unknown key; expected one of: {known}"
    if message.startswith("Invalid enum value") and where:
        section_name, _, field_name = where.rpartition(".")
        section = type(getattr(Config(), section_name)) if section_name else Config
        hint = typing.get_type_hints(section).get(field_name)
        choices = [str(c) for c in typing.get_args(hint)] if hint is not None else []
        if choices and all(isinstance(c, str) for c in typing.get_args(hint)):
            return f"key {where}: {message}; expected one of: {', '.join(choices)}"
    return f"key {where}: {message}" if where else text


#: Largest value of any float key: every one is a duration in seconds, and a week is beyond
#: any sensible timeout while far from what overflows a timer or a socket option in ms.
MAX_SECONDS = 7 * 24 * 3600.0
#: Largest value of any integer key (counts and sizes): far beyond any real cluster, and within
#: what the wire (MessagePack int64) and socket options (int64 MAXMSGSIZE) carry.
MAX_COUNT = 2**62
#: Float keys that are not timeouts but ages: a closed session may be kept for years.
LONG_DURATIONS = {
    "retention.closed_session_ttl": 10 * 366 * 24 * 3600.0,
    "retention.idle_session_ttl": 10 * 366 * 24 * 3600.0,
}


def _check_numbers(config: Config, source: str) -> None:
    """Every float key finite (TOML has `nan` and `inf`) and at most `MAX_SECONDS`; every
    integer key at most `MAX_COUNT`. The signs are checked per key by `_check`."""
    for section_name in Config.__struct_fields__:
        section = getattr(config, section_name)
        for name in section.__struct_fields__:
            value = getattr(section, name)
            key = f"{section_name}.{name}"
            most = LONG_DURATIONS.get(key, MAX_SECONDS)
            if isinstance(value, float) and not (math.isfinite(value) and value <= most):
                raise ConfigError(f"{source}: key {key}: must be a finite number of seconds <= {most:g}, got {value}")
            if isinstance(value, int) and not isinstance(value, bool) and value > MAX_COUNT:
                raise ConfigError(f"{source}: key {key}: must be <= {MAX_COUNT}, got {value}")


def _check(config: Config, source: str) -> None:
    _check_numbers(config, source)
    positive = {
        "recovery.heartbeat_interval": config.recovery.heartbeat_interval,
        "recovery.heartbeat_liveness": config.recovery.heartbeat_liveness,
        "recovery.drain_timeout": config.recovery.drain_timeout,
        "recovery.reconnect_backoff_min": config.recovery.reconnect_backoff_min,
        "recovery.reconnect_backoff_max": config.recovery.reconnect_backoff_max,
        "cluster.schedule_interval": config.cluster.schedule_interval,
        "cluster.dispatch_depth": config.cluster.dispatch_depth,
        "storage.fsync_interval": config.storage.fsync_interval,
        "storage.snapshot_records": config.storage.snapshot_records,
        "storage.segment_bytes": config.storage.segment_bytes,
        "limits.max_message_size": config.limits.max_message_size,
        "limits.max_sessions": config.limits.max_sessions,
        "limits.max_tasks_per_session": config.limits.max_tasks_per_session,
        "limits.max_task_input_size": config.limits.max_task_input_size,
        "limits.max_task_output_size": config.limits.max_task_output_size,
        "limits.max_common_data_size": config.limits.max_common_data_size,
        "limits.max_tasks": config.limits.max_tasks,
        "limits.max_watches_per_client": config.limits.max_watches_per_client,
        "limits.max_watch_task_ids": config.limits.max_watch_task_ids,
        "limits.max_watched_tasks_per_client": config.limits.max_watched_tasks_per_client,
        "limits.max_watched_tasks": config.limits.max_watched_tasks,
        "limits.max_subscribers": config.limits.max_subscribers,
        "limits.max_subscriptions_per_client": config.limits.max_subscriptions_per_client,
        "limits.max_page_tasks": config.limits.max_page_tasks,
        "limits.max_page_bytes": config.limits.max_page_bytes,
        "limits.client_send_hwm": config.limits.client_send_hwm,
        "limits.max_queued_bytes_per_client": config.limits.max_queued_bytes_per_client,
        "limits.receive_hwm": config.limits.receive_hwm,
        "client.timeout": config.client.timeout,
        "client.connect_timeout": config.client.connect_timeout,
        "executor_manager.instance_stop_timeout": config.executor_manager.instance_stop_timeout,
        "cache.max_bytes": config.cache.max_bytes,
        "cache.max_object_size": config.cache.max_object_size,
        "cache.max_deltas": config.cache.max_deltas,
        "cache.chunk_size": config.cache.chunk_size,
        "cache.max_uploads": config.cache.max_uploads,
        "cache.upload_timeout": config.cache.upload_timeout,
        "cache.local_copy_bytes": config.cache.local_copy_bytes,
        "retention.closed_session_ttl": config.retention.closed_session_ttl,
        "retention.max_finished_tasks": config.retention.max_finished_tasks,
        "retention.check_interval": config.retention.check_interval,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{source}: key {key}: must be a positive number, got {value}")
    if config.cluster.rebalance_after < 0:
        after = config.cluster.rebalance_after
        raise ConfigError(f"{source}: key cluster.rebalance_after: must be >= 0, got {after}")
    if config.executor_manager.stop_grace < 0:
        grace = config.executor_manager.stop_grace
        raise ConfigError(f"{source}: key executor_manager.stop_grace: must be >= 0, got {grace}")
    if config.cache.session_check_interval < 0:
        raise ConfigError(f"{source}: key cache.session_check_interval: must be >= 0")
    if config.storage.snapshot_log_bytes < 0:
        raise ConfigError(f"{source}: key storage.snapshot_log_bytes: must be >= 0 (0 = by snapshot_records only)")
    if config.retention.idle_session_ttl < 0:
        raise ConfigError(f"{source}: key retention.idle_session_ttl: must be >= 0 (0 = never)")
    if config.recovery.task_retry_limit < 0:
        raise ConfigError(f"{source}: key recovery.task_retry_limit: must be >= 0")
    if config.recovery.reconnect_backoff_max < config.recovery.reconnect_backoff_min:
        raise ConfigError(f"{source}: key recovery.reconnect_backoff_max: must be >= reconnect_backoff_min")
    for key, endpoint in (
        ("cluster.frontend", config.cluster.frontend),
        ("cluster.backend", config.cluster.backend),
        ("cache.endpoint", config.cache.endpoint),
    ):
        check_endpoint(endpoint, f"{source}: key {key}")
    if config.client.endpoint:
        check_endpoint(config.client.endpoint, f"{source}: key client.endpoint")
    if config.cache.bind:
        check_endpoint(config.cache.bind, f"{source}: key cache.bind")


def check_endpoint(endpoint: str, what: str = "endpoint") -> str:
    """Validate a ZeroMQ endpoint (tcp://host:port or ipc://path); returns it unchanged."""
    if endpoint.startswith("ipc://") and len(endpoint) > len("ipc://"):
        return endpoint
    if endpoint.startswith("tcp://"):
        host, sep, port = endpoint[len("tcp://") :].rpartition(":")
        if sep and host and port.isdigit() and 0 < int(port) < 65536:
            return endpoint
    raise ConfigError(f"{what}: {endpoint!r} is not an endpoint; expected tcp://HOST:PORT or ipc:///PATH")


def client_endpoint(explicit: str | None, config_path: str | None = None) -> str:
    """Frontend endpoint for a client: --endpoint, then FLAME_ENDPOINT, then config, then default."""
    if explicit:
        return check_endpoint(explicit, "--endpoint")
    env = os.environ.get("FLAME_ENDPOINT")
    if env:
        return check_endpoint(env, "FLAME_ENDPOINT")
    config = load_config(config_path)
    return config.client.endpoint or config.cluster.frontend


def is_local_endpoint(endpoint: str) -> bool:
    """True for ipc:// and tcp:// on a loopback address: only this host can connect."""
    if endpoint.startswith("ipc://"):
        return True
    host = endpoint[len("tcp://") :].rpartition(":")[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")
