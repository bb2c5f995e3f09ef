"""Error codes carried by `Error` replies on every link, and the root of Flame's exceptions.

A peer that sends something the receiver cannot accept gets an `Error` with one of these codes
and a message saying what was wrong and, where it helps, what to do next.

Every exception Flame raises on purpose derives from `FlameBaseError`. It lives here because
this package imports nothing of ours, so every other package (the core, the daemons, the SDK,
the TUI) may derive from it. The whole tree, with where each class lives:

    FlameBaseError            raised on purpose by Flame; `except FlameBaseError` catches them all
     +-- FrameError           protocol.codec: a received frame does not decode (`code`, `message`);
     |                        answered with an `Error`, counted, never fatal
     +-- RequestError         flamed.core.requests: a client request cannot be served (`code`,
     |                        `message`); the controller answers it with an `Error`
     +-- InvalidTransition    flamed.core.machines: a move its table does not allow; a bug of
     |                        ours (peer input is checked with `allows` first), never caught
     +-- SnapshotFormatError  flamed.core.snapshot: a snapshot this version cannot read (also
     |                        a ValueError)
     +-- StorageError         flamed.storage.errors: a write, fsync, rename or delete in the
     |    |                   state directory failed (the request fails, memory equals disk)
     |    +-- CorruptLogError damage before the log's tail: the daemon must not start
     |    +-- LockedError     another process holds the state directory
     +-- CacheError           flamed.object_cache.index: a request the object cache refuses
     |                        (`code`, `message`)
     +-- ConfigError          flamed.config: the config file or a flag is not acceptable
     +-- SecurityError        flamed.transport.security: a key file is missing, malformed or unsafe
     +-- SettingsError        flamed.transport.settings: a client's configuration cannot be used
     +-- UnsafeDirectory      flamed.private_dirs: a directory that cannot be trusted
     +-- InstanceStartError   flamed.executor_manager.instances: an instance process cannot start
     +-- InstallError         flamed.executor_manager.install: an application package cannot be
     |                        installed (in the installer process; the bind fails with the log)
     +-- Fatal                flamed.executor_manager.manager: the executor manager cannot go on
     +-- Misbehaviour         flamed.executor_manager.conduct: an instance broke the instance
     |                        protocol (it is killed; its bind or running task fails)
     +-- UsageError           flamed.cli.flmctl: the command line does not say what to do
     +-- Stopped              flamed.cli.cluster: Ctrl-C or SIGTERM while the cluster starts
     +-- RunnerError          flamed.runner.helper: `get_data` cannot read a task's data
     |                        (flamepy's name; `error_type` says why)
     +-- RemoteError          flamed.runner.runpy: a Runner call raised on the executor; the
     |                        task fails as `<its type>: <its text>` with the remote traceback
     +-- FlameError           flamed.client.errors: an SDK call failed (flamepy's name; `code` is
          |                   a FlameErrorCode, `server_code` the session manager's ErrorCode)
          +-- CacheCallError  flamed.client.cache_channel: an object-cache call failed (also a
                              ValueError, as flamepy raises for cache failures)

Not in the tree: `flamed.transport.TransportError`, which is pyzmq's `ZMQError` under the name
the rest of the code catches it by (only the transport imports zmq).

Rules: a new exception class derives from `FlameBaseError` or from one of its children, and is
drawn here (tests/unit/test_errors.py checks both); errors a peer causes carry an `ErrorCode`;
a broken invariant of our own is a plain `AssertionError` or `InvalidTransition`, never
swallowed.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    #: The named application, session, task, node or executor does not exist.
    NotFound = "NotFound"
    #: An object with that name or id exists already.
    AlreadyExists = "AlreadyExists"
    #: A field has a bad value (bad name, spec mismatch, bad resource requirement ...).
    InvalidArgument = "InvalidArgument"
    #: The object is in a state that does not allow the operation (closed session ...).
    InvalidState = "InvalidState"
    #: The frame did not decode: malformed msgpack, unknown message type, wrong field type,
    #: wrong frame count or header. The message names the bad field where it can.
    BadMessage = "BadMessage"
    #: The peer speaks another protocol version.
    VersionMismatch = "VersionMismatch"
    #: The message is larger than a configured limit.
    TooLarge = "TooLarge"
    #: A configured limit (sessions, tasks per session, subscribers) was reached.
    LimitExceeded = "LimitExceeded"
    #: The change could not be made durable (disk full, I/O error); nothing was changed.
    StorageUnavailable = "StorageUnavailable"
    #: Backend only: the sender's registration (epoch) is stale; it must register again.
    Reregister = "Reregister"
    #: Backend only: another live executor manager already holds this node name.
    DuplicateNode = "DuplicateNode"
    #: The peer is not allowed to do this (wrong key for the socket, identity mismatch).
    Unauthorized = "Unauthorized"
    #: A bug or an unexpected failure in the session manager.
    Internal = "Internal"


class FlameBaseError(Exception):
    """The root of every exception Flame raises on purpose (the tree is in this module's
    docstring). Nothing raises it directly."""
