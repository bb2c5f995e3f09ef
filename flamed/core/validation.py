"""Validation of names and specs coming from clients (Flame's rules). Each function returns
None when the value is acceptable, else the message for an InvalidArgument error.

Rules: a name matches the whole pattern (`re.fullmatch`: a trailing newline is not "the end");
every number a peer sends is checked against a range before anything uses it: floats must be
finite (NaN compares false with everything and slips through a plain `< 0`), integers must lie
inside `RANGES`, and the message names the field and its range. The ranges are far beyond any
real cluster and far below what breaks arithmetic or storage; PROTOCOL.md lists them.
"""

from __future__ import annotations

import json
import math
import os
import re

from protocol.types import ApplicationSpec, ResourceRequirement, SessionSpec

_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
MAX_NAME = 253

#: Inclusive ranges of the numbers in ApplicationSpec and SessionSpec (by field path).
RANGES: dict[str, tuple[int | float, int | float]] = {
    "delay_release": (0.0, 7 * 24 * 3600.0),  # seconds
    "max_instances": (1, 1_000_000),
    "min_instances": (0, 1_000_000),
    "priority": (0, 2**31 - 1),
    "batch_size": (1, 1_000_000),
    "resreq.cpu": (0, 65_536),
    "resreq.memory": (0, 1 << 50),  # bytes: 1 PiB
    "resreq.gpu": (0, 1_024),
}


def check_name(kind: str, name: str) -> str | None:
    if not name:
        return f"{kind} name must not be empty"
    if len(name) > MAX_NAME:
        return f"{kind} name is longer than {MAX_NAME} characters"
    if ".." in name or name[0] in ".-" or _NAME.fullmatch(name) is None:
        return (
            f"{kind} name {name!r} is not valid: use letters, digits, '-', '_' and '.', "
            "not starting with '.' or '-' and without '..'"
        )
    return None


def check_range(field: str, value: float) -> str | None:
    """None when `value` is finite and inside `RANGES[field]`, else the message naming both."""
    low, high = RANGES[field]
    bounds = f"[{_number(low)}, {_number(high)}]"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{field} must be a finite number in {bounds}, got {value}"
    if not low <= value <= high:
        return f"{field} must be in {bounds}, got {value}"
    return None


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _first(*messages: str | None) -> str | None:
    return next((m for m in messages if m is not None), None)


def check_application_spec(spec: ApplicationSpec) -> str | None:
    if spec.working_directory and not os.path.isabs(spec.working_directory):
        return f"working_directory {spec.working_directory!r} must be an absolute path"
    bad = _first(
        check_range("delay_release", spec.delay_release),
        None if spec.max_instances is None else check_range("max_instances", spec.max_instances),
    )
    if bad is not None:
        return bad
    if spec.installer is not None and spec.installer.lower() not in ("python", "binary"):
        return f"installer {spec.installer!r} is not supported; expected python or binary"
    if spec.schema is not None:
        for field in ("input", "output", "common_data"):
            text = getattr(spec.schema, field)
            if text is None:
                continue
            try:
                json.loads(text)
            except ValueError as exc:
                return f"schema.{field} is not valid JSON: {exc}"
    return None


def check_resreq(resreq: ResourceRequirement) -> str | None:
    return _first(
        check_range("resreq.cpu", resreq.cpu),
        check_range("resreq.memory", resreq.memory),
        check_range("resreq.gpu", resreq.gpu),
    )


def check_session_spec(spec: SessionSpec) -> str | None:
    bad = _first(
        check_range("min_instances", spec.min_instances),
        None if spec.max_instances is None else check_range("max_instances", spec.max_instances),
        check_range("priority", spec.priority),
        check_range("batch_size", spec.batch_size),
        None if spec.resreq is None else check_resreq(spec.resreq),
    )
    if bad is not None:
        return bad
    if spec.max_instances is not None and spec.max_instances < spec.min_instances:
        return "max_instances must be >= min_instances"
    return None


def spec_mismatch(existing: SessionSpec, requested: SessionSpec) -> str | None:
    """Flame's open_session check: the fields that define a session must match."""
    for field in ("application", "resreq", "min_instances", "max_instances", "priority"):
        have, want = getattr(existing, field), getattr(requested, field)
        if field == "resreq" and want is None:
            continue
        if have != want:
            return f"{field} differs: existing {have!r}, requested {want!r}"
    return None
