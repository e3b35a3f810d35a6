"""Answers with the length and first byte of the request body, after sleeping the seconds in ``X-Sleep``.

With ``X-Started: <path>`` run() first creates that file, and with ``X-Wait-For: <path>`` it then waits (30 s at
most) until that file exists: a test knows when run() holds the one slot and keeps it busy for exactly as long as it
needs, however loaded the machine.
"""

import os
import time

from azureml.contrib.services.aml_request import rawhttp


def init():
    pass


@rawhttp
def run(request):
    body = request.get_data()
    started = request.headers.get("X-Started")
    if started:
        open(started, "w").close()
    wait_for = request.headers.get("X-Wait-For")
    if wait_for:
        deadline = time.monotonic() + 30
        while not os.path.exists(wait_for) and time.monotonic() < deadline:
            time.sleep(0.01)
    time.sleep(float(request.headers.get("X-Sleep", "0")))
    return {"length": len(body), "first": body[:1].decode("latin-1")}
