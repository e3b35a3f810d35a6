"""Swagger 2 and OpenAPI 3.0/3.1 documents for ``GET /swagger.json`` (docs/compatibility.md#swagger).

Documents are built as Python objects, once per load, and served as pre-encoded bytes. Unlike upstream, which
substitutes settings into JSON text, a ``"`` or ``\\`` in SERVICE_NAME cannot break start-up
(docs/compatibility.md#generated-swagger).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from .user_script import InputMode
from .user_script import UserScript

logger = logging.getLogger("azmlinfsrv.swagger")

# Accepted ?version= values and the document each one names (exact string comparison, as upstream).
VERSION_ALIASES = {"2": "2", "2.0": "2", "3": "3", "3.0": "3", "3.1": "3.1"}
ALL_VERSIONS = ("2", "3", "3.1")
_INFERENCE_SCHEMA_VERSIONS = {"2.0": "2", "3.0": "3", "3.1": "3.1"}
# User documents looked up in AML_APP_ROOT, first match wins (docs/compatibility.md#user-swagger).
USER_FILES = {
    "2": ("swagger.json", "swagger2.json"),
    "3": ("swagger3.json",),
    "3.1": ("swagger3.1.json",),
}

_HEALTH_DESCRIPTION = "Simple health check endpoint to ensure the service is up at any given point."
_HEALTH_OK = "If service is up and running, this response will be returned with the content 'Healthy'"
_ERROR_DESCRIPTION = "The service failed to execute due to an error."
_SCORE_DESCRIPTION = "Run web service's model and get the prediction output"
_PAYLOAD_DESCRIPTION = "The input payload for executing the real-time machine learning service."
_SCORE_OK = "The service processed the input correctly and provided a result prediction, if applicable."
_BEARER = {
    "type": "apiKey",
    "name": "Authorization",
    "in": "header",
    "description": "For example: Bearer abc123",
}
_ERROR_SCHEMA = {"type": "object", "properties": {"message": {"type": "string"}}}


def service_schemas(script: UserScript) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """ServiceInput, ServiceOutput and the versions run()'s decorators support (also used by openapi.py)."""
    if script.mode is not InputMode.SCHEMA:
        return (
            {"type": "object", "example": {}},
            {"type": "object", "example": {}},
            list(ALL_VERSIONS),
        )
    from inference_schema.schema_util import get_input_schema
    from inference_schema.schema_util import get_output_schema
    from inference_schema.schema_util import get_supported_versions

    supported = [_INFERENCE_SCHEMA_VERSIONS[v] for v in get_supported_versions(script.run)]
    return (
        copy.deepcopy(get_input_schema(script.run)),
        copy.deepcopy(get_output_schema(script.run)),
        supported,
    )


