"""Benchmark workload `rawhttp_bytes`: a `@rawhttp` run() that returns the request body as octet-stream."""

from __future__ import annotations

from typing import TYPE_CHECKING

from azureml_inference_server_http.api.aml_request import rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse

if TYPE_CHECKING:
    # Only for the annotation: the script must import nothing at run time beyond the documented API.
    from azureml_inference_server_http.api.aml_request import AMLRequest


def init() -> None:
    """Nothing to load."""


@rawhttp
def run(request: AMLRequest) -> AMLResponse:
    """Echo the raw bytes: measures body handling without any JSON on either side."""
    return AMLResponse(request.get_data(), 200, {"Content-Type": "application/octet-stream"})
