"""Strict shapes: a C-speed proof that a payload nests no deeper than our own schema.

msgspec only recurses past our schema while skipping a value it has no type for: an unknown
field, or a key before the "type" tag of a tagged union. A *shape* of a message is a copy of
its Struct where every Struct is strict (`forbid_unknown_fields`), every tagged union is merged
into one untagged Struct with the fields of all its members, and the "type" tag is a plain
field; the top-level message is picked by the tag that our encoder writes first. A payload that
decodes with its shape contains no value msgspec would skip, so the real decoder cannot nest
deeper than the schema does: no depth walk is needed (nesting.py). A payload that does not fit
(a newer peer's field, a tag that is not first, anything odd) is walked instead.

The shape decode builds throw-away objects, so it costs about one real decode: it is the step
for large messages (batches, blobs), after the byte-count shortcuts and before the walk.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any

import msgspec

#: The tag field of our tagged unions (msgspec's default), as MessagePack fixstr bytes.
_TAG_KEY = b"\xa4type"


class Shapes:
    """The strict shape of each member of one tagged union of Structs (one link direction)."""

    def __init__(self, union: Any) -> None:
        self._by_tag: dict[bytes, msgspec.msgpack.Decoder[Any]] = {}
        for member in typing.get_args(union):
            config = member.__struct_config__
            assert config.tag_field == "type", member  # the prefix parse below relies on it
            self._by_tag[str(config.tag).encode()] = msgspec.msgpack.Decoder(_merged((member,)))

    def fits(self, payload: bytes) -> bool:
        """True if `payload` decodes strictly with the shape its leading "type" tag names."""
        decoder = self._by_tag.get(_leading_tag(payload))
        if decoder is None:
            return False
        try:
            decoder.decode(payload)
        except Exception:  # any failure only means: walk it instead
            return False
        return True


def _leading_tag(payload: bytes) -> bytes:
    """The value of the "type" key if it is the first key of the top-level map, else b""."""
    lead = payload[0] if payload else 0
    if 0x81 <= lead <= 0x8F:
        at = 1
    elif lead == 0xDE:
        at = 3
    elif lead == 0xDF:
        at = 5
    else:
        return b""
    if payload[at : at + 5] != _TAG_KEY or len(payload) <= at + 5:
        return b""
    size = payload[at + 5]
    if 0xA0 <= size <= 0xBF:
        return payload[at + 6 : at + 6 + size - 0xA0]
    return b""


@functools.cache
def _merged(members: tuple[type[msgspec.Struct], ...]) -> Any:
    """One strict, untagged Struct with every field of `members`, each optional."""
    fields: dict[str, list[Any]] = {}
    for member in members:
        if member.__struct_config__.tag_field is not None:
            fields.setdefault(member.__struct_config__.tag_field, []).append(str)
        for field in msgspec.structs.fields(member):
            fields.setdefault(field.encode_name, []).append(_strict(field.type))
    specs = []
    for name, kinds in fields.items():
        unique = list(dict.fromkeys(kinds))
        kind = unique[0] if len(unique) == 1 else typing.Union[tuple(unique)]  # noqa: UP007 - built at run time
        specs.append((name, kind | None, None))
    name = "Shape" + "_".join(m.__name__ for m in members[:3])
    # gc=False: throw-away objects without cycles; the garbage collector need not track them
    return msgspec.defstruct(name, specs, kw_only=True, forbid_unknown_fields=True, gc=False)


def _strict(kind: Any) -> Any:
    """`kind` with every Struct replaced by its strict shape."""
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return _merged((kind,))
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        structs = tuple(a for a in args if isinstance(a, type) and issubclass(a, msgspec.Struct))
        others = [_strict(a) for a in args if a not in structs]
        if structs:
            others.append(_merged(structs))
        return typing.Union[tuple(others)]  # noqa: UP007 - built at run time
    if origin is list:
        return types.GenericAlias(list, (_strict(args[0]),))
    if origin is dict:
        return types.GenericAlias(dict, (args[0], _strict(args[1])))
    if origin is not None:
        raise TypeError(f"no strict shape for {kind!r}")  # a new container kind: teach _strict
    # bytes stay bytes: a memoryview saves copying a big blob but costs about 1 us per value, and
    # batches carry many small ones (a CreateTasks of 2,000 inputs: 97 us instead of 27 us)
    return kind
