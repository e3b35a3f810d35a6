"""The start-up banner: version, settings and routes (docs/compatibility.md#banner).

compat: labels, order and spacing are upstream's; operators' log parsers read them. Our own lines follow upstream's.
Neither the instrumentation key nor the connection string is ever printed whole: the telemetry line shows the
ingestion endpoint and the key's first characters.
"""

from __future__ import annotations

from collections.abc import Mapping

from azureml_inference_server_http import __version__
from azureml_inference_server_http import constants as c
from azureml_inference_server_http import ingestion

_SETTINGS = (
    ("Entry Script Name", c.ENV_ENTRY_SCRIPT),
    ("Model Directory", c.ENV_MODEL_DIR),
    ("Config File", c.ENV_CONFIG_FILE),
    ("Worker Count", c.ENV_WORKER_COUNT),
    ("Worker Timeout (seconds)", c.ENV_WORKER_TIMEOUT),
    ("Server Port", c.ENV_SERVER_PORT),
    ("Health Port", c.ENV_HEALTH_PORT),
    ("Application Insights Enabled", c.ENV_APP_INSIGHTS_ENABLED),
    ("Application Insights Key", c.ENV_APP_INSIGHTS_KEY),
    ("Inferencing HTTP server version", c.ENV_SERVER_VERSION),
    ("CORS for the specified origins", c.ENV_CORS_ORIGINS),
    ("Create dedicated endpoint for health", c.ENV_SEPARATE_HEALTH_ENDPOINT),
)


def render(env: Mapping[str, str], extra: Mapping[str, str] | None = None) -> str:
    """The banner text. ``extra`` adds our own settings (threads, server) after upstream's lines."""
    lines = ["", c.TITLE_TEMPLATE.format(version=__version__), "", "", "Server Settings", "-" * 15]
    for label, name in _SETTINGS:
        value = env.get(name)
        if name == c.ENV_APP_INSIGHTS_KEY and value is not None:
            shown = "AppInsights key provided"
        elif name == c.ENV_APP_INSIGHTS_KEY and _connection_string(env):
            shown = "from the connection string"  # upstream says None here, as it ignored the connection string
        elif name == c.ENV_CORS_ORIGINS and value is not None:
            shown = f"Enabling CORS for {value}"
        else:
            shown = str(value)
        lines.append(f"{label}: {shown}")
    lines.append(f"Application Insights Telemetry: {telemetry_target(env)}")
    for label, value in (extra or {}).items():
        lines.append(f"{label}: {value}")
    lines += ["", "", "Server Routes", "-" * 15]
    health_port = env.get(c.ENV_HEALTH_PORT)
    port = env.get(c.ENV_SERVER_PORT)
    lines.append(f"Liveness Probe: GET   127.0.0.1:{health_port}/")
    lines.append(f"Score:          POST  127.0.0.1:{port}/score")
    lines.append("")
    return "\n".join(lines)


def _connection_string(env: Mapping[str, str]) -> str | None:
    value = env.get(c.ENV_APP_INSIGHTS_CONNECTION_STRING)
    return value if value and value.strip() else None


def telemetry_target(env: Mapping[str, str]) -> str:
    """``on, to <endpoint> (instrumentation key 0a1b2c3d...)`` or ``off``, from the environment as validated."""
    if env.get(c.ENV_APP_INSIGHTS_ENABLED) != "true":
        return "off"
    try:
        target = ingestion.resolve(env.get(c.ENV_APP_INSIGHTS_KEY), _connection_string(env))
    except ingestion.IngestionSettingsError as exc:
        return f"off ({exc})"
    return f"on, to {target.describe()}"
