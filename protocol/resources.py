"""The string form of a resource requirement, as Flame writes it: "cpu=1,mem=2Gi,gpu=0".

Keys are case-insensitive `cpu`, `mem` or `memory`, `gpu`; sizes take binary units
(K, KB, Ki, KiB, M.., G.., T.., P..; 1G = 2**30); a plain number is bytes. Omitted keys take
the defaults of `ResourceRequirement`.
"""

from __future__ import annotations

import re

from protocol.types import ResourceRequirement

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgtp]?)(?:i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes in a size such as "512Mi", "1G", "2048"; raises ValueError."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"bad size {text!r}; expected a number with an optional unit such as 512Mi or 2G")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_resreq(text: str) -> ResourceRequirement:
    """Parse "cpu=N,mem=SIZE,gpu=N"; raises ValueError naming the bad entry."""
    fields: dict[str, int] = {}
    for entry in text.split(","):
        key, sep, value = entry.partition("=")
        key = key.strip().lower()
        if not sep or not key or not value.strip() or "=" in value:
            raise ValueError(f"bad resource entry {entry!r} in {text!r}; expected key=value")
        if key == "cpu":
            fields["cpu"] = _count(value, entry)
        elif key in ("mem", "memory"):
            fields["memory"] = parse_size(value)
        elif key == "gpu":
            fields["gpu"] = _count(value, entry)
        else:
            raise ValueError(f"unknown resource {key!r} in {text!r}; expected cpu, mem or gpu")
    return ResourceRequirement(**fields)


def _count(value: str, entry: str) -> int:
    if not value.strip().isdigit():
        raise ValueError(f"bad resource entry {entry!r}; expected a whole number")
    return int(value)


def format_size(size: int) -> str:
    for unit, factor in (("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size >= factor:
            return f"{size // factor}{unit}"
    return f"{size}B"


def format_resreq(resreq: ResourceRequirement) -> str:
    return f"cpu={resreq.cpu},mem={format_size(resreq.memory)},gpu={resreq.gpu}"
