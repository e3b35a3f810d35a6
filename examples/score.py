"""The README's example: an undecorated score script.

run() receives the request body as a JSON string, e.g. {"data": [1, 2, 3]}, and returns a JSON-serializable
result. init() runs once per worker before the first request.
"""

import json
import os

scale = 1.0


def init():
    global scale
    # A real script loads its model from AZUREML_MODEL_DIR; this one reads an optional scale factor.
    model_dir = os.getenv("AZUREML_MODEL_DIR")
    scale_file = os.path.join(model_dir, "scale.txt") if model_dir else None
    if scale_file and os.path.isfile(scale_file):
        with open(scale_file, encoding="utf-8") as handle:
            scale = float(handle.read().strip())
    print(f"init: scale={scale}")


def run(raw_data):
    data = json.loads(raw_data)["data"]
    return {"result": [value * scale for value in data], "count": len(data)}
