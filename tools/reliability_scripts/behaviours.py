"""Score script for ``tools/reliability_figures.py``: the request body selects what run() does.

The body is a JSON object with an ``op``: ``echo`` returns the body as received, ``sleep`` waits ``seconds``
(``time.sleep``, which releases the GIL), ``spin`` runs a pure Python loop for ``seconds`` (holding the GIL), and
``exit`` ends the process with ``os._exit(code)``. run() is plain and undecorated so that upstream 1.5.1, which
passes the POST body as a string, runs it as our server does.
"""

import json
import os
import time


def init():
    pass


def run(data):
    request = json.loads(data) if isinstance(data, (str, bytes)) and data else (data or {})
    op = request.get("op", "echo")
    if op == "sleep":
        time.sleep(min(float(request.get("seconds", 0)), 30.0))
    elif op == "spin":
        deadline = time.monotonic() + min(float(request.get("seconds", 0)), 30.0)
        while time.monotonic() < deadline:
            pass
    elif op == "exit":
        os._exit(int(request.get("code", 3)))
    return {"echo": data, "op": op, "pid": os.getpid()}
