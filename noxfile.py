"""Every automation of the project: lint, typecheck, tests, core_only, release, docs_tests, and on demand more.

``python3 tools/run_nox.py`` runs the default sessions (what CI runs) with pinned nox and uv, on any Python 3.10+;
``python3 tools/run_nox.py -s NAME`` runs one (plain ``nox`` works too where it is installed). Local packages are
always installed from this checkout, editable in one resolver call or as the wheels that ``release`` builds, so the
index's ``azureml-inference-server-http`` (upstream) is never used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
PYTHONS = nox.project.python_versions(PYPROJECT)
DEFAULT_PYTHON = "3.11"
PACKAGES = ("core", "cli", "appinsights", "testing", "otel")
DEV = PYPROJECT["dependency-groups"]["dev"]
DOCS_TEST_DEPS = ("kubernetes-validate", "pyyaml")
# The unit and end-to-end suites spread over the cores (pytest-xdist): most of their time is spent waiting on
# servers, sockets and sleeps, not computing. Every time bound in them is relative to a baseline measured in the same
# test, so they hold with a neighbour test running.
PARALLEL = ("--numprocesses", "auto", "--maxprocesses", "4")
# A real Open Inference Protocol client for the V2 end-to-end tests.
E2E_TEST_DEPS = ("tritonclient[http]>=2.40",)
DIST = ROOT / "dist"
# Run in the release environment: every package must come from the installed wheels, not from this checkout.
IMPORTED_FROM_SITE_PACKAGES = """
import importlib, pathlib, sys
root = pathlib.Path.cwd().resolve()
for name in ("azureml_inference_server_http", "azmlinfsrv", "azmlinfsrv_appinsights", "azmlinfsrv_testing",
             "azmlinfsrv_otel"):
    path = pathlib.Path(importlib.import_module(name).__file__).resolve()
    if root in path.parents and ".nox" not in path.parts:
        sys.exit(f"{name} is imported from the checkout ({path}), not from the installed wheel")
"""

# uv creates and fills an environment in seconds where venv and pip take a minute; venv where uv is missing.
nox.options.default_venv_backend = "uv|venv"
# uv must use the interpreters installed here, never download one: the suite tests the Pythons users have.
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")
nox.options.reuse_existing_virtualenvs = True
# CI must test every supported Python; a developer without some of them gets those sessions skipped.
nox.options.error_on_missing_interpreters = bool(os.environ.get("CI"))


def _expose_pyenv_versions() -> None:
    """pyenv's shims only run versions that are selected; select every installed one, the current ones first."""
    if not shutil.which("pyenv"):
        return
    try:
        current = subprocess.run(["pyenv", "version-name"], capture_output=True, text=True, check=True).stdout
        installed = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return
    names = [*current.strip().split(":"), *installed.split()]
    os.environ["PYENV_VERSION"] = ":".join(dict.fromkeys(name for name in names if name))


_expose_pyenv_versions()


def install_local(session: nox.Session, *packages: str, extra: tuple[str, ...] = ()) -> None:
    """Install local packages (editable) and the dev dependencies with one pip call."""
    args: list[str] = []
    for package in packages:
        args += ["-e", str(ROOT / "packages" / package)]
    session.install(*args, *DEV, *extra)


