"""The metrics endpoint serves valid Prometheus text from the daemon's loop, and the counters
move between two scrapes."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request

import pytest

from flamed.config import ConfigError
from flamed.metrics import parse_address, render
from tests.support.daemons import Daemons, free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(120)

SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+-]+$')


def check_exposition(text: str) -> dict[str, float]:
    """Every line is HELP, TYPE or a sample; every sample's family has HELP and TYPE before it;
    counters end in _total. Returns the samples."""
    types: dict[str, str] = {}
    helped: set[str] = set()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge"), line
            assert name in helped, f"TYPE before HELP: {line}"
            types[name] = kind
        else:
            assert SAMPLE.match(line), f"not a sample: {line!r}"
            name = re.split(r"[{ ]", line, maxsplit=1)[0]
            assert name in types, f"sample without TYPE: {line}"
            samples[line.rsplit(" ", 1)[0]] = float(line.rsplit(" ", 1)[1])
    for name, kind in types.items():
        assert (kind == "counter") == name.endswith("_total"), name
    assert text.endswith("\n")
    return samples


def test_render_labels_states_and_types_counters() -> None:
    """Breaks if the Prometheus exposition loses the state label (states at 0 included), a counter's _total
    name, or a gauge's value."""
    text = render({"tasks_pending": 3, "tasks_created_total": 7, "nodes_ready": 1, "storage_log_bytes": 1.5})
    samples = check_exposition(text)
    assert samples['flame_tasks{state="Pending"}'] == 3
    assert samples['flame_tasks{state="Succeed"}'] == 0
    assert samples["flame_tasks_created_total"] == 7
    assert samples["flame_storage_log_bytes"] == 1.5


def test_parse_address() -> None:
    """Breaks if --metrics addresses (host:port, :port, port) are read wrong, or a bad one is not refused
    naming the option."""
    assert parse_address("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_address(":9100") == ("0.0.0.0", 9100)
    assert parse_address("9100") == ("127.0.0.1", 9100)
    with pytest.raises(ConfigError, match="--metrics"):
        parse_address("host:port")


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return str(response.read().decode())


@pytest.mark.integration
def test_session_manager_metrics_move_between_scrapes(daemons: Daemons) -> None:
    """Would break if the endpoint blocked the loop, served a stale copy or broke the format."""
    port = free_port()
    daemons.start_session_manager("--metrics", f"127.0.0.1:{port}")
    em_port = free_port()
    daemons.start_executor_manager("n1", 1, "--metrics", f"127.0.0.1:{em_port}")
    daemons.wait_ready_nodes(1)
    url = f"http://127.0.0.1:{port}/metrics"
    first = check_exposition(wait_for("a scrape", lambda: _scrape(url)))
    with daemons.client() as client:
        for _ in range(5):
            client.call({"type": "Ping"})
    second = check_exposition(_scrape(url))
    assert second["flame_client_requests_total"] >= first.get("flame_client_requests_total", 0) + 5
    assert second["flame_heartbeats_total"] >= first["flame_heartbeats_total"]
    assert second['flame_nodes{state="Ready"}'] == 1
    assert "flame_storage_log_bytes" in second
    if shutil.which("curl"):
        out = subprocess.run(["curl", "-sf", url], capture_output=True, text=True, timeout=10, check=True).stdout
        check_exposition(out)
    em = check_exposition(_scrape(f"http://127.0.0.1:{em_port}/metrics"))
    assert em["flame_node_registered"] == 1
    assert em["flame_node_slots"] == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10):
        pass
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=10)
    caught.value.close()  # its socket, else a later test reports it unclosed
    assert caught.value.code == 404
