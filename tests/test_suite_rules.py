"""Rules about the suite itself, checked by reading its source (tests as a specification).

- Every test function has a docstring saying what would break if it failed (STYLE.md habit 9):
  a failing test then tells its reader what is wrong without a trip through its body.
- A fixture name means one type in the whole suite: the same name defined with another type in
  another conftest or module makes a test's signature lie to whoever reads it.
- `wait_for` is defined once (tests/support/waiting.py).

The third rule, "a test that starts a process carries the integration mark", is checked while
the tests run (tests/support/guards.py).
"""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

TESTS = Path(__file__).resolve().parent
#: return annotations a fixture's type is unwrapped from (a generator fixture yields its value)
WRAPPERS = {"Iterator", "Generator", "Iterable", "AsyncIterator", "AsyncGenerator"}


@functools.cache
def sources() -> tuple[tuple[Path, ast.Module], ...]:
    """Every Python file under tests/, parsed (once for the three rules that read them)."""
    return tuple((path, ast.parse(path.read_text(), str(path))) for path in sorted(TESTS.rglob("*.py")))


def functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Functions at module level and in classes (what pytest collects), not nested ones."""
    found: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append(node)
        elif isinstance(node, ast.ClassDef):
            found.extend(n for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))
    return found


def fixture_name(function: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """The name under which `function` is a pytest fixture, or None if it is not one."""
    for decorator in function.decorator_list:
        call = decorator if isinstance(decorator, ast.Call) else None
        target = call.func if call is not None else decorator
        if ast.unparse(target) not in {"pytest.fixture", "fixture"}:
            continue
        for keyword in call.keywords if call is not None else []:
            if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                return str(keyword.value.value)
        return function.name
    return None


def fixture_type(function: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The type a fixture gives its tests: its return annotation, unwrapped from Iterator[T]."""
    annotation = function.returns
    if annotation is None:
        return "?"
    if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value).split(".")[-1] in WRAPPERS:
        inner = annotation.slice
        first = inner.elts[0] if isinstance(inner, ast.Tuple) else inner
        return ast.unparse(first)
    return ast.unparse(annotation)


def test_every_test_says_what_would_break() -> None:
    """Breaks when a test function has no docstring: each must say, in a line or two, what
    would be broken if it failed (listed here with file and line)."""
    missing = [
        f"{path.relative_to(TESTS.parent)}:{function.lineno} {function.name}"
        for path, tree in sources()
        if path.name.startswith("test_")
        for function in functions(tree)
        if function.name.startswith("test") and ast.get_docstring(function) is None
    ]
    assert not missing, f"{len(missing)} tests without a docstring saying what would break:\n" + "\n".join(missing)


def test_a_fixture_name_means_one_type() -> None:
    """Breaks when two fixtures of the same name give their tests different types (as the
    recovery `cluster` once did against the integration one), or a fixture has no return type."""
    types: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path, tree in sources():
        for function in functions(tree):
            name = fixture_name(function)
            if name is not None:
                where = f"{path.relative_to(TESTS.parent)}:{function.lineno}"
                types[name][fixture_type(function)].append(where)
    clashes = {name: dict(by_type) for name, by_type in types.items() if len(by_type) > 1}
    untyped = {name: by_type["?"] for name, by_type in types.items() if "?" in by_type}
    assert not clashes, f"fixture names defined with different types: {clashes}"
    assert not untyped, f"fixtures without a return type: {untyped}"


def test_wait_for_is_written_once() -> None:
    """Breaks when a second `wait_for` is written instead of importing tests/support/waiting.py
    (two copies drift: another default timeout, another failure message)."""
    defined = [
        str(path.relative_to(TESTS.parent))
        for path, tree in sources()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "wait_for"
    ]
    assert defined == ["tests/support/waiting.py"], defined


def test_a_process_started_without_the_integration_mark_fails_the_test(pytester: pytest.Pytester) -> None:
    """Breaks if a test without the integration mark can start a process (directly, or inside
    code that swallows the error) and pass: the fast lane would start daemons again. A bare fork
    (a daemon writing a snapshot off its loop) is allowed; a marked test is left alone (checked
    without starting anything: the guard is not installed)."""
    pytester.makeconftest(
        "import pytest\n"
        "from tests.conftest import _processes_need_the_integration_mark\n"
        "def pytest_configure(config):\n"
        "    config.addinivalue_line('markers', 'integration: starts processes')\n"
    )
    pytester.makepyfile(
        "import os\n"
        "import subprocess\n"
        "import pytest\n"
        "AT_IMPORT = subprocess.Popen._execute_child\n"
        "def test_runs_true():\n"
        "    subprocess.run(['true'], check=True)\n"
        "def test_swallows_it():\n"
        "    try:\n"
        "        subprocess.run(['true'], check=True)\n"
        "    except Exception:\n"
        "        pass\n"
        "def test_forks_without_exec():\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        os._exit(0)\n"
        "    assert os.waitpid(pid, 0)[1] == 0\n"
        "@pytest.mark.integration\n"
        "def test_marked():\n"
        "    assert subprocess.Popen._execute_child is AT_IMPORT\n"
    )
    # The snapshot plugins keep session-wide state that a nested session would clobber.
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:textual-snapshot", "-p", "no:syrupy")
    # test_runs_true fails in its call and its teardown; test_swallows_it passes its call, fails its
    # teardown; test_forks_without_exec and test_marked pass.
    result.assert_outcomes(passed=3, failed=1, errors=2)
    result.stdout.fnmatch_lines(["*test_runs_true starts a process (subprocess.Popen*mark it integration*"])
    result.stdout.fnmatch_lines(["*test_swallows_it starts a process (subprocess.Popen*mark it integration*"])
