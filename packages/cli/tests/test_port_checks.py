"""A taken port is found before the banner, and gunicorn gives up on one at once instead of retrying for 5 s."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import typer
from azmlinfsrv.launch import LaunchSettings
from azmlinfsrv.launch import address_in_use
from azmlinfsrv.main import _check_ports


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_address_in_use(taken_port: int) -> None:
    assert address_in_use("127.0.0.1", taken_port)
    assert not address_in_use("127.0.0.1", free_port())
    # A host that does not resolve is the server's to report, in its own words.
    assert not address_in_use("no-such-host.invalid", taken_port)


def test_taken_health_port_names_its_own_option(taken_port: int, caplog: pytest.LogCaptureFixture) -> None:
    settings = SimpleNamespace(host="127.0.0.1", port=free_port(), health_port=taken_port)
    with pytest.raises(typer.Exit) as exit_info:
        _check_ports({}, settings)
    assert exit_info.value.exit_code == 1
    assert f"Cannot listen on 127.0.0.1:{taken_port}: address already in use" in caplog.text
    assert "choose a free port with --health_port" in caplog.text


@pytest.mark.skipif(sys.platform == "win32", reason="gunicorn does not run on Windows")
def test_gunicorn_binds_once_and_exits_1(
    taken_port: int, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the launcher's check cannot close: the port is taken between the check and gunicorn's bind."""
    from azmlinfsrv.servers import gunicorn as ours
    from gunicorn import sock as gunicorn_sock

    def no_retry(seconds: float) -> None:
        raise AssertionError(f"gunicorn retried the bind after {seconds} s")

    monkeypatch.setattr(gunicorn_sock.time, "sleep", no_retry)
    settings = LaunchSettings(
        server="gunicorn",
        host="127.0.0.1",
        port=taken_port,
        health_port=None,
        workers=1,
        threads=1,
        worker_timeout=30,
        graceful_timeout=1,
        preload=False,
        access_log=False,
        max_requests=0,
        debug_port=None,
    )
    application = ours.AzmlinfsrvGunicorn(settings)
    caplog.set_level(logging.ERROR, logger="azmlinfsrv")
    with pytest.raises(SystemExit) as exit_info:
        ours._bind_once(application.cfg, logging.getLogger("gunicorn.error"), settings)
    assert exit_info.value.code == 1
    assert f"Cannot listen on 127.0.0.1:{taken_port}: address already in use" in caplog.text
    assert "choose a free port with --port" in caplog.text


def test_sockets_bound_for_the_server_are_not_a_taken_port(taken_port: int) -> None:
    """With systemd socket activation or a gunicorn re-exec, the port is held for this server on purpose."""
    settings = SimpleNamespace(host="127.0.0.1", port=taken_port, health_port=None)
    _check_ports({"LISTEN_FDS": "1"}, settings)
    _check_ports({"GUNICORN_FD": "3"}, settings)
    _check_ports({"GUNICORN_CMD_ARGS": "--reuse-port"}, settings)
    with pytest.raises(typer.Exit):
        _check_ports({}, settings)
