"""The fixtures as a user's suite sees them, run with pytester."""

from __future__ import annotations

import builtins
import importlib.util
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytest_plugins = ["pytester", "testing_fixtures"]
pytestmark = pytest.mark.usefixtures("inner_ini")

_no_cli = importlib.util.find_spec("azmlinfsrv") is None


def needs_cli(test: Callable[..., None]) -> Callable[..., None]:
    """Starts real azmlinfsrv processes: marked e2e, skipped without the command."""
    marked: Callable[..., None] = pytest.mark.e2e(
        pytest.mark.skipif(_no_cli, reason="needs the azmlinfsrv command (cli package)")(test)
    )
    return marked


posix = pytest.mark.skipif(sys.platform == "win32", reason="process groups are checked with os.killpg")

BROKEN_INIT = """
def init():
    raise ValueError("h3 broken init marker")

def run(raw_data):
    return {}
"""


def _write(pytester: pytest.Pytester, name: str, source: str) -> Path:
    path = pytester.path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")
    return path


def _environ() -> dict[str, str]:
    # The inner pytest run manages PYTEST_CURRENT_TEST itself.
    return {name: value for name, value in os.environ.items() if name != "PYTEST_CURRENT_TEST"}


def test_plugin_registers_its_fixtures_and_nothing_autouse(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import builtins
        import sys

        def test_untouched(request):
            assert request.config.pluginmanager.hasplugin("azmlinfsrv")
            assert not [name for name in request.fixturenames if name.startswith("azmlinfsrv")]
            # Loading the plugin imports neither Flask nor core's server (which registers module aliases).
            assert "flask" not in sys.modules
            assert "azureml_inference_server_http.server" not in sys.modules
            assert "azureml.contrib.services.aml_request" not in sys.modules
            # Nor the fake OTLP receiver's optional decoder.
            assert not [name for name in sys.modules if name.startswith("opentelemetry")]
            assert builtins.print.__module__ == "builtins"
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    fixtures = pytester.runpytest_subprocess("--fixtures")
    listed = fixtures.stdout.str()
    for name in ("azmlinfsrv_client", "azmlinfsrv_server", "azmlinfsrv_collector", "azmlinfsrv_otlp"):
        assert f"\n{name} -- " in listed


def test_client_fixture_scores_and_restores_the_process(pytester: pytest.Pytester, echo_source: str) -> None:
    _write(pytester, "score.py", echo_source)
    (pytester.path / "models").mkdir()
    pytester.makepyfile(
        """
        import builtins
        import os

        def test_score(azmlinfsrv_client):
            print_before = builtins.print
            client = azmlinfsrv_client("score.py", model_dir="models", env={"H3_FLAG": "on"})
            response = client.score(json={"data": [1, 2, 3]})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["body"] == '{"data": [1, 2, 3]}'
            assert body["seen"]["model_dir"] == os.path.join(os.getcwd(), "models")
            assert body["seen"]["flag"] == body["flag"] == "on"
            assert response.headers["x-ms-run-function-failed"] == "False"
            assert client.health().status_code == 200
            assert client.swagger(version="2").json()["swagger"] == "2.0"
            assert "H3_FLAG" not in os.environ and "H3_SET_BY_INIT" not in os.environ
            assert builtins.print is print_before

        def test_two_clients(azmlinfsrv_client):
            a = azmlinfsrv_client("score.py", env={"H3_FLAG": "a"})
            b = azmlinfsrv_client("score.py", env={"H3_FLAG": "b"})
            assert [a.score(json={}).json()["flag"], b.score(json={}).json()["flag"]] == ["a", "b"]
        """
    )
    environ_before = _environ()
    print_before = builtins.print
    handlers_before = list(logging.getLogger("azmlinfsrv").handlers)
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)
    assert _environ() == environ_before
    assert builtins.print is print_before
    assert logging.getLogger("azmlinfsrv").handlers == handlers_before


def test_client_fixture_finds_scripts_next_to_the_test_file(pytester: pytest.Pytester, echo_source: str) -> None:
    _write(pytester, "suite/score.py", echo_source)
    _write(
        pytester,
        "suite/test_inner.py",
        """
import pytest

def test_relative_to_the_test_file(azmlinfsrv_client):
    assert azmlinfsrv_client("score.py").score(json={}).status_code == 200

def test_missing_script(azmlinfsrv_client):
    with pytest.raises(FileNotFoundError, match="'nope.py' not found next to the test file"):
        azmlinfsrv_client("nope.py")
""",
    )
    result = pytester.runpytest("suite")  # started from the parent directory
    result.assert_outcomes(passed=2)


