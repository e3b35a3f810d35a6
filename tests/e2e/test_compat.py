"""Upstream's observable behaviour through a real azmlinfsrv process (docs/compatibility.md#lifecycle)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path

import pytest
import requests
from conftest import RESOURCES
from conftest import Launcher
from conftest import free_port

pytestmark = pytest.mark.e2e
INSTALLED = metadata.version("azureml-inference-server-http-core")
# compat: upstream 1.5.1 sleeps this long after a failed init() to let telemetry upload, before exiting.
UPLOAD_WAIT = 30.0
LOG_LINE = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} I \[\d+\] "


def test_valid_script_scores_and_logs(launch: Launcher) -> None:
    server = launch("--entry_script", "./valid_score.py")
    response = requests.post(server.url + "/score", data="hello", timeout=10)
    assert response.status_code == 200
    assert response.json()["body"] == "hello"
    assert response.headers["x-ms-server-version"] == f"azmlinfsrv/{INSTALLED}"
    out = server.stdout()
    assert re.search(LOG_LINE + r"azmlinfsrv\.print - Initializing", out)
    lines = [line for line in out.splitlines() if "A new request received~~~" in line]
    assert len(lines) == 1 and lines[0].count("A new request received~~~") == 1
    assert re.search(LOG_LINE + r"azmlinfsrv - POST /score 200 \d+\.\d{3}ms \d+", out)
    assert f"Azure ML Inferencing HTTP server v{INSTALLED}" in out
    assert f"Inferencing HTTP server version: azmlinfsrv/{INSTALLED}" in out
    assert f"Score:          POST  127.0.0.1:{server.port}/score" in out


def test_no_entry_script_exits_1(launch: Launcher) -> None:
    server = launch(wait=False)
    assert server.wait(15) == 1
    assert "Either provide an entry_script using --entry_script" in server.stdout()


@pytest.mark.parametrize(
    ("script", "text"),
    [
        ("missing_score.py", "No such file or directory"),
        ("broken/bad_indent.py", "IndentationError: unindent does not match any outer indentation level"),
        ("broken/import_error.py", "ModuleNotFoundError: No module named 'module_that_does_not_exist'"),
        ("broken/no_init.py", "does not have a init() function defined."),
        ("broken/init_raises.py", "ZeroDivisionError: model file is corrupt"),
    ],
)
def test_startup_failures_exit_3_with_clear_message(launch: Launcher, script: str, text: str) -> None:
    server = launch("--entry_script", script, wait=False)
    assert server.wait(30) == 3, server.logs()
    assert text in server.logs()


def test_init_failure_lists_model_dir_and_exits_without_waiting(launch: Launcher, tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "m1" / "1").mkdir(parents=True)
    (models / "m1" / "1" / "a.pkl").write_text("x")
    started = time.monotonic()
    server = launch("--entry_script", "broken/init_raises.py", "--model_dir", str(models), wait=False)
    assert server.wait(UPLOAD_WAIT + 30) == 3
    # The bound is the wait this proves absent, not a speed: with it, the exit would come after UPLOAD_WAIT.
    assert time.monotonic() - started < UPLOAD_WAIT
    out = server.stdout()
    assert "User's init function failed" in out
    assert "Model Directory Contents:" in out
    assert re.search(r"azmlinfsrv -             a\.pkl", out)


def test_port_in_use_fails_and_first_keeps_serving(launch: Launcher, server_model: str) -> None:
    first = launch("--entry_script", "valid_score.py", model=server_model)
    second = launch("--entry_script", "valid_score.py", port=first.port, model=server_model, wait=False)
    assert second.wait(30) != 0
    if server_model == "waitress":
        assert second.process.returncode == 1
        assert f"Cannot listen on 127.0.0.1:{first.port}" in second.logs()
    assert requests.post(first.url + "/score", timeout=10).status_code == 200


def test_env_vars_seen_by_script_without_flags(launch: Launcher) -> None:
    server = launch("--entry_script", "env_score.py")
    values = requests.post(server.url + "/score", timeout=10).json()
    assert values["AML_APP_INSIGHTS_ENABLED"] == "false"
    assert values["AML_APP_INSIGHTS_KEY"] == "__NONE__"
    assert values["AZUREML_MODEL_DIR"] == "__NONE__"
    assert values["AZUREML_ENTRY_SCRIPT"] == str((RESOURCES / "env_score.py").resolve())
    assert values["AML_APP_ROOT"] == str(RESOURCES)
    assert values["SERVER_PORT"] == str(server.port)
    out = server.stdout()
    assert "Use the --model_dir command line argument to set it." in out
    assert "AZUREML_MODEL_DIR:__NONE__" in out


def test_model_dir_verbatim_and_cli_beats_env(launch: Launcher) -> None:
    server = launch(
        "--entry_script", "env_score.py", "--model_dir", "./my/dir", env={"AZUREML_MODEL_DIR": "./not/good"}
    )
    assert requests.post(server.url + "/score", timeout=10).json()["AZUREML_MODEL_DIR"] == "./my/dir"
    assert "Use the --model_dir command line argument" not in server.stdout()


@pytest.mark.parametrize(("value", "present"), [(None, True), ("true", True), ("false", False), ("notgood", False)])
def test_server_version_header_switch(launch: Launcher, value: str | None, present: bool) -> None:
    env = {} if value is None else {"SERVER_VERSION_LOG_RESPONSE_ENABLED": value}
    server = launch("--entry_script", "valid_score.py", env=env)
    assert ("x-ms-server-version" in requests.post(server.url + "/score", timeout=10).headers) is present


def test_config_file_only(launch: Launcher, tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main_score.py").write_text("def init(): print('from config')\ndef run(d): return 'cfg'\n")
    (tmp_path / "app" / "cfg.json").write_text(
        '{"AZUREML_ENTRY_SCRIPT": "main_score.py", "SCORING_TIMEOUT_MS": 6000, "EXTRA_KEY": false}'
    )
    server = launch("--config_file", "cfg.json", cwd=tmp_path / "app")
    assert requests.post(server.url + "/score", timeout=10).json() == "cfg"
    out = server.stdout()
    assert "Users's init has completed successfully" in out
    assert "Scoring timeout is set to 6000" in out
    assert "Extra keys = ['EXTRA_KEY']" in out
    assert f"Config File: {tmp_path / 'app' / 'cfg.json'}" in out


def test_user_logging_json_override(launch: Launcher, tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text("def init(): print('hi')\ndef run(d): return 1\n")
    (tmp_path / "logging.json").write_text(
        '{"version": 1, "formatters": {"f": {"()": "azureml_inference_server_http.log_config.AMLLogFormatter",'
        ' "fmt": "[%(levelname)s] [%(process)d] %(name)s %(asctime)s | %(message)s"}},'
        ' "handlers": {"h": {"class": "logging.StreamHandler", "formatter": "f", "stream": "ext://sys.stdout"}},'
        ' "loggers": {"azmlinfsrv": {"level": "INFO", "handlers": ["h"], "propagate": false}}}'
    )
    server = launch("--entry_script", "score.py", cwd=tmp_path)
    assert re.search(r"\[INFO\] \[\d+\] azmlinfsrv\.print \d{4}-\d\d-\d\d .* \| hi", server.stdout())


def test_worker_count_and_timeout_banner(launch: Launcher) -> None:
    server = launch("--entry_script", "valid_score.py", env={"WORKER_COUNT": "2", "WORKER_TIMEOUT": "20"})
    out = server.stdout()
    assert "Worker Count: 2" in out
    assert "Worker Timeout (seconds): 20" in out
    pids = {requests.post(server.url + "/score", timeout=10).json()["pid"] for _ in range(40)}
    assert len(pids) >= 1


def test_app_insights_key_validation(launch: Launcher) -> None:
    key = str(uuid.uuid4())
    good = launch("--entry_script", "env_score.py", "--appinsights_instrumentation_key", key)
    out = good.stdout()
    assert "Valid Application Insights instrumentation key provided." in out
    assert "Application Insights Key: AppInsights key provided" in out
    assert "Application Insights Enabled: true" in out
    assert key not in out.split("Server Routes")[0]
    bad = launch("--entry_script", "env_score.py", "--appinsights_instrumentation_key", "my-super-duper-key")
    assert "Invalid Application Insights instrumentation key provided." in bad.stdout()
    assert "Application Insights has been disabled." in bad.stdout()
    assert requests.post(bad.url + "/score", timeout=10).json()["AML_APP_INSIGHTS_ENABLED"] == "false"
    weird = launch(
        "--entry_script", "env_score.py", env={"AML_APP_INSIGHTS_ENABLED": "asdf", "AML_APP_INSIGHTS_KEY": key}
    )
    assert requests.post(weird.url + "/score", timeout=10).json()["AML_APP_INSIGHTS_ENABLED"] == "false"


def test_env_server_port_is_ignored(launch: Launcher) -> None:
    port = free_port()
    server = launch("--entry_script", "valid_score.py", env={"SERVER_PORT": "3535"}, port=port)
    assert f"Server Port: {port}" in server.stdout()


def test_cors_banner_and_headers(launch: Launcher) -> None:
    server = launch("--entry_script", "valid_score.py", "--access_control_allow_origins", "https://a.example, *")
    assert "CORS for the specified origins: Enabling CORS for https://a.example, *" in server.stdout()
    response = requests.post(server.url + "/score", headers={"Origin": "https://b.example"}, timeout=10)
    assert response.headers["Access-Control-Allow-Origin"] == "https://b.example"


def test_separate_health_port(launch: Launcher) -> None:
    health = free_port()
    server = launch(
        "--entry_script", "valid_score.py", "--health_port", str(health), env={"SEPERATE_HEALTH_ENDPOINT": "true"}
    )
    assert f"Health Port: {health}" in server.stdout()
    assert requests.get(f"http://127.0.0.1:{health}/", timeout=10).text == "Healthy"


def test_streaming_chunks_arrive_as_produced(launch: Launcher) -> None:
    server = launch("--entry_script", "streaming_score.py")
    items = ["one", "two", "three"]
    started = time.monotonic()
    arrivals = []
    with requests.post(server.url + "/score", json={"items": items}, stream=True, timeout=10) as response:
        chunks = []
        for chunk in response.iter_content(chunk_size=None):
            chunks.append(chunk.decode())
            arrivals.append(time.monotonic() - started)
    assert "".join(chunks) == "".join(f"item: {item}\n\n" for item in items)
    # Three pauses of 0.3 s before the end, and the first item arrived at least one pause before the last: a
    # buffered response would arrive all at once. (Lower bounds: a loaded machine only makes them larger.)
    assert arrivals[-1] >= 0.85, arrivals
    assert arrivals[-1] - arrivals[0] >= 0.25, arrivals
    assert re.search(r"POST\s/\w+\s\d{3}\s\d+\.\d{3}ms\sN/A", server.stdout())


def test_swagger_generated(launch: Launcher) -> None:
    server = launch("--entry_script", "swagger_score.py")
    doc = requests.get(server.url + "/swagger.json", timeout=10).json()
    assert doc["swagger"] == "2.0"
    assert doc["info"]["title"] == "ML service"
    assert requests.post(server.url + "/score", json={"data": [1, 2, 3]}, timeout=10).json() == [6.0]


def test_python_m_core_module_starts_the_server(launch: Launcher) -> None:
    server = launch("--entry_script", "valid_score.py", python_module="azureml_inference_server_http")
    assert requests.get(server.url + "/", timeout=10).text == "Healthy"


def test_help_exits_0_and_bad_arguments_exit_1() -> None:
    help_run = subprocess.run(
        [sys.executable, "-m", "azmlinfsrv", "--help"], capture_output=True, text=True, timeout=60
    )
    assert help_run.returncode == 0
    for flag in (
        "--entry_script",
        "--model_dir",
        "--port",
        "--health_port",
        "--worker_count",
        "--appinsights_instrumentation_key",
        "--access_control_allow_origins",
        "--config_file",
    ):
        assert flag in help_run.stdout
    for args in (["--port", "0"], ["--worker_count", "0"], ["--bogus", "1"], ["--port"]):
        bad = subprocess.run([sys.executable, "-m", "azmlinfsrv", *args], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1, (args, bad.stdout, bad.stderr)
        assert "Error" in bad.stderr


def test_version_option_prints_the_installed_version() -> None:
    run = subprocess.run([sys.executable, "-m", "azmlinfsrv", "--version"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"azmlinfsrv {INSTALLED}\n"


def test_unambiguous_prefixes_accepted(launch: Launcher) -> None:
    server = launch("--entry", "valid_score.py")
    assert requests.post(server.url + "/score", timeout=10).status_code == 200


def test_keep_alive_connection_reused(launch: Launcher) -> None:
    server = launch("--entry_script", "valid_score.py")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for _ in range(3):
            sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head, re.IGNORECASE).group(1))  # type: ignore[union-attr]
            while len(body) < length:
                body += sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    ("env", "model"),
    [({"WORKER_PRELOAD": "TRUE"}, "gunicorn"), ({}, "waitress")],
)
def test_boot_failure_exit_code_is_3_in_launcher_process(launch: Launcher, env: dict[str, str], model: str) -> None:
    server = launch("--entry_script", "broken/init_raises.py", env=env, model=model, wait=False)
    assert server.wait(30) == 3, server.logs()


def test_preload_runs_init_once_in_master(launch: Launcher, tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text(
        "import os\npids = []\ndef init():\n    print(f'init in {os.getpid()}')\ndef run(d): return os.getpid()\n"
    )
    server = launch("--entry_script", "score.py", "--worker_count", "2", env={"WORKER_PRELOAD": "true"}, cwd=tmp_path)
    assert requests.post(server.url + "/score", timeout=10).status_code == 200
    assert server.stdout().count("init in ") == 1
    assert f"init in {server.process.pid}" in server.stdout()


def test_missing_debugpy_is_one_clear_error(launch: Launcher) -> None:
    try:
        import debugpy  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("debugpy is installed here")
    server = launch("--entry_script", "valid_score.py", env={"AZUREML_DEBUG_PORT": "5678"}, wait=False)
    assert server.wait(15) == 1
    assert "debugpy is not installed" in server.logs()
