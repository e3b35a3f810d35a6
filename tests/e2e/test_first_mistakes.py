"""A new user's first mistakes, each reported in one clear line before the banner (through the test launcher)."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest
from azmlinfsrv_testing.process import ServerStartError
from azmlinfsrv_testing.process import start_server
from azureml_inference_server_http import __version__
from azureml_inference_server_http import constants
from conftest import RESOURCES

pytestmark = pytest.mark.e2e

BANNER = constants.TITLE_TEMPLATE.format(version=__version__)
SERVERS = [
    pytest.param(
        "gunicorn", marks=pytest.mark.skipif(sys.platform == "win32", reason="gunicorn does not run on Windows")
    ),
    "waitress",
]


def failed_start(*args: str, log_dir: Path, port: int | None = None) -> ServerStartError:
    with pytest.raises(ServerStartError) as info:
        start_server(args, cwd=RESOURCES, port=port, log_dir=log_dir)
    assert info.value.returncode is not None, f"the server did not exit:\n{info.value.log}"
    return info.value


@pytest.mark.parametrize("server", SERVERS)
def test_missing_entry_script_is_named_before_the_banner(tmp_path: Path, server: str) -> None:
    error = failed_start("--entry_script", "no_such_score.py", "--server", server, log_dir=tmp_path)
    assert error.returncode == 3, error.log
    lines = error.log.splitlines()
    path = os.path.join(os.path.realpath(RESOURCES), "no_such_score.py")
    ours = next(i for i, line in enumerate(lines) if f"Entry script not found: {path}" in line)
    assert ours < 3, error.log
    assert ours < lines.index(BANNER)
    assert "Listening at" not in error.log
    # Upstream's own lines for this failure still follow.
    upstream = [i for i, line in enumerate(lines) if "No such file or directory." in line]
    failed = [i for i, line in enumerate(lines) if "Failed to import user script" in line and path in line]
    assert upstream and failed and ours < upstream[0] < failed[0], error.log


def test_entry_script_that_is_a_folder_is_named_before_the_banner(tmp_path: Path) -> None:
    error = failed_start("--entry_script", "broken", log_dir=tmp_path)
    assert error.returncode == 3, error.log
    lines = error.log.splitlines()
    expected = f"Entry script is a directory, not a Python file: {os.path.realpath(RESOURCES / 'broken')}"
    assert any(expected in line for line in lines[:3]), error.log
    assert "Listening at" not in error.log


def test_missing_model_dir_is_named_before_the_banner_and_the_server_serves(tmp_path: Path) -> None:
    """Upstream serves without its model directory (a script need not load anything): so do we, saying so first."""
    missing = tmp_path / "no_models"
    with start_server(
        ["--entry_script", "valid_score.py", "--model_dir", str(missing)], cwd=RESOURCES, log_dir=tmp_path
    ) as server:
        assert server.score(data="hello").status_code == 200
        log = server.logs()
    lines = log.splitlines()
    ours = next(i for i, line in enumerate(lines) if f"Model directory does not exist: {missing}" in line)
    assert ours < lines.index(BANNER)
    assert "Model directory is not set or does not exist" not in log


def test_unset_model_dir_is_said_in_words(tmp_path: Path) -> None:
    with start_server(["--entry_script", "valid_score.py"], cwd=RESOURCES, log_dir=tmp_path) as server:
        log = server.logs()
    assert "AZUREML_MODEL_DIR is not set" in log
    assert not any(line.rstrip().endswith("does not exist:") for line in log.splitlines()), log


@pytest.mark.parametrize("server", SERVERS)
def test_port_in_use_names_it_and_suggests_port(tmp_path: Path, server: str) -> None:
    # What a normal start of the same server takes here: the bound for giving up on a taken port.
    started = time.monotonic()
    with start_server(["--entry_script", "valid_score.py", "--server", server], cwd=RESOURCES, log_dir=tmp_path):
        normal_start = time.monotonic() - started
    with socket.socket() as holder:
        # Bound, not listening: the launcher's health polls are refused at once instead of waiting on a backlog.
        holder.bind(("127.0.0.1", 0))
        port = int(holder.getsockname()[1])
        started = time.monotonic()
        error = failed_start(
            "--entry_script", "valid_score.py", "--server", server, port=port, log_dir=tmp_path / "taken"
        )
        failed_after = time.monotonic() - started
    assert error.returncode == 1, error.log
    assert f"Cannot listen on 127.0.0.1:{port}: address already in use" in error.log
    assert "choose a free port with --port" in error.log
    assert BANNER not in error.log  # said before the banner; nothing was started
    assert "Connection in use" not in error.log  # not gunicorn's retries
    # Giving up costs at most what starting costs (both are polled every 0.1 s, hence the factor); gunicorn's five
    # retries took over 5 s, several times a normal start.
    assert failed_after < 2 * normal_start, (failed_after, normal_start)
