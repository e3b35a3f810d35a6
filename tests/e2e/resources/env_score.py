"""Prints the environment variables a score script sees (docs/compatibility.md#script-environment)."""

import os

NAMES = [
    "AML_APP_ROOT",
    "AZUREML_ENTRY_SCRIPT",
    "AZUREML_MODEL_DIR",
    "AML_APP_INSIGHTS_ENABLED",
    "AML_APP_INSIGHTS_KEY",
    "SERVER_VERSION_LOG_RESPONSE_ENABLED",
    "SERVER_PORT",
    "WORKER_COUNT",
]


def init():
    pass


def run(data):
    values = {name: os.environ.get(name, "__NONE__") for name in NAMES}
    for name, value in values.items():
        print(f"{name}:{value}")
    return values
