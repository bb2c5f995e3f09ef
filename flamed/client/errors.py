"""The SDK's one error type, as flamepy spells it.

    FlameError(code, message)          every failure a call reports
      .code: FlameErrorCode            flamepy's six codes
      .server_code: ErrorCode | None   the session manager's own code, when it sent one

Session-manager `Error` replies are mapped with `from_server`; a session manager that does not
answer within the client timeout gives INVALID_CONFIG at `connect()` (as flamepy) and INTERNAL
later, with a message naming the endpoint and the timeout.
"""

from __future__ import annotations

import enum

from protocol.errors import ErrorCode, FlameBaseError


class FlameErrorCode(enum.IntEnum):
    INVALID_CONFIG = 0
    INVALID_STATE = 1
    INVALID_ARGUMENT = 2
    INTERNAL = 3
    ALREADY_EXISTS = 4
    NOT_FOUND = 5


class FlameError(FlameBaseError):
    """A failed SDK call; `code` says what kind of failure, `message` what happened."""

    def __init__(self, code: FlameErrorCode, message: str, server_code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.server_code = server_code

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"FlameError({self.code.name}, {self.message!r})"


_FROM_SERVER = {
    ErrorCode.NotFound: FlameErrorCode.NOT_FOUND,
    ErrorCode.AlreadyExists: FlameErrorCode.ALREADY_EXISTS,
    ErrorCode.InvalidArgument: FlameErrorCode.INVALID_ARGUMENT,
    ErrorCode.InvalidState: FlameErrorCode.INVALID_STATE,
    ErrorCode.BadMessage: FlameErrorCode.INVALID_ARGUMENT,
    ErrorCode.TooLarge: FlameErrorCode.INVALID_ARGUMENT,
    ErrorCode.LimitExceeded: FlameErrorCode.INVALID_STATE,
    ErrorCode.VersionMismatch: FlameErrorCode.INVALID_CONFIG,
    ErrorCode.Unauthorized: FlameErrorCode.INVALID_CONFIG,
}


def from_server(code: ErrorCode, message: str) -> FlameError:
    """The FlameError for a session manager's `Error(code, message)` reply."""
    return FlameError(_FROM_SERVER.get(code, FlameErrorCode.INTERNAL), message, server_code=code)


def unreachable(endpoint: str, connect_timeout: float, handshake_failure: str = "") -> FlameError:
    """Nothing ever answered at `endpoint`: the security handshake failed (`handshake_failure`
    says how), or no connection came within `connect_timeout` seconds. Says what to check."""
    if handshake_failure:
        return FlameError(
            FlameErrorCode.INVALID_CONFIG,
            f"the session manager at {endpoint} refused this client in the security handshake "
            f"({handshake_failure}); with [security] curve, check that this client's public key is "
            "in its allow_dir_clients and that server_public_key is its key",
        )
    return FlameError(
        FlameErrorCode.INVALID_CONFIG,
        f"nothing answers at {endpoint} (no connection within {connect_timeout:g}s); "
        "is the session manager running, and is the endpoint right? (--endpoint, FLAME_ENDPOINT, "
        "or client.endpoint in the config)",
    )


def no_reply(endpoint: str, timeout: float) -> FlameError:
    """A session manager that answered before said nothing for `timeout` seconds."""
    return FlameError(FlameErrorCode.INTERNAL, f"no reply from session manager at {endpoint} in {timeout:g}s")
