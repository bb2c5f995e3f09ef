"""flmctl and flmping without a cluster: tables, views, YAML files, argument errors, output blocks."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from flamed.cli import flmctl, flmping
from flamed.client import Connection
from protocol import frontend as fe
from protocol.types import (
    Application,
    ApplicationSchema,
    ApplicationSpec,
    ConnectionState,
    Event,
    Executor,
    ExecutorState,
    Node,
    NodeState,
    ResourceRequirement,
    Session,
    SessionSpec,
    SessionState,
    Shim,
)
from tests.client.fake_sm import FakeSessionManager

NOON = 1_700_000_000_000  # 22:13:20 UTC


def _session(sid: str, state: SessionState = SessionState.Open) -> Session:
    spec = SessionSpec(application="app", priority=2, resreq=ResourceRequirement(cpu=2, memory=3 << 30))
    return Session(id=sid, spec=spec, state=state, creation_time=NOON, pending=4, succeed=1)


@pytest.mark.timeout(10)
def test_format_table_is_borderless_with_one_space_padding() -> None:
    """Breaks if the table layout drifts from comfy-table's NOTHING preset."""
    text = flmctl.format_table(["ID", "State"], [("a-long-id", "Open"), ("b", "Closed")])
    assert text.splitlines() == [" ID         State", " a-long-id  Open", " b          Closed"]


@pytest.mark.timeout(10)
def test_session_table_columns_and_order() -> None:
    """Breaks if sessions are not listed Open first then by numeric id, or columns change."""
    sessions = [_session("10", SessionState.Closed), _session("9"), _session("x"), _session("2")]
    lines = flmctl.session_table(sessions).splitlines()
    assert lines[0].split() == [
        "ID",
        "State",
        "App",
        "Resources",
        "Priority",
        "Pending",
        "Running",
        "Succeed",
        "Failed",
        "Created",
    ]
    assert [line.split()[0] for line in lines[1:]][-1] == "10"
    ordered = flmctl.session_table([_session("10"), _session("2", SessionState.Closed), _session("9")])
    assert [line.split()[0] for line in ordered.splitlines()[1:]] == ["9", "10", "2"]
    assert lines[1].split()[1:] == ["Open", "app", "cpu=2,mem=3Gi,gpu=0", "2", "4", "0", "1", "0", "22:13:20"]


@pytest.mark.timeout(10)
def test_application_executor_and_node_tables() -> None:
    """Breaks if list -a/-e/-n columns or missing-value dashes change."""
    app = Application(name="echo", spec=ApplicationSpec(labels=["a", "b"]), creation_time=NOON)
    assert flmctl.application_table([app]).splitlines() == [
        " Name  State    Shim  Tags  Created   Command",
        " echo  Enabled  Host  a, b  22:13:20  -",
    ]
    executor = Executor(id="e1", node="n1", state=ExecutorState.Bound)
    assert flmctl.executor_table([executor]).splitlines()[1].split() == ["e1", "Bound", "-", "n1"]
    node = Node(name="n1", hostname="h", state=NodeState.Ready, capacity=ResourceRequirement(cpu=8, memory=16 << 30))
    lines = flmctl.node_table([node]).splitlines()
    assert lines[0].split() == ["NAME", "HOSTNAME", "STATUS", "CPU", "MEMORY", "ARCH", "OS", "CONNECTION", "HEARTBEAT"]
    assert lines[1].split() == ["n1", "h", "Ready", "8", "16Gi", "-", "-", "-", "-"]
    linked = Node(
        name="n2", hostname="h", state=NodeState.Unknown, connection=ConnectionState.Draining, last_heartbeat_age=2.54
    )
    assert flmctl.node_table([linked]).splitlines()[1].split()[-2:] == ["Draining", "2.5s"]


@pytest.mark.timeout(10)
def test_view_application_and_session() -> None:
    """Breaks if `flmctl view` labels, padding, durations or event lines change."""
    spec = ApplicationSpec(
        shim=Shim.Host,
        command="/bin/svc",
        environments={"A": "1"},
        delay_release=60,
        schema=ApplicationSchema(input='{"type": "string"}'),
    )
    text = flmctl.view_application(Application(name="echo", spec=spec))
    assert "Name:          echo" in text.splitlines()
    assert "Delay Release: 1m" in text.splitlines()
    assert "\tA: 1" in text.splitlines()
    assert "\tInput: string" in text.splitlines()
    assert "\tOutput: -" in text.splitlines()
    session = _session("s1")
    session.events = [Event(code=1001, message="bind failed", creation_time=NOON + 7)]
    lines = flmctl.view_session(session).splitlines()
    assert lines[0] == "Session:       s1"
    assert "Tasks:         4 pending, 0 running, 1 succeed, 0 failed" in lines
    assert lines[-1] == "  22:13:20.007: bind failed (1001)"


@pytest.mark.timeout(10)
def test_format_duration() -> None:
    """Breaks if Delay Release stops reading like Flame's humantime (`1m`)."""
    assert flmctl.format_duration(60) == "1m"
    assert flmctl.format_duration(90) == "1m 30s"
    assert flmctl.format_duration(0.5) == "500ms"


