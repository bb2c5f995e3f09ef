"""Framing and codecs.

A message travels as two ZeroMQ frames after any routing id that a ROUTER adds:

    [HEADER][msgpack payload]

`HEADER` is the 4 bytes b"FLM" + the protocol major version. The payload is one msgspec Struct
encoded as a MessagePack map whose "type" key names the message. A receiver checks the frame
count and header before decoding, and decoding is validation: a frame that does not decode
raises `FrameError` with an `ErrorCode` and a message that names the bad field.

Rule: decoding a peer's frames raises `FrameError` and nothing else, whatever the bytes. A
payload nested deeper than `nesting.MAX_DEPTH` is refused before msgspec sees it, and any other
exception from the decoder (a `RecursionError` the depth check should have prevented, a
`MemoryError`, a bug) becomes `FrameError(BadMessage)` too: the caller counts it and goes on,
so no frame can take a daemon down. The depth check is layered so that the hot path pays next
to nothing: byte-count bounds for small payloads, a strict decode for large ones whose shape
is ours (shapes.py), and an exact walk (nesting.py) only for what fits neither.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

from protocol import backend, frontend, instance
from protocol.errors import ErrorCode, FlameBaseError
from protocol.nesting import MAX_DEPTH, bounded, too_deep
from protocol.shapes import Shapes

PROTOCOL_VERSION = 1
HEADER_PREFIX = b"FLM"
HEADER = HEADER_PREFIX + bytes([PROTOCOL_VERSION])

#: Default largest frame a daemon accepts (config `limits.max_message_size`).
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024

T = TypeVar("T")


class FrameError(FlameBaseError):
    """A received message could not be accepted; `code` says why."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_encoder = msgspec.msgpack.Encoder()


def encode(message: msgspec.Struct) -> list[bytes]:
    """Frames for one message (without routing id)."""
    return [HEADER, _encoder.encode(message)]


def encode_payload(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def check_header(header: bytes) -> None:
    """Raise FrameError unless `header` is this protocol's header frame."""
    if header == HEADER:
        return
    if header[:3] == HEADER_PREFIX and len(header) == 4:
        raise FrameError(
            ErrorCode.VersionMismatch,
            f"protocol version {header[3]} is not supported; this peer speaks version {PROTOCOL_VERSION}",
        )
    raise FrameError(ErrorCode.BadMessage, f"bad header frame {header[:16]!r}; expected {HEADER!r}")


class Codec(Generic[T]):
    """Decoder for one direction of one link, built once and reused."""

    def __init__(self, incoming: Any) -> None:
        self._decoder: msgspec.msgpack.Decoder[T] = msgspec.msgpack.Decoder(incoming)
        self._shapes = Shapes(incoming)

    def decode(self, frames: list[bytes]) -> T:
        """Decode `[HEADER, payload]`; raises FrameError and nothing else."""
        if len(frames) != 2:
            raise FrameError(ErrorCode.BadMessage, f"expected 2 frames (header, payload), got {len(frames)}")
        check_header(frames[0])
        return self.decode_payload(frames[1])

    def decode_payload(self, payload: bytes) -> T:
        """Decode one payload; raises FrameError and nothing else."""
        if not bounded(payload) and not self._shapes.fits(payload) and too_deep(payload):
            raise FrameError(ErrorCode.BadMessage, f"malformed payload: nested deeper than {MAX_DEPTH} levels")
        try:
            return self._decoder.decode(payload)
        except msgspec.ValidationError as exc:
            raise FrameError(ErrorCode.BadMessage, f"invalid message: {exc}") from None
        except msgspec.DecodeError as exc:
            raise FrameError(ErrorCode.BadMessage, f"malformed payload: {exc}") from None
        except Exception as exc:  # any failure on a peer's bytes is a bad frame
            raise FrameError(ErrorCode.BadMessage, f"undecodable payload: {type(exc).__name__}: {exc}") from None


class _Envelope(msgspec.Struct):
    request_id: int = 0


_envelope_decoder = msgspec.msgpack.Decoder(_Envelope)


def peek_request_id(frames: list[bytes]) -> int:
    """The `request_id` of a request that did not decode, if one can be read (else 0), so that
    the error reply reaches the caller that is waiting for it."""
    if not frames or too_deep(frames[-1]):
        return 0
    try:
        return _envelope_decoder.decode(frames[-1]).request_id
    except Exception:  # any failure on a peer's bytes: no id to echo
        return 0


def client_request_codec() -> Codec[frontend.ClientRequest]:
    """What a session manager's frontend decodes."""
    return Codec(frontend.ClientRequest)


def server_reply_codec() -> Codec[frontend.ServerReply]:
    """What a client decodes."""
    return Codec(frontend.ServerReply)


def node_message_codec() -> Codec[backend.NodeMessage]:
    """What a session manager's backend decodes."""
    return Codec(backend.NodeMessage)


def manager_message_codec() -> Codec[backend.ManagerMessage]:
    """What an executor manager decodes from the session manager."""
    return Codec(backend.ManagerMessage)


def instance_message_codec() -> Codec[instance.InstanceMessage]:
    """What an executor manager decodes from its instances."""
    return Codec(instance.InstanceMessage)


def instance_command_codec() -> Codec[instance.InstanceCommand]:
    """What an instance decodes from its executor manager."""
    return Codec(instance.InstanceCommand)
