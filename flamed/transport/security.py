"""CurveZMQ keys, socket roles and the ZAP allow-list (ZEROMQ.md section 4).

Roles: the session manager is the CURVE *server* on the frontend (ZAP domain `clients`) and
the backend (ZAP domain `nodes`); clients and executor managers are CURVE *clients* with key
pairs of their own. A CURVE server without a ZAP handler accepts anyone who knows its public
key, so the server sockets set `ZAP_ENFORCE_DOMAIN` (no handler = refused) and the session
manager runs `ZapHandler` on its own loop. The handler allows a key only if a file for it
is in the allow-list directory of that domain, so a client key cannot register a node and a
node key cannot act as a client.

ZAP runs only at the handshake, so the daemon checks every message again (revocation takes
effect at once, on open connections too). The reply's User-Id is therefore the key itself (its
Z85 form), not the file's name: a message is admitted while `AllowList.name_of(user_id)` finds
that very key, and the name it gives (for nodes: the node name, from `NODE.key`) is compared
with the node the message speaks for. A key file replaced by another key under the same name
revokes the old key. `AllowList.refresh` keeps the per-message check cheap: the directory is
stat'ed at most once per call (once per loop turn) and every file at most once a second.

Key files are pyzmq/czmq certificates: `NAME.key` (public) and `NAME.key_secret` (both keys).
Secrets are written 0600 in a 0700 directory, and loading one that group or others can read
fails with the `chmod` to run, as ssh does. Keys are never logged or passed on argv.

The executor manager's instance channel is not covered: it is an ipc:// socket in a 0700
runtime directory of the service user, which other users cannot reach.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
import zmq.utils.z85

from flamed.config import SecurityConfig
from flamed.transport.refusal_log import RefusalLog
from protocol.errors import FlameBaseError

log = logging.getLogger("flamed.security")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
CLIENTS = "clients"
NODES = "nodes"


class SecurityError(FlameBaseError):
    """A key file is missing, malformed or unsafe; the message says what to do."""


@dataclass(frozen=True)
class KeyPair:
    public: bytes  # Z85, 40 bytes
    secret: bytes


@dataclass(frozen=True)
class ClientCurve:
    """What a CURVE client socket needs: the server's public key and a pair of its own."""

    server_public: bytes
    own: KeyPair


@dataclass(frozen=True)
class ServerCurve:
    own: KeyPair
    domain: str


# ---------------------------------------------------------------------------- key files


def write_key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """`flamed keygen`: write NAME.key and NAME.key_secret (0600) in `directory` (0700).

    Refuses to overwrite, and refuses a directory that group or others can enter."""
    if not name or "/" in name or name.startswith("."):
        raise SecurityError(f"key name {name!r} is not valid: use a node or client name without '/'")
    if directory.exists():
        mode = stat.S_IMODE(directory.stat().st_mode)
        if mode & 0o077:
            raise SecurityError(
                f"directory {directory} is open to group or others (mode {mode:04o}); run: chmod 700 {directory}"
            )
    else:
        directory.mkdir(mode=0o700, parents=True)
        os.chmod(directory, 0o700)
    public, secret = zmq.curve_keypair()
    public_path, secret_path = directory / f"{name}.key", directory / f"{name}.key_secret"
    for path in (public_path, secret_path):
        if path.exists():
            raise SecurityError(f"{path} exists; remove it first to replace the key")
    _write(public_path, _certificate(public, None), 0o644)
    _write(secret_path, _certificate(public, secret), 0o600)
    return public_path, secret_path


def _certificate(public: bytes, secret: bytes | None) -> str:
    kind = "Secret" if secret is not None else "Public"
    lines = [f"#   ZeroMQ CURVE **{kind}** Certificate (written by flamed keygen)", "", "metadata", "curve"]
    lines.append(f'    public-key = "{public.decode()}"')
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)  # the umask may have narrowed a public key; never widened a secret


