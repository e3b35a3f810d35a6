"""run() sleeps for the number of seconds in the body; 'exit' ends the process; 'spin' busy-loops."""

import os
import time


def init():
    pass


def run(data):
    if data == "exit":
        os._exit(3)
    if data == "spin":
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pass
    seconds = float(data or 0)
    time.sleep(seconds)
    return {"slept": seconds, "pid": os.getpid()}
