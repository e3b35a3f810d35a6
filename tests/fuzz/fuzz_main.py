"""Run one fuzz target in this process: ``python fuzz_main.py TARGET --engine atheris|hypothesis ...``.

Each target runs in its own process so that a crash, a hang or a leak in one cannot hide another, and so that each
target loads its own app. The parent (``test_fuzz_parsers.py``) reads the summary this writes to ``--result``.

* atheris: coverage-guided libFuzzer over the instrumented core package, seeded from ``targets.SEEDS``; stops at
  ``--runs`` executions, ``--seconds`` seconds, or the first crash (saved under ``--artifacts``).
* hypothesis: random and mutated byte strings with shrinking; the fallback where atheris is not installable.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def _write(path: str, summary: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(summary), encoding="utf-8")


def run_atheris(name: str, runs: int, seconds: int, artifacts: Path, result: str) -> int:
    import atheris

    with atheris.instrument_imports(include=["azureml_inference_server_http"]):
        import targets
    targets.quiet_logging()
    target = targets.TARGETS[name]
    # Load the app and scripts before fuzzing, so start-up is not counted and cannot be mistaken for a slow input.
    for seed in targets.SEEDS.get(name, []):
        try:
            target(seed)
        except Exception:
            pass
    corpus = Path(tempfile.mkdtemp(prefix=f"azmlinfsrv-fuzz-{name}-"))
    for index, seed in enumerate(targets.SEEDS.get(name, [])):
        (corpus / f"seed-{index}").write_bytes(seed)
    _write(result, {"target": name, "engine": "atheris", "started": time.time()})
    argv = [
        sys.argv[0],
        str(corpus),
        f"-runs={runs}",
        f"-max_total_time={seconds}",
        f"-artifact_prefix={artifacts}{os.sep}{name}-",
        "-max_len=8192",
        "-timeout=20",
        "-rss_limit_mb=3072",
        "-print_final_stats=1",
        "-seed=1",
    ]
    atheris.Setup(argv, target)
    atheris.Fuzz()  # does not return: libFuzzer exits, the parent reads its statistics from stderr
    return 0


def run_hypothesis(name: str, runs: int, seconds: int, artifacts: Path, result: str) -> int:
    import targets
    from hypothesis import HealthCheck
    from hypothesis import Phase
    from hypothesis import example
    from hypothesis import given
    from hypothesis import settings
    from hypothesis import strategies as st

    targets.quiet_logging()
    target = targets.TARGETS[name]
    count = 0
    last: list[bytes] = [b""]

    def one(data: bytes) -> None:
        nonlocal count
        count += 1
        try:
            target(data)
        except Exception:
            # The last failing call is the example hypothesis reports (the shrunk one, replayed at the end).
            last[0] = data
            raise

    started = time.monotonic()
    crashes: list[dict[str, str]] = []
    batch = 0
    while count < runs and time.monotonic() - started < seconds and not crashes:
        size = min(500, runs - count)
        test = given(st.binary(max_size=4096))(one)
        if batch == 0:
            for seed in targets.SEEDS.get(name, []):
                test = example(seed)(test)
        test = settings(
            max_examples=size,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )(test)
        batch += 1
        try:
            test()
        except Exception:
            artifact = artifacts / f"{name}-crash-{batch}"
            artifact.write_bytes(last[0])
            crashes.append({"artifact": str(artifact), "traceback": traceback.format_exc(limit=8)[-4000:]})
    _write(
        result,
        {
            "target": name,
            "engine": "hypothesis",
            "executions": count,
            "seconds": round(time.monotonic() - started, 1),
            "crashes": crashes,
        },
    )
    return 1 if crashes else 0


def parse_libfuzzer(stderr: str) -> dict[str, Any]:
    """Executions and crash details from libFuzzer's output."""
    executions = 0
    match = re.search(r"stat::number_of_executed_units:\s*(\d+)", stderr)
    if match:
        executions = int(match.group(1))
    else:
        done = re.findall(r"Done (\d+) runs", stderr)
        progress = re.findall(r"^#(\d+)\s", stderr, flags=re.MULTILINE)
        executions = int(done[-1]) if done else int(progress[-1]) if progress else 0
    crashed = "Uncaught Python exception" in stderr or "ERROR: libFuzzer" in stderr
    crash_text = ""
    if crashed:
        start = stderr.find("=== Uncaught Python exception")
        crash_text = stderr[start if start >= 0 else max(0, stderr.find("ERROR: libFuzzer") - 200) :][:4000]
    artifacts = re.findall(r"Test unit written to (\S+)", stderr)
    return {"executions": executions, "crashed": crashed, "crash_text": crash_text, "artifacts": artifacts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target")
    parser.add_argument("--engine", choices=("atheris", "hypothesis"), default="atheris")
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--artifacts", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    args.artifacts.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE))
    runner = run_atheris if args.engine == "atheris" else run_hypothesis
    return runner(args.target, args.runs, args.seconds, args.artifacts, args.result)


if __name__ == "__main__":
    sys.exit(main())
