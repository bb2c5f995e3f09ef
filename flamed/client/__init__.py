"""flamed.client: the Python SDK, with the names and meanings of Flame's `flamepy`.

    import flamed.client as flamepy

    flamepy.register_application("echo", flamepy.ApplicationAttributes(command="/usr/bin/echo-service"))
    with flamepy.create_session("echo") as session:
        futures = [session.run(b"hi") for _ in range(10_000)]
        outputs = [f.result() for f in futures]

Module-level functions use one default `Connection`, created by `connect()` or on first use from
`--endpoint`-less defaults (FLAME_ENDPOINT, then the config file, then tcp://127.0.0.1:8080). It
is closed at interpreter exit. Errors are `FlameError` (see `flamed.client.errors`).
"""

from __future__ import annotations

import os
from typing import Any

from flamed.client.cache import ObjectRef, delete_objects, get_object, patch_object, put_object, update_object
from flamed.client.cluster_feed import ClusterFeed
from flamed.client.connection import Connection, open_connection, session_spec, short_name
from flamed.client.default import connect, connection, disconnect
from flamed.client.errors import FlameError, FlameErrorCode
from flamed.client.progress import progress
from flamed.client.session import Session
from flamed.client.types import (
    Application,
    ApplicationAttributes,
    ApplicationSchema,
    ApplicationState,
    Event,
    FlamePackage,
    ResourceRequirement,
    SessionAttributes,
    SessionState,
    Shim,
    Task,
    TaskState,
)
from protocol.types import Executor, Node, SessionSpec

__all__ = [
    "Application",
    "ApplicationAttributes",
    "ApplicationSchema",
    "ApplicationState",
    "ClusterFeed",
    "Connection",
    "Event",
    "Executor",
    "FlameContext",
    "FlameError",
    "FlameErrorCode",
    "FlamePackage",
    "Node",
    "ObjectRef",
    "ResourceRequirement",
    "Session",
    "SessionAttributes",
    "SessionState",
    "Shim",
    "Task",
    "TaskState",
    "close_session",
    "connect",
    "create_session",
    "delete_objects",
    "delete_session",
    "disconnect",
    "get_application",
    "get_object",
    "get_session",
    "list_applications",
    "list_executors",
    "list_nodes",
    "list_sessions",
    "open_connection",
    "open_session",
    "patch_object",
    "progress",
    "put_object",
    "register_application",
    "short_name",
    "unregister_application",
    "update_application",
    "update_object",
]


class FlameContext:
    """flamepy's `FlameContext`, read-only: where this client finds the cluster, its cache, where
    a Runner stores packages and which application is the Runner's template.

    `package` is None unless `FLAME_PACKAGE_STORAGE` (a `file://` directory) is set: packages
    then go to the object cache. `FLAME_RUNNER_TEMPLATE` names the template (`flmrun`)."""

    @property
    def endpoint(self) -> str:
        return connection().endpoint

    @property
    def cache(self) -> str | None:
        """The object cache's endpoint, or None when the cluster names none."""
        from flamed.client.cache import cache_endpoint

        try:
            return cache_endpoint()
        except FlameError:
            return None

    @property
    def cache_endpoint(self) -> str | None:
        return self.cache

    @property
    def package(self) -> FlamePackage | None:
        storage = os.environ.get("FLAME_PACKAGE_STORAGE")
        return FlamePackage(storage=storage) if storage else None

    @property
    def runner_template(self) -> str:
        return os.environ.get("FLAME_RUNNER_TEMPLATE") or "flmrun"


def register_application(name: str, attrs: ApplicationAttributes | dict[str, Any]) -> None:
    connection().register_application(name, attrs)


def update_application(name: str, attrs: ApplicationAttributes | dict[str, Any]) -> None:
    connection().update_application(name, attrs)


def unregister_application(name: str) -> None:
    connection().unregister_application(name)


def get_application(name: str) -> Application | None:
    return connection().get_application(name)


def list_applications() -> list[Application]:
    return connection().list_applications()


def create_session(  # noqa: PLR0917 - flamepy's positional signature
    application: str,
    common_data: bytes | None = None,
    session_id: str | None = None,
    min_instances: int = 0,
    max_instances: int | None = None,
    batch_size: int = 1,
    resreq: ResourceRequirement | None = None,
    priority: int = 0,
) -> Session:
    """Create a session of `application` (id `<application>-<6 alnum>` unless given)."""
    return connection().create_session(
        application, common_data, session_id, min_instances, max_instances, batch_size, resreq, priority
    )


def open_session(session_id: str, spec: SessionSpec | SessionAttributes | None = None) -> Session:
    """The open session `session_id`; with a spec, created if missing (and must match if not)."""
    if isinstance(spec, SessionAttributes):
        spec = session_spec(
            spec.application,
            spec.common_data,
            min_instances=spec.min_instances,
            max_instances=spec.max_instances,
            batch_size=spec.batch_size,
            resreq=spec.resreq,
            priority=spec.priority,
        )
    return connection().open_session(session_id, spec)


def get_session(session_id: str) -> Session:
    return connection().get_session(session_id)


def list_sessions() -> list[Session]:
    return connection().list_sessions()


def close_session(session_id: str) -> Session:
    return connection().close_session(session_id)


def delete_session(session_id: str) -> Session:
    return connection().delete_session(session_id)


def list_nodes() -> list[Node]:
    return connection().list_nodes()


def list_executors() -> list[Executor]:
    return connection().list_executors()
