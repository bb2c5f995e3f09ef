"""`Connection`: one session manager, one I/O thread, blocking flamepy-style calls.

Every call sends one request and waits for its reply; the I/O thread enforces the client
timeout, so a call never blocks longer than `timeout` (plus a small margin) even if the
thread were to die.
"""

from __future__ import annotations

import secrets
import string
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from flamed.client.errors import FlameError, FlameErrorCode
from flamed.client.io_thread import IoThread
from flamed.client.session import Session
from flamed.client.types import Application, ApplicationAttributes, application_from_wire, application_spec
from flamed.transport import ClientSettings, SettingsError, client_settings
from protocol import frontend as fe
from protocol.codec import PROTOCOL_VERSION
from protocol.types import Executor, Node, ResourceRequirement, SessionSpec

R = TypeVar("R", bound=fe.Message)

DEFAULT_TIMEOUT = 30.0


def short_name(prefix: str, length: int = 6) -> str:
    """`<prefix>-<length lower-case letters and digits>`, as flamepy names sessions."""
    alphabet = string.ascii_lowercase + string.digits
    return f"{prefix}-{''.join(secrets.choice(alphabet) for _ in range(length))}"


class Connection:
    """A connection to the session manager at `endpoint`; `connect()` is the usual way in."""

    def __init__(
        self,
        endpoint: str,
        timeout: float = DEFAULT_TIMEOUT,
        client: str = "flamed.client",
        config_path: str | None = None,
        settings: ClientSettings | None = None,
    ) -> None:
        """`config_path`: the config file with this client's `[security]` keys (default: the
        file found by default: $FLAME_CONF, then the user config dir); `settings`: what that
        file says, when the caller has read it already."""
        self.endpoint = endpoint
        self.timeout = timeout
        self.io = IoThread(endpoint, timeout, config_path=config_path, settings=settings)
        self.server_version = ""
        self.cluster = ""
        #: the object cache the session manager names ("" = none)
        self.cache_endpoint = ""
        try:
            welcome = self.request(fe.Hello(protocol_version=PROTOCOL_VERSION, client=client), fe.Welcome)
        except FlameError as exc:
            self.io.close()
            if exc.server_code is None and exc.code is FlameErrorCode.INTERNAL:
                raise FlameError(
                    FlameErrorCode.INVALID_CONFIG,
                    f"cannot reach session manager at {endpoint} within {timeout:g}s; "
                    "is it running? (set --endpoint or FLAME_ENDPOINT; with [security] curve, "
                    "is this client's public key in the session manager's allow_dir_clients?)",
                ) from None
            raise
        if welcome.protocol_version != PROTOCOL_VERSION:
            self.io.close()
            raise FlameError(
                FlameErrorCode.INVALID_CONFIG,
                f"session manager at {endpoint} speaks protocol {welcome.protocol_version}, "
                f"this client {PROTOCOL_VERSION}",
            )
        self.server_version = welcome.server_version
        self.cluster = welcome.cluster
        self.cache_endpoint = welcome.cache_endpoint
        if welcome.max_watches_per_client > 0:
            self.io.max_watches = welcome.max_watches_per_client

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.io.close()

    @property
    def closed(self) -> bool:
        return self.io.closed

    # ------------------------------------------------------------ plumbing

    def wait(self, future: Future[Any]) -> Any:
        """The result of an I/O-thread future (raises its FlameError)."""
        try:
            return future.result(timeout=self.timeout + 5.0)
        except FutureTimeout:
            raise self.io.no_reply_error() from None

    def request(self, message: fe.Message, reply_type: type[R]) -> R:
        reply = self.wait(self.io.call(message))
        if not isinstance(reply, reply_type):
            raise FlameError(
                FlameErrorCode.INTERNAL,
                f"session manager at {self.endpoint} answered {type(message).__name__} "
                f"with {type(reply).__name__}, expected {reply_type.__name__}",
            )
        return reply

    # ------------------------------------------------------------ applications

    def register_application(self, name: str, attrs: ApplicationAttributes | dict[str, Any]) -> None:
        spec = _spec_or_error(attrs)
        self.request(fe.RegisterApplication(name=name, spec=spec), fe.ApplicationReply)

    def update_application(self, name: str, attrs: ApplicationAttributes | dict[str, Any]) -> None:
        spec = _spec_or_error(attrs)
        self.request(fe.UpdateApplication(name=name, spec=spec), fe.ApplicationReply)

    def unregister_application(self, name: str) -> None:
        self.request(fe.UnregisterApplication(name=name), fe.Ok)

    def get_application(self, name: str) -> Application | None:
        """The application, or None if there is none of that name (as flamepy)."""
        try:
            reply = self.request(fe.GetApplication(name=name), fe.ApplicationReply)
        except FlameError as exc:
            if exc.code is FlameErrorCode.NOT_FOUND:
                return None
            raise
        return application_from_wire(reply.application)

    def list_applications(self) -> list[Application]:
        reply = self.request(fe.ListApplications(), fe.ApplicationsReply)
        return [application_from_wire(a) for a in reply.applications]

    # ------------------------------------------------------------ sessions

    def create_session(  # noqa: PLR0917 - flamepy's positional signature
        self,
        application: str,
        common_data: bytes | None = None,
        session_id: str | None = None,
        min_instances: int = 0,
        max_instances: int | None = None,
        batch_size: int = 1,
        resreq: ResourceRequirement | None = None,
        priority: int = 0,
    ) -> Session:
        spec = session_spec(
            application,
            common_data,
            min_instances=min_instances,
            max_instances=max_instances,
            batch_size=batch_size,
            resreq=resreq,
            priority=priority,
        )
        session_id = session_id or short_name(application)
        reply = self.request(fe.CreateSession(session_id=session_id, spec=spec), fe.SessionReply)
        return Session(self, reply.session)

    def open_session(self, session_id: str, spec: SessionSpec | None = None) -> Session:
        """The open session `session_id`; with a spec, created if missing (must match if not)."""
        reply = self.request(fe.OpenSession(session_id=session_id, spec=spec), fe.SessionReply)
        return Session(self, reply.session)

    def get_session(self, session_id: str) -> Session:
        reply = self.request(fe.GetSession(session_id=session_id), fe.SessionReply)
        return Session(self, reply.session)

    def list_sessions(self) -> list[Session]:
        reply = self.request(fe.ListSessions(), fe.SessionsReply)
        return [Session(self, s) for s in reply.sessions]

    def close_session(self, session_id: str) -> Session:
        reply = self.request(fe.CloseSession(session_id=session_id), fe.SessionReply)
        return Session(self, reply.session)

    def delete_session(self, session_id: str) -> Session:
        reply = self.request(fe.DeleteSession(session_id=session_id), fe.SessionReply)
        return Session(self, reply.session)

    # ------------------------------------------------------------ cluster

    def list_nodes(self) -> list[Node]:
        return self.request(fe.ListNodes(), fe.NodesReply).nodes

    def get_node(self, name: str) -> Node:
        return self.request(fe.GetNode(name=name), fe.NodeReply).node

    def list_executors(self) -> list[Executor]:
        return self.request(fe.ListExecutors(), fe.ExecutorsReply).executors

    def get_stats(self) -> dict[str, float]:
        return self.request(fe.GetStats(), fe.StatsReply).stats

    def drain_node(self, name: str) -> Node:
        """Cordon node `name`: it keeps its executors and gets no new ones."""
        return self.request(fe.DrainNode(name=name), fe.NodeReply).node

    def undrain_node(self, name: str) -> Node:
        """Uncordon node `name`: it takes new executors again."""
        return self.request(fe.UndrainNode(name=name), fe.NodeReply).node


