"""Streaming a response while it is produced: run() returns ``AMLResponse(generator, status)``.

A stand-in for a text-generation model: it "generates" the words of the prompt one at a time and sends each as a
server-sent event (``text/event-stream``), so clients see the first words at once instead of waiting for the
whole answer. The server sends the body with chunked transfer encoding and flushes every yielded piece.

The scoring timeout (``SCORING_TIMEOUT_MS``) covers run() itself, which returns at once here; the generator runs
afterwards, while the body is sent, so bound its work yourself (``MAX_WORDS`` and ``MAX_DELAY`` below).

Run it from the repository root::

    azmlinfsrv --entry_script examples/streaming/score.py
    curl -sN localhost:5001/score -d '{"prompt": "words arrive one at a time", "delay": 0.2}'
"""

import json
import time

from azureml_inference_server_http.api.aml_response import AMLResponse

MAX_WORDS = 1000
MAX_DELAY = 1.0


def init():
    """A real model would be loaded here."""


def _events(words, delay):
    for index, word in enumerate(words):
        if index:
            time.sleep(delay)  # the "model" thinking about the next word
        yield f"data: {json.dumps({'index': index, 'token': word})}\n\n"
    yield "data: [DONE]\n\n"


def run(raw_data):
    try:
        request = json.loads(raw_data)
        words = str(request["prompt"]).split()[:MAX_WORDS]
        delay = min(max(float(request.get("delay", 0.05)), 0.0), MAX_DELAY)
    except (ValueError, TypeError, KeyError):
        return AMLResponse({"message": 'Expects {"prompt": "<text>", "delay": <seconds>}'}, 400, json_str=True)
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    return AMLResponse(_events(words, delay), 200, headers)