APPS_YAML = """\
metadata:
  name: echo
spec:
  shim: host
  command: /bin/echo-service
  arguments: [--fast]
  labels: [demo]
  environments:
    FOO: bar
  delay_release: 5
  schema:
    input: '{"type": "string"}'
---
metadata:
  name: other
spec:
  shim: WASM
"""


@pytest.mark.timeout(10)
def test_parse_applications_multi_document() -> None:
    """Breaks if Flame's application YAML (multi-doc, any shim case) is not understood."""
    apps = flmctl.parse_applications(APPS_YAML)
    assert [name for name, _ in apps] == ["echo", "other"]
    echo = apps[0][1]
    assert echo.shim is Shim.Host
    assert echo.environments == {"FOO": "bar"}
    assert echo.arguments == ["--fast"]
    assert echo.delay_release == 5.0
    assert echo.schema is not None
    assert echo.schema.input == '{"type": "string"}'
    assert apps[1][1].shim is Shim.Wasm


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("spec: {}\n", "metadata.name is missing"),
        ("metadata: {name: a}\nspec: {shim: jvm}\n", "unknown shim"),
        ("metadata: {name: a}\nspec: {colour: red}\n", "unknown application attribute 'colour'"),
        ("metadata: [\n", "not valid YAML"),
        ("", "holds no application"),
    ],
)
def test_parse_applications_errors(text: str, needle: str) -> None:
    """Breaks if a bad application file gives a traceback or an unhelpful message."""
    with pytest.raises(ValueError, match=needle):
        flmctl.parse_applications(text, "app.yaml")


@pytest.mark.timeout(10)
def test_flmctl_errors_are_one_line_with_the_right_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Breaks if flmctl prints a traceback, an unhelpful line or the wrong exit code for bad
    input: 2 for a command line that does not say what to do, 1 for a request that failed."""
    assert flmctl.main(["list"]) == 2
    assert capsys.readouterr().err == (
        "flmctl list: error: say what to list: -a (applications), -s (sessions), -e (executors) or -n (nodes)\n"
    )
    assert flmctl.main(["register", "-f", str(tmp_path / "missing.yaml")]) == 1
    assert capsys.readouterr().err.startswith("flmctl: error: cannot read ")
    assert flmctl.main(["create", "-a", "app", "-r", "cpu=lots"]) == 2
    assert "bad resource entry" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        flmctl.main([])
    assert exited.value.code == 2


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Connection]:
    fake = FakeSessionManager(f"ipc://{tmp_path}/sm")
    fake.handlers[fe.ListSessions] = lambda r: [fe.SessionsReply(sessions=[_session("s1")])]
    connection = Connection(fake.endpoint, timeout=2.0)
    yield connection
    connection.close()
    fake.stop()


@pytest.mark.timeout(20)
def test_flmctl_commands_against_a_fake_server(conn: Connection) -> None:
    """Breaks if create/close/list print other than Flame's lines."""
    parser = flmctl.build_parser()

    def run(*argv: str) -> str | None:
        args: argparse.Namespace = parser.parse_args(list(argv))
        return flmctl.run_command(conn, args)

    created = run("create", "-a", "app")
    assert created is not None
    assert created.startswith("Session app-")
    assert created.endswith(" was created.")
    assert run("close", "-s", "s1") == "Session s1 was closed."
    listed = run("list", "-s")
    assert listed is not None
    assert listed.splitlines()[1].split()[0] == "s1"


@pytest.mark.timeout(10)
def test_flmping_perf_summary_block() -> None:
    """Breaks if the BENCHMARK RESULTS block drifts from Flame's."""
    lines = flmping.perf_summary(9, 10, 2000).split("\n")
    assert lines == [
        "",
        "=" * 60,
        "BENCHMARK RESULTS",
        "=" * 60,
        "Duration:        2.00s",
        "Succeeded:       9/10",
        "Failed:          1",
        "Throughput:      4.50 tasks/sec",
        "=" * 60,
        "",
    ]


@pytest.mark.timeout(10)
def test_flmping_input_and_argument_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """Breaks if the ping input is not Flame's PingRequest JSON or bad flags reach the cluster."""
    assert flmping.ping_input(None, None) is None
    assert flmping.ping_input(100, "1Mi") == b'{"duration": 100, "memory": "1Mi"}'
    assert flmping.human_count(30000) == "30,000"
    assert flmping.main(["-m", "lots"]) == 1
    assert capsys.readouterr().err.startswith("flmping: error: bad size 'lots'")


@pytest.mark.timeout(10)
def test_session_json_has_every_field() -> None:
    """Breaks if `view -s -o json` drops fields that hold their default value."""
    from protocol.types import Task, TaskState

    text = flmctl.session_json(_session("s1"), [Task(id=1, session_id="s1", state=TaskState.Pending, input=b"hi")])
    data = json.loads(text)
    assert data["spec"]["resreq"] == {"cpu": 2, "memory": 3 << 30, "gpu": 0}
    assert data["running"] == 0
    assert data["tasks"][0]["input"] == "aGk="
    assert data["tasks"][0]["state"] == "Pending"
