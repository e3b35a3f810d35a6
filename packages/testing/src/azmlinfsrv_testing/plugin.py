"""The pytest plugin (entry point ``pytest11``): the ``azmlinfsrv_*`` fixtures.

Nothing here is autouse and the one hook only acts on tests that use ``azmlinfsrv_server``: the plugin runs inside
users' suites, and a suite that does not ask for these fixtures must behave exactly as without the plugin.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Generator
from collections.abc import Iterator
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from .collector import FakeIngestion
from .factories import ClientFactory
from .factories import PathArg
from .factories import ServerFactory
from .inprocess import InProcessClient
from .otlp import FakeOtlpReceiver
from .process import DEFAULT_START_TIMEOUT
from .process import ServerProcess
from .process import ServerStartError
from .process import start_server

__all__ = ["azmlinfsrv_client", "azmlinfsrv_collector", "azmlinfsrv_otlp", "azmlinfsrv_server"]

ENV_APP_ROOT = "AML_APP_ROOT"
LOG_SECTION_LINES = 200

_servers_key = pytest.StashKey[list[ServerProcess]]()


def _resolve(request: pytest.FixtureRequest, path: PathArg, what: str) -> str:
    """An absolute path; a relative one is looked up next to the test file, then in the working directory."""
    given = Path(os.fspath(path))
    if given.is_absolute():
        if not given.exists():
            raise FileNotFoundError(f"{what} not found: {given}")
        return str(given)
    # Next to the test file first, so a suite passes whatever directory pytest is started from.
    bases = [request.path.parent, Path.cwd()]
    for base in bases:
        candidate = base / given
        if candidate.exists():
            return str(candidate.resolve())
    raise FileNotFoundError(f"{what} {str(given)!r} not found next to the test file ({bases[0]}) or in {bases[1]}")


@pytest.fixture
def azmlinfsrv_client(request: pytest.FixtureRequest) -> Iterator[ClientFactory]:
    """A factory of in-process clients: ``client = azmlinfsrv_client("score.py", model_dir=None, env=None)``.

    The script is loaded and init() runs once per call; ``client.score()``, ``client.health()`` and
    ``client.swagger()`` answer as the server would, without a socket. Clients are closed after the test.
    """
    with contextlib.ExitStack() as clients:

        def factory(
            entry_script: PathArg,
            model_dir: PathArg | None = None,
            env: Mapping[str, str | None] | None = None,
        ) -> InProcessClient:
            __tracebackhide__ = True
            script = _resolve(request, entry_script, "score script")
            models = _resolve(request, model_dir, "model directory") if model_dir is not None else None
            return clients.enter_context(InProcessClient(script, models, env))

        yield factory


@pytest.fixture
def azmlinfsrv_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerFactory]:
    """A factory of real ``azmlinfsrv`` processes on free 127.0.0.1 ports: healthy when returned, stopped after a test.

    ``server = azmlinfsrv_server("score.py", "--worker_count", "2", model_dir=None, env=None, timeout=30)``. Raises
    :class:`ServerStartError` with the server's log when it exits or is not healthy in time. When the test fails, each
    server's log is added to the report.
    """
    servers: list[ServerProcess] = []
    request.node.stash[_servers_key] = servers
    stops = contextlib.ExitStack()

    def factory(
        entry_script: PathArg,
        *flags: str,
        model_dir: PathArg | None = None,
        env: Mapping[str, str | None] | None = None,
        timeout: float = DEFAULT_START_TIMEOUT,
        cwd: PathArg | None = None,
    ) -> ServerProcess:
        __tracebackhide__ = True
        script = _resolve(request, entry_script, "score script")
        args = ["--entry_script", script, *flags]
        if model_dir is not None:
            args += ["--model_dir", _resolve(request, model_dir, "model directory")]
        directory = _resolve(request, cwd, "working directory") if cwd is not None else os.path.dirname(script)
        # The azmlinfsrv command takes the working directory as the app root unless AML_APP_ROOT is set; pinning it
        # keeps a developer's own AML_APP_ROOT from changing what the test loads.
        child_env: dict[str, str | None] = {ENV_APP_ROOT: directory, **(env or {})}
        log_dir = tmp_path_factory.mktemp("azmlinfsrv")
        try:
            server = start_server(args, child_env, directory, timeout, log_dir=log_dir)
        except ServerStartError as exc:
            # Raised afresh so the report shows the test's line and the server's log, not this plugin's frames.
            raise ServerStartError(str(exc), exc.log, exc.returncode, exc.pid) from None
        servers.append(server)
        stops.callback(server.stop)
        return server

    # Every server is stopped, the last started first, even when stopping one of them fails.
    with stops:
        yield factory


@pytest.fixture
def azmlinfsrv_collector() -> Iterator[FakeIngestion]:
    """A fake Application Insights ingestion endpoint on 127.0.0.1, with ``connection_string`` and ``envelopes``.

    Point a server at it with ``env={"AML_APP_INSIGHTS_ENABLED": "true",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": azmlinfsrv_collector.connection_string}``.
    """
    with FakeIngestion() as ingestion:
        yield ingestion


@pytest.fixture
def azmlinfsrv_otlp() -> Iterator[FakeOtlpReceiver]:
    """A fake OpenTelemetry collector (OTLP/HTTP) on 127.0.0.1 that records spans: ``spans``, ``wait_for()``.

    Point a server at it with ``env=azmlinfsrv_otlp.env()``. Needs the ``otlp`` extra
    (``pip install "azureml-inference-server-http-testing[otlp]"``); without it the fixture fails with that command.
    """
    with FakeOtlpReceiver() as receiver:
        yield receiver


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    servers = item.stash.get(_servers_key, None)
    if not servers:
        return
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        # The servers still run (teardown comes later), so their logs hold what they did during the test.
        for server in servers:
            lines = server.logs().splitlines()[-LOG_SECTION_LINES:]
            report.sections.append((f"azmlinfsrv log {server.url} (pid {server.pid})", "\n".join(lines)))
