"""The Flame wire contract: msgspec message types, codec and framing (see PROTOCOL.md).

This package imports nothing of ours; daemons, clients and the TUI share it.
"""

from protocol.codec import HEADER, PROTOCOL_VERSION, Codec, FrameError, encode
from protocol.errors import ErrorCode

__all__ = ["HEADER", "PROTOCOL_VERSION", "Codec", "ErrorCode", "FrameError", "encode"]