def check_private(path: Path) -> None:
    """Raise unless `path` exists and only its owner can read it."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise SecurityError(f"cannot read secret key file {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise SecurityError(
            f"secret key file {path} is readable by group or others (mode {mode:04o}); run: chmod 600 {path}"
        )


def load_secret(path: str | Path) -> KeyPair:
    """A key pair from a `.key_secret` file, which must be private (mode 0600 or stricter)."""
    path = Path(path).expanduser()
    check_private(path)
    public, secret = _load(path)
    if secret is None:
        raise SecurityError(f"{path} holds no secret-key; give the NAME.key_secret file written by flamed keygen")
    return KeyPair(public, secret)


def load_public(path: str | Path) -> bytes:
    public, _ = _load(Path(path).expanduser())
    return public


def _load(path: Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise SecurityError(f"cannot load key file {path}: {exc}") from None
    if public is None or len(public) != 40:
        raise SecurityError(f"{path} is not a CURVE key file (no 40-character public-key)")
    return public, secret


# ---------------------------------------------------------------------------- socket roles


def make_server(sock: zmq.Socket[bytes], curve: ServerCurve) -> None:
    """Before bind: CURVE server in a ZAP domain; without a ZAP handler, nobody gets in."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, curve.own.secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.own.public)
    sock.setsockopt(zmq.ZAP_DOMAIN, curve.domain.encode())
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    sock.setsockopt(zmq.HANDSHAKE_IVL, 5000)


def make_client(sock: zmq.Socket[bytes], curve: ClientCurve) -> None:
    """Before connect: CURVE client that trusts only `curve.server_public`."""
    sock.setsockopt(zmq.CURVE_SERVERKEY, curve.server_public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.own.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, curve.own.secret)


def user_id(frame: zmq.Frame) -> str:
    """The User-Id the ZAP handler gave the sender of `frame` ("" without one)."""
    try:
        return str(frame.get("User-Id"))
    except zmq.ZMQError:
        return ""


# ---------------------------------------------------------------------------- ZAP


#: Seconds between two looks at every key file (in-place edits do not touch the directory).
FILE_CHECK_INTERVAL = 1.0

#: (name, inode, mtime, size) of every key file: what changes when a file is edited in place.
_FileStamp = tuple[tuple[str, int, int, int], ...]