@nox.session(python=DEFAULT_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff, and one version for all six distributions."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("python", "tools/check_versions.py")


@nox.session(python=DEFAULT_PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on every package's src/."""
    install_local(session, *PACKAGES, extra=("mypy>=1.10", "types-waitress", "types-psutil"))
    session.run("mypy", *(f"packages/{p}/src" for p in PACKAGES))


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Unit tests of every package, on every supported Python."""
    install_local(session, *PACKAGES)
    session.run("pytest", *PARALLEL, *(f"packages/{p}/tests" for p in PACKAGES), *session.posargs)


@nox.session(python=DEFAULT_PYTHON)
def core_only(session: nox.Session) -> None:
    """Core and testing alone: proves core imports and works without the front-ends and exporters."""
    install_local(session, "core", "testing")
    for module in ("gunicorn", "waitress", "typer", "opencensus", "opentelemetry"):
        session.run("python", "-c", f"import importlib.util as u, sys; sys.exit(u.find_spec('{module}') is not None)")
    session.run("pytest", "packages/core/tests", *session.posargs)


@nox.session(python=DEFAULT_PYTHON, default=False)
def e2e(session: nox.Session) -> None:
    """Real azmlinfsrv processes over HTTP on 127.0.0.1, from the checkout (CI runs them on the wheels: release)."""
    install_local(session, *PACKAGES, extra=E2E_TEST_DEPS)
    session.run("pytest", *PARALLEL, "tests/e2e", *session.posargs, env={"PYTHONFAULTHANDLER": "1"})


@nox.session(python=DEFAULT_PYTHON, default=False)
def build(session: nox.Session) -> None:
    """sdist and wheel of the six distributions into dist/, checked (twine check --strict, tools/check_dists.py).

    Not a default session of its own: ``release`` requires it, so every default run builds and checks once.
    """
    shutil.rmtree(DIST, ignore_errors=True)
    session.install("build[uv]>=1.2", "twine>=6.1")
    installer = ("--installer", "uv") if shutil.which("uv", path=session.bin) or shutil.which("uv") else ()
    for folder in (ROOT, *(ROOT / "packages" / package for package in PACKAGES)):
        session.run("python", "-m", "build", *installer, "--outdir", str(DIST), str(folder))
    session.run("twine", "check", "--strict", *map(str, sorted(DIST.iterdir())))
    session.run("python", "tools/check_dists.py", str(DIST))


@nox.session(python=DEFAULT_PYTHON, requires=["build"], reuse_venv=False)
def release(session: nox.Session) -> None:
    """What users install: the built wheels alone in a fresh environment, with the e2e, docs and examples tests.

    One install call takes the six wheels (never the checkout, never the index's upstream package) and the test
    dependencies; the session fails if any package would still be imported from the checkout.
    """
    wheels = sorted(str(path) for path in DIST.glob("*.whl"))
    if len(wheels) != len(PACKAGES) + 1:
        session.error(f"expected {len(PACKAGES) + 1} wheels in {DIST}, found {len(wheels)}: run the build session")
    session.install(*wheels, *DEV, *E2E_TEST_DEPS, *DOCS_TEST_DEPS)
    session.run("python", "-c", IMPORTED_FROM_SITE_PACKAGES, silent=True)
    session.run(
        "pytest",
        *PARALLEL,
        "tests/e2e",
        "tests/docs",
        "examples",
        *session.posargs,
        env={"PYTHONFAULTHANDLER": "1"},
    )


@nox.session(python=DEFAULT_PYTHON, default=False)
def compare_upstream(session: nox.Session) -> None:
    """Black-box comparison with upstream 1.5.1 (installed in its own venv); writes docs/compat-report.md."""
    install_local(session, *PACKAGES)
    upstream_venv = ROOT / "tests" / "compat" / ".work" / "upstream-venv"
    if not (upstream_venv / "bin" / "azmlinfsrv").exists():
        session.run(sys.executable, "-m", "venv", str(upstream_venv), external=True)
        session.run(
            str(upstream_venv / "bin" / "pip"),
            "install",
            "--quiet",
            "azureml-inference-server-http==1.5.1",
            external=True,
        )
    session.run(
        "python",
        "tests/compat/compare.py",
        "--upstream",
        str(upstream_venv / "bin" / "azmlinfsrv"),
        "--ours",
        str(Path(session.bin) / "azmlinfsrv"),
        *session.posargs,
    )


@nox.session(python=DEFAULT_PYTHON, default=False)
def upstream_scenarios(session: nox.Session) -> None:
    """Upstream 1.5.1's own end-to-end scenarios, run unmodified against our azmlinfsrv (tests/compat).

    Upstream publishes 1.5.1 as a wheel without its tests, so the source is given:
    ``nox -s upstream_scenarios -- --source <upstream checkout or its .git> --rev 4a7ea9b``.
    """
    # pip: upstream's scenarios import it (uv's environments have none).
    install_local(session, *PACKAGES, extra=("psutil", "pip"))
    session.run("python", "tests/compat/upstream_scenarios.py", *session.posargs)


@nox.session(python=DEFAULT_PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Side by side with upstream 1.5.1 under wrk; writes docs/performance.md (`nox -s bench -- --quick`)."""
    # The harness builds its own venvs for both servers; the session only needs the chart library.
    session.install("matplotlib>=3.7")
    session.run("python", "benchmarks/harness.py", *session.posargs)


@nox.session(python=DEFAULT_PYTHON, default=False)
def docs(session: nox.Session) -> None:
    """The documentation site; --strict turns every warning (a broken link, a page missing from nav) into an error."""
    session.install("mkdocs-material>=9.5")
    session.run("mkdocs", "build", "--strict", "--site-dir", str(ROOT / "site"))


@nox.session(python=DEFAULT_PYTHON, default=False)
def docs_tests(session: nox.Session) -> None:
    """The docs cover every flag, variable and config key; the deploy files and examples match the server.

    From the checkout; CI runs the same tests on the built wheels (release).
    """
    install_local(session, *PACKAGES, extra=DOCS_TEST_DEPS)
    session.run("pytest", *PARALLEL, "tests/docs", *session.posargs)


def _install_atheris(session: nox.Session) -> None:
    """atheris has wheels for the Pythons CI uses; where it cannot be installed the parser targets run under
    hypothesis instead (tests/fuzz/fuzz_main.py), so a failed install is reported, not fatal."""
    session.install("atheris>=2.3", success_codes=[0, 1, 2])


@nox.session(python=DEFAULT_PYTHON, default=False)
def fuzz(session: nox.Session) -> None:
    """schemathesis, atheris, smuggling probes, CORS matrix, secrets sweep (R7, R12-R18); a smoke run by default.

    The long campaign that docs/reliability-fuzz.md publishes:
    ``nox -s fuzz -- --fuzz-long --fuzz-docs docs/reliability-fuzz.md``.
    """
    install_local(session, *PACKAGES, extra=("schemathesis>=4.0",))
    _install_atheris(session)
    session.run("pytest", "tests/fuzz", *session.posargs, env={"PYTHONFAULTHANDLER": "1"})


@nox.session(python=DEFAULT_PYTHON)
def fuzz_smoke(session: nox.Session) -> None:
    """The fast CI subset of `fuzz`: everything but schemathesis, with 2000 executions per parser target."""
    install_local(session, *PACKAGES)
    _install_atheris(session)
    session.run(
        "pytest",
        "tests/fuzz",
        "-m",
        "not schemathesis",
        "--fuzz-runs",
        "2000",
        "--fuzz-seconds",
        "10",
        *session.posargs,
        env={"PYTHONFAULTHANDLER": "1"},
    )


@nox.session(python=DEFAULT_PYTHON, default=False)
def reliability(session: nox.Session) -> None:
    """Reliability figures of every server model next to upstream 1.5.1's; rewrites their section of
    docs/reliability.md (`nox -s reliability`, about 3 minutes; `nox -s reliability -- --long`, about 6)."""
    install_local(session, *PACKAGES)
    session.run("python", "tools/reliability_figures.py", *session.posargs, env={"PYTHONFAULTHANDLER": "1"})
