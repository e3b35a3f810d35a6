"""R13: raw-socket request-smuggling probes against gunicorn and waitress.

Pass: never a second response for a smuggled request, never a 5xx, and the connection closed after a request whose
framing is ambiguous (RFC 9112 §6.3). The probes are described in ``smuggling.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Results
from .servers import RESOURCES
from .servers import ServerProcess
from .smuggling import Probe
from .smuggling import probes
from .smuggling import send_probe
from .smuggling import smuggled

SERVERS = ("gunicorn", "waitress")
PROBES = probes()


@pytest.fixture(scope="module", params=SERVERS)
def smuggling_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log_dir = tmp_path_factory.mktemp(f"smuggling-{request.param}")
    with ServerProcess(RESOURCES / "undecorated_score.py", log_dir, server=str(request.param)) as server:
        yield server


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_smuggling_probe(smuggling_server: ServerProcess, probe: Probe, fuzz_results: Results) -> None:
    outcome = send_probe(smuggling_server.port, probe)
    was_smuggled = smuggled(probe, outcome)
    # 501 is what RFC 9112 §6.1 prescribes for a transfer coding the server does not implement.
    server_error = any(status >= 500 and status != 501 for status in outcome.statuses)
    # A server still waiting for body bytes (no response yet) has taken the canary as body: nothing to close.
    kept_open = probe.must_close and bool(outcome.responses) and not outcome.closed
    fuzz_results.add(
        "smuggling",
        {
            "server": smuggling_server.server,
            "probe": probe.name,
            "responses": len(outcome.responses) + outcome.trailing_garbage,
            "statuses": outcome.statuses,
            "closed": outcome.closed,
            "follow_up": outcome.follow_up_status,
            "smuggled": was_smuggled,
            "server_error": server_error,
            "kept_open": kept_open,
        },
    )
    described = (
        f"{probe.name} ({probe.why}) on {smuggling_server.server}: statuses {outcome.statuses}, "
        f"unparsed extra responses {outcome.trailing_garbage}, closed {outcome.closed}, "
        f"follow-up {outcome.follow_up_status} (+{outcome.follow_up_extra})\nsent: {probe.raw!r}"
    )
    if probe.control:
        assert len(outcome.responses) == 2, f"the detector must see both pipelined responses: {described}"
        return
    assert not was_smuggled, f"second response for a smuggled request: {described}"
    assert not server_error, f"5xx for a malformed request (docs/guarantees.md#w4): {described}"
    assert not kept_open, f"connection kept open after a response to ambiguous framing (RFC 9112 §6.3): {described}"


def test_smuggling_server_survives(smuggling_server: ServerProcess, tmp_path: Path) -> None:
    """After every probe the server still answers (runs last in the module: probes are parametrized first)."""
    import requests

    assert requests.get(smuggling_server.url + "/", timeout=5).status_code == 200
