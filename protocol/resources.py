"""The string form of a resource requirement, as Flame writes it: "cpu=1,mem=2Gi,gpu=0".

Keys are case-insensitive `cpu`, `mem` or `memory`, `gpu`; sizes take binary units
(K, KB, Ki, KiB, M.., G.., T.., P..; 1G = 2**30); a plain number is bytes. Omitted keys take
the defaults of `ResourceRequirement`.
"""

from __future__ import annotations

from protocol.types import ResourceRequirement, parse_size

__all__ = ["format_resreq", "format_size", "parse_resreq", "parse_size"]


def parse_resreq(text: str) -> ResourceRequirement:
    """Parse "cpu=N,mem=SIZE,gpu=N"; raises ValueError naming the bad entry. The parser lives
    with the type (`ResourceRequirement.from_string`, flamepy's name), so that types.py and this
    module are not an import cycle."""
    return ResourceRequirement.from_string(text)


def format_size(size: int) -> str:
    for unit, factor in (("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size >= factor:
            return f"{size // factor}{unit}"
    return f"{size}B"


def format_resreq(resreq: ResourceRequirement) -> str:
    return f"cpu={resreq.cpu},mem={format_size(resreq.memory)},gpu={resreq.gpu}"
