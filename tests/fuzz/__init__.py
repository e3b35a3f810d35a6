"""Fuzzing and protocol probes (``nox -s fuzz``, ``nox -s fuzz_smoke``); results go to docs/reliability-fuzz.md."""
