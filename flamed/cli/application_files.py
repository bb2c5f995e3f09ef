"""Flame's application files (`flmctl register -f`, `flmctl update -a`): YAML, one application
per document, each `{metadata: {name}, spec: {...}}`.

Every problem is a ValueError naming the file, the document and what is wrong, so flmctl can
print it as one line and check a file before it connects.
"""

from __future__ import annotations

import yaml

from flamed.client.types import application_spec
from protocol.types import ApplicationSpec


def parse_applications(text: str, source: str = "<file>") -> list[tuple[str, ApplicationSpec]]:
    """Applications in a YAML file of documents `{metadata: {name}, spec: {...}}`; raises
    ValueError naming the file, the document and the problem."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ValueError(f"{source} is not valid YAML: {exc}") from None
    applications = []
    for number, document in enumerate(documents, start=1):
        where = f"{source}, document {number}"
        if not isinstance(document, dict):
            raise ValueError(f"{where}: expected a mapping with metadata and spec")
        metadata = document.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: metadata.name is missing")
        spec = document.get("spec") or {}
        if not isinstance(spec, dict):
            raise ValueError(f"{where}: spec must be a mapping")
        try:
            applications.append((name, application_spec(spec)))
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise ValueError(f"{where} ({name}): {exc}") from None
    if not applications:
        raise ValueError(f"{source} holds no application")
    return applications


def read_applications(path: str) -> list[tuple[str, ApplicationSpec]]:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    return parse_applications(text, path)
