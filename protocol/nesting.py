"""How deep a MessagePack payload nests, found without recursing.

msgspec decodes nested arrays and maps by recursion, guarded only by the interpreter's recursion
limit (and on Python 3.12 and 3.13 by a C recursion limit of several thousand levels). A peer
could therefore make a decode raise `RecursionError` with a 1 KB frame, or, on a thread with a
small stack, overflow the C stack. Nothing in our protocol nests more than a handful of levels,
so every payload is checked against `MAX_DEPTH` before msgspec sees it (codec.py).

Two cheap bounds settle most payloads, each sound on its own: a payload of at most `limit`
bytes cannot nest deeper (one byte per level at least), nor can one with at most `limit` bytes
that could be array or map headers (counted by one C-speed `bytes.translate`, about 0.5 ns a
byte). Between these and the exact walk, the codec tries a strict decode (shapes.py). The walk
goes token by token in Python, skipping string and binary bodies by their declared lengths, so
it costs per token, not per byte.

Truncated or malformed payloads are not judged here: the walk stops where the bytes stop making
sense and leaves the error to the decoder, which reads the same bytes in the same order and so
never gets deeper than the walk went.
"""

from __future__ import annotations

#: Deepest nesting of arrays and maps a frame may have (the top-level map is level 1). Our
#: messages need about 6; the margin is for fields added by newer peers (which older ones skip).
#: Python's default recursion limit is 1000; msgspec gives up near it.
MAX_DEPTH = 128

#: Largest payload whose header bytes are counted: beyond it the count costs more (2 ns a byte
#: on binary data) than the strict decode that comes next.
_COUNT_AT_MOST = 32 * 1024

_CONTAINERS = bytes([*range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF])
_NOT_CONTAINERS = bytes(b for b in range(256) if b not in _CONTAINERS)

# Per lead byte: the size of a token whose size the lead byte alone gives (0: anything else).
_FIXED = [0] * 256
for _b in (*range(0x80), *range(0xE0, 0x100), 0xC0, 0xC2, 0xC3):
    _FIXED[_b] = 1  # fixints, nil, false, true
for _b in range(0xA0, 0xC0):
    _FIXED[_b] = 1 + (_b - 0xA0)  # fixstr
for _b, _size in (
    (0xCC, 2), (0xD0, 2), (0xCD, 3), (0xD1, 3), (0xCA, 5), (0xCE, 5), (0xD2, 5),
    (0xCB, 9), (0xCF, 9), (0xD3, 9),  # floats, ints
    (0xD4, 3), (0xD5, 4), (0xD6, 6), (0xD7, 10), (0xD8, 18),  # fixext 1, 2, 4, 8, 16
):  # fmt: skip
    _FIXED[_b] = _size
# str8/16/32, bin8/16/32: (bytes of the length field, extra bytes before the body)
_SIZED = {0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0), 0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0)}
_SIZED.update({0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1)})  # ext8/16/32: a type byte
# array16/32, map16/32: (bytes of the count field, elements per counted item)
_COUNTED = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}


def bounded(payload: bytes, limit: int = MAX_DEPTH) -> bool:
    """True if a cheap bound shows that `payload` nests at most `limit` levels deep; False
    says nothing (ask `too_deep`)."""
    size = len(payload)
    if size <= limit:
        return True
    return size <= _COUNT_AT_MOST and len(payload.translate(None, _NOT_CONTAINERS)) <= limit


def too_deep(payload: bytes, limit: int = MAX_DEPTH) -> bool:
    """True if the first value of `payload` nests arrays and maps more than `limit` levels deep
    (the top-level map or array is level 1). Exact; costs about 0.1 us a token."""
    if bounded(payload, limit):
        return False
    fixed, sized, counted = _FIXED, _SIZED, _COUNTED
    pos = 0
    enclosing: list[int] = []  # elements still to come in each enclosing container
    left = 1  # elements still to come in the innermost open container (the top level: one)
    try:
        while True:  # every token takes a byte at least: this ends
            lead = payload[pos]  # IndexError at the end: truncated, the decoder says so
            step = fixed[lead]
            if step:  # the common case first: a scalar in a container with more to come
                pos += step
                left -= 1
                if left:
                    continue
            elif 0x80 <= lead <= 0x9F or lead in counted:  # fixmap, fixarray; map16/32, array16/32
                if len(enclosing) >= limit:
                    return True
                if lead <= 0x9F:
                    pos += 1
                    count = (lead & 0x0F) * 2 if lead < 0x90 else lead & 0x0F
                else:
                    width, per_item = counted[lead]
                    count = int.from_bytes(payload[pos + 1 : pos + 1 + width], "big") * per_item
                    pos += 1 + width
                left -= 1
                if count:
                    enclosing.append(left)
                    left = count
                    continue
            elif lead in sized:  # str, bin, ext with a length field
                width, extra = sized[lead]
                pos += 1 + width + extra + int.from_bytes(payload[pos + 1 : pos + 1 + width], "big")
                left -= 1
                if left:
                    continue
            else:  # 0xC1 is never used: malformed, the decoder says so
                return False
            while not left:
                if not enclosing:
                    return False  # the first value is complete
                left = enclosing.pop()
    except IndexError:
        return False