def open_connection(addr: str | None = None, config: str | None = None, timeout: float | None = None) -> Connection:
    """A new connection (not the default one): endpoint from `addr`, FLAME_ENDPOINT, the config
    file, then the default; timeout from `timeout`, then `client.timeout` in the config."""
    settings = settings_or_error(addr, config)
    return Connection(
        settings.endpoint, settings.timeout if timeout is None else timeout, config_path=config, settings=settings
    )


def settings_or_error(addr: str | None = None, config: str | None = None) -> ClientSettings:
    """The client settings (`flamed.transport.client_settings`); FlameError INVALID_CONFIG,
    saying what to fix, when they cannot be read."""
    try:
        return client_settings(addr, config)
    except SettingsError as exc:
        raise FlameError(FlameErrorCode.INVALID_CONFIG, str(exc)) from None


def _spec_or_error(attrs: ApplicationAttributes | dict[str, Any]) -> Any:
    try:
        return application_spec(attrs)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise FlameError(FlameErrorCode.INVALID_ARGUMENT, f"bad application attributes: {exc}") from None


def session_spec(
    application: str,
    common_data: bytes | None,
    *,
    min_instances: int = 0,
    max_instances: int | None = None,
    batch_size: int = 1,
    resreq: ResourceRequirement | None = None,
    priority: int = 0,
) -> SessionSpec:
    """The wire spec of a session request; raises FlameError INVALID_ARGUMENT for bad values."""
    if common_data is not None and not isinstance(common_data, (bytes, bytearray, memoryview)):
        raise FlameError(
            FlameErrorCode.INVALID_ARGUMENT,
            f"common_data must be bytes or None, not {type(common_data).__name__}",
        )
    return SessionSpec(
        application=application,
        common_data=bytes(common_data) if common_data is not None else None,
        min_instances=min_instances,
        max_instances=max_instances,
        priority=priority,
        resreq=resreq,
        batch_size=batch_size,
    )
