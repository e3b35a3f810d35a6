"""Score script for the telemetry tests: prints in init() and run(), echoes its input, raises on {"fail": ...}."""

import json
import logging


def init():
    print("telemetry-score init print marker")


def run(data):
    payload = json.loads(data)
    logging.getLogger("azmlinfsrv.user_script").info("telemetry-score run log marker")
    if "fail" in payload:
        raise ValueError("telemetry-run-failure-marker")
    print("telemetry-score run print marker")
    return {"echo": payload}
