"""Side-by-side req/s of the hello workload through ``/score`` and through the Open Inference Protocol's infer route.

One ``azmlinfsrv`` (this checkout's, from the running interpreter's environment) serves ``workloads/hello.py`` on a free
127.0.0.1 port; each round drives ``/score`` and then ``/v2/models/hello/infer`` (alternating which goes first) for the
same number of seconds from client processes holding keep-alive connections, and prints the ratio V2 / score. Run from
the checkout root:

    python benchmarks/v2_vs_score.py --rounds 5 --duration 5
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from azmlinfsrv_testing.process import start_server

HERE = Path(__file__).resolve().parent
SCORE_BODY = b"{}"
V2_BODY = json.dumps({"inputs": [{"name": "data", "shape": [1], "datatype": "INT64", "data": [1]}]}).encode()
TARGETS = {"score": ("/score", SCORE_BODY), "v2": ("/v2/models/hello/infer", V2_BODY)}


def _drive(port: int, path: str, body: bytes, seconds: float, results: Any) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/json"}
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"{path} answered {response.status}")
        done += 1
    results.put(done)


def measure(port: int, target: str, seconds: float, clients: int) -> float:
    path, body = TARGETS[target]
    results: Any = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=_drive, args=(port, path, body, seconds, results)) for _ in range(clients)
    ]
    for worker in workers:
        worker.start()
    total = sum(results.get(timeout=seconds + 30) for _ in workers)
    for worker in workers:
        worker.join()
    return total / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--server", default="gunicorn")
    args = parser.parse_args()
    ratios = []
    with start_server(["--entry_script", str(HERE / "workloads" / "hello.py"), "--server", args.server]) as server:
        for target in TARGETS:  # warm up both paths
            measure(server.port, target, 1.0, args.clients)
        for round_number in range(args.rounds):
            order = list(TARGETS) if round_number % 2 == 0 else list(reversed(TARGETS))
            rates = {target: measure(server.port, target, args.duration, args.clients) for target in order}
            ratio = rates["v2"] / rates["score"]
            ratios.append(ratio)
            print(
                f"round {round_number + 1}: score {rates['score']:.0f} req/s, v2 {rates['v2']:.0f} req/s, {ratio:.3f}"
            )
    median = statistics.median(ratios)
    print(f"v2 / score req/s, {args.rounds} rounds: min {min(ratios):.3f}, median {median:.3f}, max {max(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
