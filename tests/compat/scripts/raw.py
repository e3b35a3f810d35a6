from azureml_inference_server_http.api.aml_request import rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request):
    kind = request.args.get("kind", "echo")
    if kind == "none":
        return AMLResponse(None, 333)
    if kind == "text":
        return AMLResponse("plain text", 444)
    if kind == "json":
        return AMLResponse("a string", 555, json_str=True)
    if kind == "headers":
        return AMLResponse(None, 200, {"a": "A", "b": "A, B, C", "x-request-id": "overwritten?"})
    if kind == "raise":
        raise ValueError("boom")
    if kind == "stream":
        return AMLResponse((f"chunk {i}\n" for i in range(3)), 200)
    return {"method": request.method, "body": request.get_data(as_text=True), "query": request.query_string.decode()}
