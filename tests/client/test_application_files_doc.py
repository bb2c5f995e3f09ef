"""The application YAML format is documented (docs/applications.md) and its example registers.

Before, the format of `flmctl register -f` was written down nowhere: users had to read
`flamed/cli/application_files.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flamed.cli.application_files import read_applications
from protocol.types import ApplicationSpec

pytestmark = pytest.mark.timeout(10)

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_spec_field_is_documented() -> None:
    """A field added to ApplicationSpec must get its row in docs/applications.md."""
    text = (DOCS / "applications.md").read_text()
    missing = [name for name in ApplicationSpec.__struct_fields__ if f"| `{name}` |" not in text]
    assert not missing, f"docs/applications.md does not document {missing}"


def test_the_example_file_parses_with_every_field_used() -> None:
    """The example is a real file flmctl accepts, and together its documents use every field."""
    applications = read_applications(str(DOCS / "examples" / "applications.yaml"))
    assert [name for name, _ in applications] == ["echo", "summarize"]
    used = {field for _, spec in applications for field in spec.__struct_fields__ if getattr(spec, field)}
    unused = set(ApplicationSpec.__struct_fields__) - used - {"shim", "image", "url", "installer"}
    assert not unused, f"the example uses no {sorted(unused)}"