def test_client_fixture_broken_script_fails_the_test_clearly(pytester: pytest.Pytester) -> None:
    _write(pytester, "score.py", BROKEN_INIT)
    pytester.makepyfile(
        """
        def test_uses_broken(azmlinfsrv_client):
            azmlinfsrv_client("score.py")
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ValueError: h3 broken init marker*", "*UserScriptException*"])


def test_collector_fixture_receives_in_process_telemetry(pytester: pytest.Pytester, echo_source: str) -> None:
    pytest.importorskip("azmlinfsrv_appinsights", reason="needs the appinsights package")
    _write(pytester, "score.py", echo_source)
    pytester.makepyfile(
        """
        from pathlib import Path

        from azmlinfsrv_testing import envelope_kind
        from azmlinfsrv_testing import envelope_properties

        def test_telemetry(azmlinfsrv_client, azmlinfsrv_collector):
            Path("url.txt").write_text(azmlinfsrv_collector.url)
            assert azmlinfsrv_collector.connection_string.startswith("InstrumentationKey=")
            assert azmlinfsrv_collector.envelopes == []
            client = azmlinfsrv_client("score.py", env={
                "AML_APP_INSIGHTS_ENABLED": "true",
                "APPLICATIONINSIGHTS_CONNECTION_STRING": azmlinfsrv_collector.connection_string,
            })
            assert client.score(json={}, headers={"x-request-id": "h3-telemetry"}).status_code == 200
            [request] = azmlinfsrv_collector.wait_for(
                lambda e: envelope_kind(e) == "request" and envelope_properties(e)["Request Id"] == "h3-telemetry",
                timeout=30,
            )
            assert request in azmlinfsrv_collector.envelopes
        """
    )
    handlers_before = {name: list(logging.getLogger(name).handlers) for name in ("azmlinfsrv", "azmlinfsrv.print")}
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    # The client closed the exporter: its log handlers are gone again.
    assert {name: list(logging.getLogger(name).handlers) for name in handlers_before} == handlers_before
    # The collector stopped listening after the test.
    port = int((pytester.path / "url.txt").read_text().rsplit(":", 1)[1])
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))


@needs_cli
@posix
def test_server_fixture_serves_with_flags_and_env_then_stops(pytester: pytest.Pytester, echo_source: str) -> None:
    _write(pytester, "app/score.py", echo_source)
    pytester.makepyfile(
        """
        from pathlib import Path

        def test_server(azmlinfsrv_server):
            server = azmlinfsrv_server("app/score.py", "--threads", "2", env={"H3_FLAG": "srv"})
            Path("pid.txt").write_text(str(server.pid))
            assert server.url.startswith("http://127.0.0.1:")
            response = server.score(json={"data": [1]})
            assert response.status_code == 200, server.logs()
            body = response.json()
            assert body["flag"] == "srv"
            assert body["seen"]["app_root"] == str(Path("app").resolve())
            assert "Worker Threads: 2" in server.logs()
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    pid = int((pytester.path / "pid.txt").read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.killpg(pid, signal.SIGKILL)  # our own server's group: leave nothing running when this test fails
        pytest.fail("the server's process group is still alive after the test")


@needs_cli
def test_server_fixture_fails_with_the_servers_log(pytester: pytest.Pytester) -> None:
    _write(pytester, "score.py", BROKEN_INIT)
    pytester.makepyfile(
        """
        def test_uses_broken(azmlinfsrv_server):
            azmlinfsrv_server("score.py")
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*ServerStartError: azmlinfsrv exited with code *before it was healthy*",
            "*--- azmlinfsrv log*",
            "*ValueError: h3 broken init marker*",
        ]
    )
    # The report points at the test's own line, not at the plugin's internals.
    assert "plugin.py" not in result.stdout.str()


@needs_cli
def test_server_fixture_adds_its_log_to_a_failed_test(pytester: pytest.Pytester, echo_source: str) -> None:
    _write(pytester, "score.py", echo_source)
    pytester.makepyfile(
        """
        def test_fails(azmlinfsrv_server):
            server = azmlinfsrv_server("score.py")
            server.score(json={})
            assert False, "h3 deliberate failure"

        def test_passes(azmlinfsrv_server):
            azmlinfsrv_server("score.py")
        """
    )
    result = pytester.runpytest("-rA")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*azmlinfsrv log http://127.0.0.1:*", "*POST /score 200*"])
    assert result.stdout.str().count("azmlinfsrv log http://") == 1  # only the failed test gets the section
