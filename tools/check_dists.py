"""Checks the built sdists and wheels of the six distributions for what users get when they install them.

``python tools/check_dists.py DIST_DIR``: exactly one wheel and one sdist per distribution, one version for all,
each package wheel with its code, ``py.typed`` and its declared entry points, no tests or caches, the licence file
in every wheel and sdist, and a meta-package that holds no code and pins its siblings exactly. ``twine check``
validates the metadata's syntax; this script checks what the project promises on top of it.
"""

from __future__ import annotations

import configparser
import email.parser
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path


@dataclass(frozen=True)
class Expected:
    """What one distribution's wheel must hold."""

    name: str
    package: str | None  # the import package; None for the code-free meta-package
    entry_points: dict[str, set[str]] = field(default_factory=dict)


EXPECTED = (
    Expected("azureml-inference-server-http", None),
    Expected("azureml-inference-server-http-core", "azureml_inference_server_http"),
    Expected("azureml-inference-server-http-cli", "azmlinfsrv", {"console_scripts": {"azmlinfsrv"}}),
    Expected(
        "azureml-inference-server-http-appinsights",
        "azmlinfsrv_appinsights",
        {"azureml_inference_server_http.telemetry": {"appinsights"}},
    ),
    Expected("azureml-inference-server-http-testing", "azmlinfsrv_testing", {"pytest11": {"azmlinfsrv"}}),
    Expected(
        "azureml-inference-server-http-otel",
        "azmlinfsrv_otel",
        {"azureml_inference_server_http.tracing": {"otel"}},
    ),
)
# Paths that are never part of an installed package.
FORBIDDEN_PARTS = ("tests", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache")
FORBIDDEN_SUFFIXES = (".pyc", ".pyo")
# Each distribution's folder holds a copy of the root licence (a build cannot reach outside its folder).
LICENCE = (Path(__file__).resolve().parent.parent / "LICENSE").read_bytes()


def _file_name(name: str) -> str:
    return name.replace("-", "_")


def _metadata(text: str) -> email.message.Message:
    return email.parser.Parser().parsestr(text)


def check_wheel(path: Path, expected: Expected, version: str) -> list[str]:
    problems: list[str] = []
    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()
        dist_info = f"{_file_name(expected.name)}-{version}.dist-info"
        metadata = _metadata(wheel.read(f"{dist_info}/METADATA").decode())
        licences = [wheel.read(name) for name in names if name.startswith(f"{dist_info}/licenses/")]
        entry_points_text = (
            wheel.read(f"{dist_info}/entry_points.txt").decode() if f"{dist_info}/entry_points.txt" in names else ""
        )
    if metadata["Name"] != expected.name or metadata["Version"] != version:
        problems.append(f"{path.name}: metadata names {metadata['Name']} {metadata['Version']}")
    if not licences or not metadata.get_all("License-File"):
        problems.append(f"{path.name}: no licence file")
    elif any(licence != LICENCE for licence in licences):
        problems.append(f"{path.name}: its licence file differs from the repository's LICENSE")
    if not (metadata.get("License-Expression") or metadata.get("License")):
        problems.append(f"{path.name}: no licence in the metadata")
    for name in names:
        parts = name.split("/")
        if any(part in FORBIDDEN_PARTS for part in parts) or name.endswith(FORBIDDEN_SUFFIXES):
            problems.append(f"{path.name}: must not ship {name}")
    code = [name for name in names if not name.split("/")[0].endswith(".dist-info")]
    if expected.package is None:
        if code:
            problems.append(f"{path.name}: the meta-package must hold no code, found {code[:3]}")
        siblings = {item.name for item in EXPECTED if item.package}
        pinned = {
            requirement.split("==")[0].strip()
            for requirement in metadata.get_all("Requires-Dist") or []
            if requirement.replace(" ", "").endswith(f"=={version}")
        }
        if pinned != siblings:
            problems.append(f"{path.name}: must pin {sorted(siblings)} =={version}, pins {sorted(pinned)}")
    else:
        if f"{expected.package}/__init__.py" not in names:
            problems.append(f"{path.name}: {expected.package}/__init__.py missing")
        if f"{expected.package}/py.typed" not in names:
            problems.append(f"{path.name}: {expected.package}/py.typed missing")
        if any(not name.startswith(f"{expected.package}/") for name in code):
            problems.append(f"{path.name}: files outside {expected.package}/")
    parser = configparser.ConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # entry point names are case-sensitive
    parser.read_string(entry_points_text)
    for group, wanted in expected.entry_points.items():
        declared = set(parser[group]) if parser.has_section(group) else set()
        if not wanted <= declared:
            problems.append(f"{path.name}: entry points {group} {sorted(wanted - declared)} not declared")
    return problems


def check_sdist(path: Path, expected: Expected, version: str) -> list[str]:
    problems: list[str] = []
    top = f"{_file_name(expected.name)}-{version}"
    with tarfile.open(path) as sdist:
        names = sdist.getnames()
    for required in ("pyproject.toml", "PKG-INFO", "LICENSE"):
        if f"{top}/{required}" not in names:
            problems.append(f"{path.name}: {required} missing")
    for name in names:
        if "__pycache__" in name.split("/") or name.endswith(FORBIDDEN_SUFFIXES):
            problems.append(f"{path.name}: must not ship {name}")
    if expected.package and not any(name.endswith(f"/{expected.package}/py.typed") for name in names):
        problems.append(f"{path.name}: {expected.package}/py.typed missing")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    dist = Path(argv[0])
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    problems: list[str] = []
    versions = {path.name.split("-")[1] for path in wheels}
    if len(versions) != 1:
        print(f"expected one version in {dist}, found {sorted(versions) or 'no wheels'}")
        return 1
    version = versions.pop()
    for expected in EXPECTED:
        stem = f"{_file_name(expected.name)}-{version}"
        found_wheels = [path for path in wheels if path.name.startswith(f"{stem}-")]
        found_sdists = [path for path in sdists if path.name == f"{stem}.tar.gz"]
        if len(found_wheels) != 1 or len(found_sdists) != 1:
            problems.append(f"{expected.name}: {len(found_wheels)} wheels and {len(found_sdists)} sdists")
            continue
        problems += check_wheel(found_wheels[0], expected, version)
        problems += check_sdist(found_sdists[0], expected, version)
    if len(wheels) != len(EXPECTED) or len(sdists) != len(EXPECTED):
        problems.append(f"{dist} holds {len(wheels)} wheels and {len(sdists)} sdists, expected {len(EXPECTED)} each")
    for problem in problems:
        print(problem)
    print(f"{len(wheels)} wheels and {len(sdists)} sdists at {version}: " + ("FAILED" if problems else "ok"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
