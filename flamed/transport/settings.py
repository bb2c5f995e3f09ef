"""What a client needs from the configuration to reach a session manager, in one record.

The SDK (`flamed.client`) depends on the protocol and this transport only, never on the
daemons' configuration module: it asks `client_settings` for the endpoint, the timeouts, the
largest message the session manager takes and, with `[security] curve`, its CURVE client role.
The endpoint comes from the caller, then `FLAME_ENDPOINT`, then `client.endpoint` in the config
file, then the cluster's frontend (`tcp://127.0.0.1:8080`); the file is the one `--config`,
`$FLAME_CONF` or the user config dir names. Any problem (a bad endpoint, an unreadable or
invalid file, a missing or unsafe key) is one `SettingsError` whose message says what to fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from flamed.transport.security import ClientCurve, SecurityError, client_curve
from flamed.transport.sockets import Reconnect
from protocol.errors import FlameBaseError


class SettingsError(FlameBaseError):
    """The client configuration cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class ClientSettings:
    #: the session manager's frontend, checked (tcp://HOST:PORT or ipc:///PATH)
    endpoint: str
    #: seconds a request waits for its reply (`client.timeout`)
    timeout: float
    #: seconds the first contact may take before calls fail with "nothing answers"
    connect_timeout: float
    #: largest request the session manager accepts (`limits.max_message_size`)
    max_message_size: int
    #: the CURVE client role, None in plain mode
    curve: ClientCurve | None
    #: how the connection is retried (`recovery.reconnect_backoff_min/max`)
    reconnect: Reconnect = field(default_factory=Reconnect)


def client_settings(endpoint: str | None = None, config_path: str | None = None) -> ClientSettings:
    """The settings of a client of the session manager at `endpoint` (resolved as the module
    says when None), from the config file at `config_path` (or the one found by default)."""
    from flamed.config import ConfigError, check_endpoint, load_config

    try:
        config = load_config(config_path)
        if endpoint:
            resolved = check_endpoint(endpoint, "--endpoint")
        elif env := os.environ.get("FLAME_ENDPOINT"):
            resolved = check_endpoint(env, "FLAME_ENDPOINT")
        else:
            resolved = config.client.endpoint or config.cluster.frontend
        curve = client_curve(config.security)
    except (ConfigError, SecurityError) as exc:
        raise SettingsError(str(exc)) from None
    return ClientSettings(
        endpoint=resolved,
        timeout=config.client.timeout,
        connect_timeout=config.client.connect_timeout,
        max_message_size=config.limits.max_message_size,
        curve=curve,
        reconnect=Reconnect.backoff(config.recovery.reconnect_backoff_min, config.recovery.reconnect_backoff_max),
    )


def client_role(config_path: str | None = None) -> ClientCurve | None:
    """Only the CURVE client role (for a connection to another daemon, e.g. the object cache);
    raises `SettingsError` as `client_settings` does."""
    from flamed.config import ConfigError, load_config

    try:
        return client_curve(load_config(config_path).security)
    except (ConfigError, SecurityError) as exc:
        raise SettingsError(str(exc)) from None
