"""Streams one chunk per item, 0.3 s apart."""

import json
import time

from azureml.contrib.services.aml_request import rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    print("Init complete")


@rawhttp
def run(request):
    items = json.loads(request.get_data())["items"]

    def generate():
        for item in items:
            time.sleep(0.3)
            yield f"item: {item}\n\n"

    return AMLResponse(generate(), 200)
