"""Names and defaults shared by the server and its front-ends.

Environment variable names keep upstream's spellings, typos included (``SEPERATE_HEALTH_ENDPOINT``): users'
deployments set them.
"""

from __future__ import annotations

# compat: upstream 1.5.1's forms of the title line (banner, --help) and of x-ms-server-version; like upstream, they
# report the installed version (``azureml_inference_server_http.__version__``), which here is ours.
TITLE_TEMPLATE = "Azure ML Inferencing HTTP server v{version}"
SERVER_VERSION_TEMPLATE = "azmlinfsrv/{version}"

# Settings read by the server (docs/compatibility.md#settings).
ENV_APP_ROOT = "AML_APP_ROOT"
ENV_SOURCE_DIRECTORY = "AZUREML_SOURCE_DIRECTORY"
ENV_ENTRY_SCRIPT = "AZUREML_ENTRY_SCRIPT"
ENV_SERVICE_NAME = "SERVICE_NAME"
ENV_WORKSPACE_NAME = "WORKSPACE_NAME"
ENV_SERVICE_PATH_PREFIX = "SERVICE_PATH_PREFIX"
ENV_SERVICE_VERSION = "SERVICE_VERSION"
ENV_SCORING_TIMEOUT_MS = "SCORING_TIMEOUT_MS"
ENV_LOG_LEVEL = "AZUREML_LOG_LEVEL"
ENV_APP_INSIGHTS_ENABLED = "AML_APP_INSIGHTS_ENABLED"
ENV_APP_INSIGHTS_KEY = "AML_APP_INSIGHTS_KEY"
ENV_APP_INSIGHTS_CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
ENV_MDC_STORAGE_ENABLED = "AML_MDC_STORAGE_ENABLED"
# compat: upstream documents this name but only reads AML_MDC_STORAGE_ENABLED; we accept both.
ENV_MODEL_DC_STORAGE_ENABLED = "AML_MODEL_DC_STORAGE_ENABLED"
ENV_APP_INSIGHTS_LOG_RESPONSE_ENABLED = "APP_INSIGHTS_LOG_RESPONSE_ENABLED"
ENV_CORS_ORIGINS = "AML_CORS_ORIGINS"
ENV_MODEL_DIR = "AZUREML_MODEL_DIR"
ENV_HOSTNAME = "HOSTNAME"
ENV_DEBUG_PORT = "AZUREML_DEBUG_PORT"
ENV_CONFIG_FILE = "AZUREML_CONFIG_FILE"
ENV_SERVER_VERSION = "HTTP_X_MS_SERVER_VERSION"
ENV_SERVER_VERSION_LOG_RESPONSE_ENABLED = "SERVER_VERSION_LOG_RESPONSE_ENABLED"
ENV_DBG_MODEL_INFO = "AML_DBG_MODEL_INFO"
ENV_DBG_RESOURCE_INFO = "AML_DBG_RESOURCE_INFO"

# Settings of the launcher (docs/compatibility.md#cli-environment), read by the CLI.
ENV_SERVER_PORT = "SERVER_PORT"
ENV_HEALTH_PORT = "HEALTH_PORT"
ENV_WORKER_COUNT = "WORKER_COUNT"
ENV_WORKER_TIMEOUT = "WORKER_TIMEOUT"
ENV_WORKER_PRELOAD = "WORKER_PRELOAD"
ENV_SEPARATE_HEALTH_ENDPOINT = "SEPERATE_HEALTH_ENDPOINT"  # compat: upstream's spelling
ENV_TRANSPORT_PROTOCOL = "TRANSPORT_PROTOCOL"

# Our own settings (not in upstream).
ENV_WORKER_THREADS = "WORKER_THREADS"
ENV_MAX_REQUEST_BODY_MB = "MAX_REQUEST_BODY_MB"
ENV_METRICS_ENABLED = "AZMLINFSRV_METRICS_ENABLED"
# The model name of the Open Inference Protocol routes (default: the entry script's file stem).
ENV_MODEL_NAME = "AZMLINFSRV_MODEL_NAME"
ENV_SERVER = "AZMLINFSRV_SERVER"
ENV_HOST = "AZMLINFSRV_HOST"
ENV_GRACEFUL_TIMEOUT = "AZMLINFSRV_GRACEFUL_TIMEOUT"
# Which Microsoft Entra ID credential signs telemetry when the connection string says Authorization=AAD.
ENV_APP_INSIGHTS_CREDENTIAL = "AZMLINFSRV_APPINSIGHTS_CREDENTIAL"

# OpenTelemetry's own variables that turn tracing on (docs/tracing.md); the tracing package reads the others.
ENV_OTEL_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
ENV_OTEL_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ENV_OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"

DEFAULT_APP_ROOT = "/var/azureml-app"
DEFAULT_SERVICE_NAME = "ML service"
DEFAULT_SERVICE_VERSION = "1.0"
DEFAULT_SCORING_TIMEOUT_MS = 3_600_000
DEFAULT_LOG_LEVEL = "INFO"
DEFAULT_HOSTNAME = "Unknown"
DEFAULT_SERVER_PORT = 5001
DEFAULT_HEALTH_PORT = 5000
DEFAULT_WORKER_COUNT = 1
DEFAULT_WORKER_THREADS = 1
DEFAULT_WORKER_TIMEOUT = 300
# AML's managed front proxy accepts bodies up to 100 MB; larger ones could never reach a deployed model.
DEFAULT_MAX_REQUEST_BODY_MB = 100
DEFAULT_GRACEFUL_TIMEOUT = 30

# The request-id header limit (docs/compatibility.md#request-ids), counted in characters, inclusive.
HEADER_LIMIT = 100

HEADER_REQUEST_ID = "x-request-id"
HEADER_LEGACY_REQUEST_ID = "x-ms-request-id"
HEADER_CLIENT_REQUEST_ID = "x-ms-client-request-id"
HEADER_TRACE_ID = "TraceId"
HEADER_SERVER_VERSION = "x-ms-server-version"
HEADER_RUN_FUNCTION_FAILED = "x-ms-run-function-failed"
HEADER_RUN_FN_EXEC_MS = "x-ms-run-fn-exec-ms"