def _v2(name: str, version: str, prefix: str, service_input: Any, service_output: Any) -> dict[str, Any]:
    error = {
        "description": _ERROR_DESCRIPTION,
        "schema": {"$ref": "#/definitions/ErrorResponse"},
    }
    return {
        "swagger": "2.0",
        "info": _info(name, version),
        "schemes": ["https"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": {"Bearer": dict(_BEARER)},
        "paths": {
            f"{prefix}/": {
                "get": {
                    "operationId": "ServiceHealthCheck",
                    "description": _HEALTH_DESCRIPTION,
                    "responses": {
                        "200": {
                            "description": _HEALTH_OK,
                            "schema": {"type": "string"},
                            "examples": {"application/json": "Healthy"},
                        },
                        "default": error,
                    },
                }
            },
            f"{prefix}/score": {
                "post": {
                    "operationId": "RunMLService",
                    "description": _SCORE_DESCRIPTION,
                    "security": [{"Bearer": []}],
                    "parameters": [
                        {
                            "name": "serviceInputPayload",
                            "in": "body",
                            "description": _PAYLOAD_DESCRIPTION,
                            "schema": {"$ref": "#/definitions/ServiceInput"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": _SCORE_OK,
                            "schema": {"$ref": "#/definitions/ServiceOutput"},
                        },
                        "default": error,
                    },
                }
            },
            f"{prefix}/swagger.json": {
                "get": {
                    "operationId": "GetSwaggerSpec",
                    "description": "Get the Swagger specification.",
                    "parameters": [
                        {
                            "name": "version",
                            "in": "query",
                            "required": False,
                            "type": "integer",
                            "enum": [2, 3],
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The Swagger specification.",
                            "schema": {"type": "string"},
                        },
                        "default": error,
                    },
                }
            },
        },
        "definitions": {
            "ServiceInput": service_input,
            "ServiceOutput": service_output,
            "ErrorResponse": dict(_ERROR_SCHEMA),
        },
    }


def _v3(
    openapi: str,
    name: str,
    version: str,
    prefix: str,
    service_input: Any,
    service_output: Any,
) -> dict[str, Any]:
    def error() -> dict[str, Any]:
        schema = {"$ref": "#/components/schemas/ErrorResponse"}
        return {
            "description": _ERROR_DESCRIPTION,
            "content": {"application/json": {"schema": schema}},
        }

    return {
        "openapi": openapi,
        "info": _info(name, version),
        "security": [{"Bearer": []}],
        "paths": {
            f"{prefix}/": {
                "get": {
                    "operationId": "ServiceHealthCheck",
                    "description": _HEALTH_DESCRIPTION,
                    "responses": {
                        "200": {
                            "description": _HEALTH_OK,
                            "content": {"text/plain": {"schema": {"type": "string", "example": "Healthy"}}},
                        },
                        "default": error(),
                    },
                }
            },
            f"{prefix}/score": {
                "post": {
                    "operationId": "RunMLService",
                    "description": _SCORE_DESCRIPTION,
                    "security": [{"Bearer": []}],
                    "requestBody": {
                        "description": _PAYLOAD_DESCRIPTION,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ServiceInput"}}},
                    },
                    "responses": {
                        "200": {
                            "description": _SCORE_OK,
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ServiceOutput"}}},
                        },
                        "default": error(),
                    },
                }
            },
            f"{prefix}/swagger.json": {
                "get": {
                    "operationId": "GetSwaggerSpec",
                    "description": "Get the Swagger specification.",
                    "parameters": [
                        {
                            "name": "version",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "enum": [2, 3]},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The Swagger specification.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "default": error(),
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "ServiceInput": service_input,
                "ServiceOutput": service_output,
                "ErrorResponse": dict(_ERROR_SCHEMA),
            },
            "securitySchemes": {"Bearer": dict(_BEARER)},
        },
    }


def _info(name: str, version: str) -> dict[str, str]:
    return {
        "title": name,
        "description": f"API specification for the Azure Machine Learning service {name}",
        "version": version,
    }


def _read_user_document(app_root: str, version: str) -> bytes | None:
    for file_name in USER_FILES[version]:
        path = os.path.join(app_root, file_name)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
        if document:  # compat: a falsy document ({}, "", 0) is ignored and the generated one served
            logger.info("Loaded user's swagger file for version [%s] from %s", version, path)
            return json.dumps(document).encode("utf-8")
    return None


class SwaggerDocuments:
    """The encoded documents of one loaded script, by canonical version ("2", "3", "3.1")."""

    def __init__(self, documents: dict[str, bytes]) -> None:
        self.documents = documents

    @property
    def versions(self) -> list[str]:
        return [v for v in ALL_VERSIONS if v in self.documents]

    @classmethod
    def build(
        cls,
        script: UserScript,
        app_root: str,
        service_name: str,
        service_version: str,
        path_prefix: str,
        read_user_files: Callable[[str, str], bytes | None] = _read_user_document,
    ) -> SwaggerDocuments:
        stripped = path_prefix.strip("/")
        prefix = f"/{stripped}" if stripped else ""
        service_input, service_output, supported = service_schemas(script)
        documents: dict[str, bytes] = {}
        for version in ALL_VERSIONS:
            user = read_user_files(app_root, version)
            if user is not None:
                documents[version] = user
                continue
            if version not in supported:
                continue
            if version == "2":
                doc = _v2(service_name, service_version, prefix, service_input, service_output)
            else:
                openapi = "3.0.3" if version == "3" else "3.1.0"
                doc = _v3(
                    openapi,
                    service_name,
                    service_version,
                    prefix,
                    service_input,
                    service_output,
                )
            documents[version] = json.dumps(doc).encode("utf-8")
        result = cls(documents)
        available = result.versions
        skipped = [v for v in ALL_VERSIONS if v not in documents]
        if not available:
            logger.info("No swagger is prepared.")
        elif skipped:
            logger.info(
                "Swaggers are prepared for versions [%s] and skipped for versions [%s].",
                ", ".join(available),
                ", ".join(skipped),
            )
        else:
            logger.info(
                "Swaggers are prepared for the following versions: [%s].",
                ", ".join(available),
            )
        return result

    def lookup(self, requested: str | None) -> tuple[int, bytes | str]:
        """Status and body (bytes document, or an error message) for a ``?version=`` value."""
        version = VERSION_ALIASES.get("2" if requested is None else requested)
        supported = ", ".join(self.versions)
        if version is None:
            return (
                404,
                f"Swagger version [{requested}] is not valid. Supported versions: [{supported}].",
            )
        document = self.documents.get(version)
        if document is None:
            return 404, (
                f"Swagger version [{requested}] is not supported for the scoring script. "
                f"Supported swagger versions: [{supported}]."
            )
        return 200, document