class AllowList:
    """Public keys allowed in one domain: one `NAME.key` file per key. Re-read when the
    directory changes (a file added, removed or renamed: checked at each handshake and at each
    `refresh`), when a file changes in place (checked by `refresh` at most once a second), or
    on `reload()` (SIGHUP)."""

    def __init__(self, directory: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = directory
        self._clock = clock
        self._mark: tuple[int, int] | None = None
        self._files: _FileStamp = ()
        self._next_file_check = 0.0
        self.keys: dict[bytes, str] = {}  # raw 32-byte key -> name
        self._names: dict[str, str] = {}  # Z85 key (the ZAP User-Id) -> name

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.directory.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino)

    def _file_stamp(self) -> _FileStamp:
        try:
            with os.scandir(self.directory) as entries:
                files = []
                for entry in entries:
                    if entry.name.endswith(".key"):
                        try:
                            st = entry.stat()
                        except OSError:
                            continue
                        files.append((entry.name, st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            return ()
        return tuple(sorted(files))

    def reload(self) -> None:
        mark, files = self._stamp(), self._file_stamp()
        keys: dict[bytes, str] = {}
        try:
            paths = sorted(self.directory.glob("*.key"))
        except OSError:
            paths = []
        for path in paths:
            try:
                keys[zmq.utils.z85.decode(load_public(path))] = path.stem
            except (SecurityError, ValueError) as exc:
                log.warning("allow-list %s: skipping %s: %s", self.directory, path.name, exc)
        self.keys = keys
        self._names = {zmq.utils.z85.encode(raw).decode(): name for raw, name in keys.items()}
        self._mark, self._files = mark, files
        self._next_file_check = self._clock() + FILE_CHECK_INTERVAL
        log.info("allow-list %s: %d keys", self.directory, len(keys))

    def refresh(self) -> bool:
        """Re-read the list if it changed on disk; True if it did. Cheap enough for every loop
        turn: one stat of the directory, and every file's stat once a second."""
        if self._stamp() != self._mark:
            self.reload()
            return True
        if self._clock() >= self._next_file_check:
            self._next_file_check = self._clock() + FILE_CHECK_INTERVAL
            if self._file_stamp() != self._files:
                self.reload()
                return True
        return False

    def lookup(self, raw_key: bytes) -> str | None:
        """At a handshake: the name of `raw_key` if it is allowed now."""
        if self._stamp() != self._mark:
            self.reload()
        return self.keys.get(raw_key)

    def name_of(self, user_id: str) -> str | None:
        """For each message: the name the list gives the key `user_id` (a ZAP User-Id, the key
        in Z85) as last read, None if it is not (or no longer) allowed. No file access."""
        return self._names.get(user_id)


class ZapHandler:
    """27/ZAP on `inproc://zeromq.zap.01` of this process's context, served from the loop.

    CURVE requests are allowed when the key is listed for the socket's domain; the User-Id is
    the key in Z85 (the module docstring says why not its name). Requests for domains we do
    not own (NULL mechanism on sockets without a domain never reach us) are refused."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], lists: dict[str, AllowList]) -> None:
        self.lists = lists
        self.refused = 0  # exact; the log is rate-limited (one line per domain per window)
        self.allowed = 0
        self.refusals = RefusalLog(log)
        for allow in lists.values():
            allow.reload()
        self.sock: zmq.Socket[bytes] = ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(ZAP_ENDPOINT)

    def reload(self) -> None:
        for allow in self.lists.values():
            allow.reload()

    def on_readable(self) -> None:
        while True:
            try:
                request = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.sock.send_multipart(self._answer(request))

    def _answer(self, request: list[bytes]) -> list[bytes]:
        if len(request) < 6:
            return [b"1.0", request[1] if len(request) > 1 else b"", b"400", b"bad request", b"", b""]
        version, request_id, domain, address, _identity, mechanism = request[:6]
        credentials = request[6:]
        allow = self.lists.get(domain.decode(errors="replace"))
        name = None
        if version == b"1.0" and mechanism == b"CURVE" and allow is not None and credentials:
            name = allow.lookup(credentials[0])
        if name is None:
            self.refused += 1
            who = zmq.utils.z85.encode(credentials[0]).decode() if credentials and len(credentials[0]) == 32 else "-"
            where = domain.decode(errors="replace")
            self.refusals.refused(
                where if where in self.lists else "?",
                f"{address.decode(errors='replace')} ({mechanism.decode(errors='replace')} key {who[:8]}...: "
                "not in the allow-list)",
            )
            return [b"1.0", request_id, b"400", b"not allowed", b"", b""]
        self.allowed += 1
        return [b"1.0", request_id, b"200", b"OK", zmq.utils.z85.encode(credentials[0]), b""]

    def flush_refusals(self) -> None:
        """Log the counts of refusal windows that have passed (call every `REFUSAL_WINDOW`)."""
        self.refusals.flush()

    def close(self) -> None:
        self.refusals.flush(everything=True)
        self.sock.close(0)


# ---------------------------------------------------------------------------- from config


def server_curve(security: SecurityConfig, domain: str) -> ServerCurve | None:
    """The session manager's role on one socket, or None in plain mode."""
    if not security.curve:
        return None
    return ServerCurve(load_secret(_need(security.server_secret_key, "server_secret_key")), domain)


def client_curve(security: SecurityConfig) -> ClientCurve | None:
    """A client's or executor manager's role, or None in plain mode."""
    if not security.curve:
        return None
    server_public = load_public(_need(security.server_public_key, "server_public_key"))
    return ClientCurve(server_public, load_secret(_need(security.client_secret_key, "client_secret_key")))


def zap_handler(ctx: zmq.Context[zmq.Socket[bytes]], security: SecurityConfig) -> ZapHandler | None:
    """The session manager's ZAP handler (bind it before the CURVE sockets), None in plain mode."""
    if not security.curve:
        return None
    lists = {
        CLIENTS: AllowList(Path(_need(security.allow_dir_clients, "allow_dir_clients"))),
        NODES: AllowList(Path(_need(security.allow_dir_nodes, "allow_dir_nodes"))),
    }
    for allow in lists.values():
        if not allow.directory.is_dir():
            raise SecurityError(f"allow-list directory {allow.directory} does not exist; create it with mode 0700")
    return ZapHandler(ctx, lists)


def _need(value: str, key: str) -> str:
    if not value:
        raise SecurityError(f"security.curve is on but security.{key} is empty; set it in the config file")
    return value
