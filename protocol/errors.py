"""Error codes carried by `Error` replies on every link.

A peer that sends something the receiver cannot accept gets an `Error` with one of these codes
and a message saying what was wrong and, where it helps, what to do next.
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
