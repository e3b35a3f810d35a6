"""Echoes the request; prints on init and on each request (rawhttp)."""

import os
import time

from azureml_inference_server_http.api.aml_request import rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse


def init():
    print("Initializing")


@rawhttp
def run(request):
    print("A new request received~~~")
    sleep = request.headers.get("sleep-in-sec")
    if sleep:
        time.sleep(float(sleep))
    body = {"body": request.get_data(as_text=True), "pid": os.getpid(), "method": request.method}
    return AMLResponse(body, 200, {"pid": str(os.getpid())}, json_str=True)
