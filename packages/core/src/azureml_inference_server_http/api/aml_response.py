"""``AMLResponse``: a Flask response that score scripts return to control status, headers and streaming."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flask import Response


class AMLResponse(Response):
    """``AMLResponse(message, status_code, response_headers={}, json_str=False, run_function_failed=False)``.

    * ``message is None`` gives the body ``{}`` as ``application/json``;
    * ``json_str=True`` sends ``json.dumps(message)`` as ``application/json``;
    * otherwise ``message`` is the body: str or bytes as is, an iterable or generator streamed.
    """

    def __init__(
        self,
        message: Any,
        status_code: int | str,
        response_headers: Mapping[str, str] | None = None,
        json_str: bool = False,
        run_function_failed: bool = False,
    ) -> None:
        headers = dict(response_headers or {})
        if message is None:
            super().__init__(json.dumps({}), status=status_code, mimetype="application/json")
        elif json_str:
            super().__init__(json.dumps(message), status=status_code, mimetype="application/json")
        else:
            super().__init__(message, status=status_code)
            # compat: upstream only replaces the default Content-Type for the exact key "Content-Type".
            if "Content-Type" in headers:
                del self.headers["Content-Type"]
        self.headers["x-ms-run-function-failed"] = str(bool(run_function_failed))
        for name, value in headers.items():
            # compat: upstream splits every value on commas and adds each piece as its own header line.
            for piece in value.split(","):
                self.headers.add(name, piece.strip())
