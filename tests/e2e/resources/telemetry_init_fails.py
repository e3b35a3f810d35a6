"""Score script for the telemetry tests: init() raises, so the worker exits after exporting the exception."""


def init():
    raise RuntimeError("telemetry-init-failure-marker")


def run(data):
    return data
