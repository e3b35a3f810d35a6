"""A score script that imports a module this environment does not have."""

import json

import module_that_does_not_exist  # noqa: F401


def init():
    pass


def run(data):
    return json.loads(data)
