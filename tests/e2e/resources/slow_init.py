"""init() takes INIT_SECONDS (default 4) seconds."""

import os
import time


def init():
    time.sleep(float(os.environ.get("INIT_SECONDS", "4")))


def run(data):
    return {"ok": True}
