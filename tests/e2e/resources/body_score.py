"""Answers with the length and first byte of the request body, after sleeping the seconds in ``X-Sleep``."""

import time

from azureml.contrib.services.aml_request import rawhttp


def init():
    pass


@rawhttp
def run(request):
    body = request.get_data()
    time.sleep(float(request.headers.get("X-Sleep", "0")))
    return {"length": len(body), "first": body[:1].decode("latin-1")}
