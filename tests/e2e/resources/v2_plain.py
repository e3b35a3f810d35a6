"""An undecorated run() for the Open Inference Protocol tests: it answers with the JSON object it was given.

``{"fail": ...}`` makes it raise and ``{"sleep": seconds}`` makes it sleep (for the scoring timeout).
"""

import json
import time


def init():
    pass


def run(raw_data):
    document = json.loads(raw_data)
    if "fail" in document:
        raise ValueError("asked to fail")
    if "sleep" in document:
        time.sleep(float(document["sleep"][0]))
    return document
