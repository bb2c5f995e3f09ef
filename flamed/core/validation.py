"""Validation of names and specs coming from clients (Flame's rules). Each function returns
None when the value is acceptable, else the message for an InvalidArgument error."""

from __future__ import annotations

import json
import os
import re

from protocol.types import ApplicationSpec, SessionSpec

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
MAX_NAME = 253


def check_name(kind: str, name: str) -> str | None:
    if not name:
        return f"{kind} name must not be empty"
    if len(name) > MAX_NAME:
        return f"{kind} name is longer than {MAX_NAME} characters"
    if ".." in name or name[0] in ".-" or not _NAME.match(name):
        return (
            f"{kind} name {name!r} is not valid: use letters, digits, '-', '_' and '.', "
            "not starting with '.' or '-' and without '..'"
        )
    return None


def check_application_spec(spec: ApplicationSpec) -> str | None:
    if spec.working_directory and not os.path.isabs(spec.working_directory):
        return f"working_directory {spec.working_directory!r} must be an absolute path"
    if spec.delay_release < 0:
        return "delay_release must be >= 0 seconds"
    if spec.max_instances is not None and spec.max_instances < 1:
        return "max_instances must be >= 1"
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


def check_session_spec(spec: SessionSpec) -> str | None:
    if spec.min_instances < 0:
        return "min_instances must be >= 0"
    if spec.max_instances is not None:
        if spec.max_instances < 1:
            return "max_instances must be >= 1"
        if spec.max_instances < spec.min_instances:
            return "max_instances must be >= min_instances"
    if spec.priority < 0:
        return "priority must be >= 0"
    if spec.resreq is not None and (spec.resreq.cpu < 0 or spec.resreq.memory < 0 or spec.resreq.gpu < 0):
        return "resreq fields must be >= 0"
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
