"""Binary in, binary out with ``@rawhttp``: a float32 tensor as the raw request body.

With ``@rawhttp`` run() receives the HTTP request itself (Flask's request object) for every method, and returns
an ``AMLResponse`` that sets status, headers and body. This script reads the body as little-endian float32
values, applies softmax and answers with the probabilities as raw float32 bytes: no JSON, no base64, the
cheapest way to move tensors. ``GET /score`` describes the protocol; other content types get 415.

Run it from the repository root::

    azmlinfsrv --entry_script examples/rawhttp_binary/score.py
    python -c "import sys, numpy; sys.stdout.buffer.write(numpy.array([1, 2, 3], '<f4').tobytes())" > in.bin
    curl -s localhost:5001/score -H "Content-Type: application/octet-stream" --data-binary @in.bin -o out.bin
"""

import numpy as np
from azureml_inference_server_http.api.aml_request import rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse

OCTET_STREAM = "application/octet-stream"
FLOAT32 = np.dtype("<f4")
MAX_VALUES = 1_000_000


def init():
    """Nothing to load: softmax has no parameters."""


def _error(status, message):
    return AMLResponse({"message": message}, status, json_str=True)


@rawhttp
def run(request):
    if request.method == "GET":
        usage = {
            "request": f"POST little-endian float32 values as {OCTET_STREAM}",
            "response": f"their softmax, little-endian float32, as {OCTET_STREAM}",
        }
        return AMLResponse(usage, 200, json_str=True)
    if request.method != "POST":
        # Raw mode hands HEAD and OPTIONS to run() too; this script only serves GET and POST.
        return _error(405, "Use GET for the protocol description or POST to score.")
    if request.mimetype != OCTET_STREAM:
        return _error(415, f"Expects Content-Type to be {OCTET_STREAM}")
    body = request.get_data(cache=False)
    if not body or len(body) % FLOAT32.itemsize:
        return _error(400, "The body must hold one or more float32 values (4 bytes each).")
    values = np.frombuffer(body, dtype=FLOAT32)
    if values.size > MAX_VALUES or not np.all(np.isfinite(values)):
        return _error(400, f"Expects at most {MAX_VALUES} finite values.")
    shifted = np.exp(values - values.max())
    probabilities = (shifted / shifted.sum()).astype(FLOAT32)
    return AMLResponse(probabilities.tobytes(), 200, {"Content-Type": OCTET_STREAM})
