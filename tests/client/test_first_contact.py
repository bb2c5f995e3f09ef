"""A client that reaches nothing says so within seconds, in one line, not after its timeout.

Before, a wrong endpoint took the whole client timeout (30 s) to fail: flmctl and flmping
waited, the SDK raised a bare "no reply" after it. Now the first contact has its own short
deadline (`client.connect_timeout`, 3 s) and a key the session manager refuses fails at once.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from flamed.client import Connection, FlameError, FlameErrorCode
from tests.integration.test_security import Keys
from tests.support.daemons import REPO, Daemons, free_port

pytestmark = pytest.mark.timeout(60)


@pytest.mark.integration
def test_flmctl_with_nothing_listening_fails_fast_with_one_line() -> None:
    """`flmctl --endpoint <nothing listening> list -n`: exit 1, one line saying nothing answers,
    no traceback; well before the 30 s client timeout (the subprocess would time out first)."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "flamed.cli.flmctl", "--endpoint", endpoint, "list", "-n"],
        capture_output=True,
        text=True,
        timeout=15,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"nothing answers at {endpoint}" in lines[0], lines[0]


def test_sdk_names_the_endpoint_and_what_to_check() -> None:
    """The SDK raises INVALID_CONFIG (flamepy's code for an unreachable cluster) after the
    connect timeout, naming the endpoint and the three places it comes from."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(FlameError) as raised:
        Connection(endpoint, timeout=30.0, config_path=None).close()
    assert raised.value.code is FlameErrorCode.INVALID_CONFIG
    assert f"nothing answers at {endpoint}" in raised.value.message
    assert "FLAME_ENDPOINT" in raised.value.message
    print(f"failed after {time.monotonic() - started:.2f}s")


@pytest.mark.integration
def test_a_refused_key_is_told_at_once_not_after_the_timeout() -> None:
    """With CURVE, a client whose key is not in the allow-list learns that the handshake was
    refused (it used to wait for the request timeout with no hint of why)."""
    d = Daemons()
    try:
        keys = Keys(d)
        d.start_session_manager()
        config = d.dir / "mallory.toml"
        config.write_text(
            f'[security]\ncurve = true\nserver_public_key = "{keys.dir}/server.key"\n'
            f'client_secret_key = "{keys.dir}/mallory.key_secret"\n[client]\nconnect_timeout = 20.0\n'
        )
        with pytest.raises(FlameError) as raised:
            Connection(d.frontend, timeout=30.0, config_path=str(config)).close()
        assert "refused this client in the security handshake" in raised.value.message, raised.value.message
        assert "allow_dir_clients" in raised.value.message
    finally:
        print(d.dump_logs())
        d.cleanup()
