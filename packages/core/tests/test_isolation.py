"""Core stays light: importing it (and creating an app) loads no front-end or exporter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

FORBIDDEN = ("gunicorn", "waitress", "typer", "opencensus")


def test_core_imports_no_front_end(tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text("def init(): pass\ndef run(data): return data\n")
    code = textwrap.dedent(
        f"""
        import sys
        from azureml_inference_server_http.server import create_app
        app = create_app(environ={{"AML_APP_ROOT": {str(tmp_path)!r}, "AZUREML_ENTRY_SCRIPT": "score.py"}})
        app.test_client().post("/score", data="{{}}")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r})
        sys.stdout.write("\\n" + ",".join(loaded) + "\\n")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.splitlines()[-1] == ""
    assert "Initializing logger" in result.stdout  # the app really was created


def test_python_m_core_points_to_cli_or_explains() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "azureml_inference_server_http", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        import azmlinfsrv  # noqa: F401
    except ImportError:
        assert result.returncode == 1
        assert "pip install azureml-inference-server-http-cli" in result.stderr
    else:
        assert result.returncode == 0
        assert "--entry_script" in result.stdout


def test_version_is_the_installed_one_and_read_without_importlib_metadata() -> None:
    # The command line reads the version on its start-up path; importlib.metadata would cost it ~11 ms there.
    code = (
        "import sys, azureml_inference_server_http as core\n"
        "sys.stdout.write(core.__version__ + ' ' + str('importlib.metadata' in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout == f"{metadata.version('azureml-inference-server-http-core')} False"
