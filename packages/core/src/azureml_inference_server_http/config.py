"""Server settings: built from a mapping (normally ``os.environ``) and an optional config.json.

Precedence is environment > config.json > default (docs/compatibility.md#settings-precedence); the CLI writes its
flags into the environment first, so flags win over both. Environment names are matched case-insensitively, as
upstream does.
``ServerConfig.from_env(mapping)`` never touches ``os.environ``, so tests pass plain dicts.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from . import constants as c
from .exceptions import ConfigError
from .exceptions import ConfigFileError

logger = logging.getLogger("azmlinfsrv")

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}

# compat: upstream (pydantic) wording for invalid values; users' alerting greps these.
_MSG_INT = "Input should be a valid integer, unable to parse string as an integer"
_MSG_INT_FRACTION = "Input should be a valid integer, got a number with a fractional part"
_MSG_BOOL = "Input should be a valid boolean, unable to interpret input"


def parse_int(value: Any) -> int:
    """Lax integer parsing with upstream's rules: ``"2.0"`` is 2, ``"1.5"`` and ``"abc"`` are errors."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise ValueError(_MSG_INT_FRACTION)
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        raise ValueError(_MSG_INT) from None
    if not math.isfinite(number):
        raise ValueError(_MSG_INT)
    if not number.is_integer():
        raise ValueError(_MSG_INT_FRACTION)
    return int(number)


def parse_bool(value: Any) -> bool:
    """Lax boolean parsing: true/false, 1/0, yes/no, on/off, t/f, y/n in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(_MSG_BOOL)


def parse_str(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def parse_model_name(value: Any) -> str | None:
    """A model name is one URL path segment: no "/"; empty means the default."""
    text = parse_str(value).strip()
    if "/" in text:
        raise ValueError("A model name cannot contain '/'")
    return text or None


@dataclass(frozen=True)
class _Setting:
    attr: str
    env: str
    parse: Callable[[Any], Any]
    in_config_file: bool = True


# Every setting, its variable and parser. compat: upstream's config.json ignores the five settings marked
# in_config_file=False; we keep that so a config.json cannot silently enable telemetry.
# See docs/compatibility.md#settings-precedence.
_SETTINGS: tuple[_Setting, ...] = (
    _Setting("app_root", c.ENV_APP_ROOT, parse_str, in_config_file=False),
    _Setting("source_dir", c.ENV_SOURCE_DIRECTORY, parse_str),
    _Setting("entry_script", c.ENV_ENTRY_SCRIPT, parse_str),
    _Setting("service_name", c.ENV_SERVICE_NAME, parse_str),
    _Setting("workspace_name", c.ENV_WORKSPACE_NAME, parse_str),
    _Setting("service_path_prefix", c.ENV_SERVICE_PATH_PREFIX, parse_str),
    _Setting("service_version", c.ENV_SERVICE_VERSION, parse_str),
    _Setting("scoring_timeout_ms", c.ENV_SCORING_TIMEOUT_MS, parse_int),
    _Setting("log_level", c.ENV_LOG_LEVEL, parse_str),
    _Setting(
        "app_insights_enabled",
        c.ENV_APP_INSIGHTS_ENABLED,
        parse_bool,
        in_config_file=False,
    ),
    _Setting("app_insights_key", c.ENV_APP_INSIGHTS_KEY, parse_str, in_config_file=False),
    _Setting(
        "app_insights_connection_string",
        c.ENV_APP_INSIGHTS_CONNECTION_STRING,
        parse_str,
        in_config_file=False,
    ),
    _Setting("app_insights_credential", c.ENV_APP_INSIGHTS_CREDENTIAL, parse_str, in_config_file=False),
    _Setting(
        "mdc_storage_enabled",
        c.ENV_MDC_STORAGE_ENABLED,
        parse_bool,
        in_config_file=False,
    ),
    _Setting(
        "mdc_storage_enabled",
        c.ENV_MODEL_DC_STORAGE_ENABLED,
        parse_bool,
        in_config_file=False,
    ),
    _Setting(
        "app_insights_log_response_enabled",
        c.ENV_APP_INSIGHTS_LOG_RESPONSE_ENABLED,
        parse_bool,
    ),
    _Setting("cors_origins", c.ENV_CORS_ORIGINS, parse_str, in_config_file=False),
    _Setting("model_dir", c.ENV_MODEL_DIR, parse_str),
    _Setting("hostname", c.ENV_HOSTNAME, parse_str),
    _Setting("debug_port", c.ENV_DEBUG_PORT, parse_int),
    _Setting("server_version", c.ENV_SERVER_VERSION, parse_str, in_config_file=False),
    _Setting("worker_threads", c.ENV_WORKER_THREADS, parse_int),
    _Setting("max_request_body_mb", c.ENV_MAX_REQUEST_BODY_MB, parse_int),
    _Setting("metrics_enabled", c.ENV_METRICS_ENABLED, parse_bool),
    _Setting("model_name", c.ENV_MODEL_NAME, parse_model_name),
)
_CONFIG_FILE_KEYS = {s.env.upper() for s in _SETTINGS if s.in_config_file}


@dataclass(frozen=True)
class ServerConfig:
    """Every setting the server itself reads. Build it with :meth:`from_env`; tests may construct it directly."""

    app_root: str = c.DEFAULT_APP_ROOT
    source_dir: str | None = None
    entry_script: str | None = None
    service_name: str = c.DEFAULT_SERVICE_NAME
    workspace_name: str = ""
    service_path_prefix: str = ""
    service_version: str = c.DEFAULT_SERVICE_VERSION
    scoring_timeout_ms: int = c.DEFAULT_SCORING_TIMEOUT_MS
    log_level: str = c.DEFAULT_LOG_LEVEL
    app_insights_enabled: bool | None = None  # None: AML_APP_INSIGHTS_ENABLED is not set at all
    app_insights_key: str | None = field(default=None, repr=False)
    app_insights_connection_string: str | None = field(default=None, repr=False)
    app_insights_credential: str | None = None
    mdc_storage_enabled: bool = False
    app_insights_log_response_enabled: bool = True
    cors_origins: str | None = None
    model_dir: str = ""
    hostname: str = c.DEFAULT_HOSTNAME
    debug_port: int | None = None
    server_version: str = ""
    worker_threads: int = c.DEFAULT_WORKER_THREADS
    max_request_body_mb: int = c.DEFAULT_MAX_REQUEST_BODY_MB
    metrics_enabled: bool = True
    model_name: str | None = None  # None: the entry script's file stem (server/v2.py)
    tracing_enabled: bool = False  # an OTLP endpoint is configured (docs/tracing.md)
    config_file: str | None = None
    unknown_config_keys: tuple[str, ...] = ()

    @property
    def telemetry_enabled(self) -> bool:
        """Whether telemetry is asked for: a switch and a target (docs/compatibility.md#telemetry-enablement).

        A connection string with the switch unset turns telemetry on (docs/telemetry.md): it is how Azure hands out
        ingestion settings, and upstream ignored it silently. An explicit false still wins.
        """
        if self.app_insights_enabled is None:
            return self.connection_string_given
        return self.app_insights_enabled and bool(self.app_insights_key or self.connection_string_given)

    @property
    def connection_string_given(self) -> bool:
        return bool(self.app_insights_connection_string and self.app_insights_connection_string.strip())

    @property
    def max_request_body_bytes(self) -> int | None:
        """The body limit in bytes; 0 or less disables it."""
        return self.max_request_body_mb * 1024 * 1024 if self.max_request_body_mb > 0 else None

    @property
    def source_directory_path(self) -> str | None:
        """``AZUREML_SOURCE_DIRECTORY`` relative to the app root (an absolute value is used as is)."""
        return os.path.join(self.app_root, self.source_dir) if self.source_dir else None

    @property
    def entry_script_path(self) -> str | None:
        """The script to load: absolute as given, else relative to ``app_root`` (docs/compatibility.md#entry-script)."""
        if not self.entry_script:
            return None
        return os.path.join(self.app_root, self.entry_script.replace("/", os.sep))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerConfig:
        """Build the settings from ``environ`` (default ``os.environ``) and the config.json it points to.

        Raises :class:`ConfigError` listing every invalid value, or :class:`ConfigFileError` when the
        config file is unreadable or not a JSON object.
        """
        env = dict(os.environ if environ is None else environ)
        upper = {key.upper(): value for key, value in env.items()}
        config_file = find_config_file(env)
        file_values: dict[str, Any] = {}
        unknown: list[str] = []
        if config_file:
            for key, value in read_config_file(config_file).items():
                if key.upper() in _CONFIG_FILE_KEYS:
                    if value is not None:  # compat: JSON null counts as absent
                        file_values[key.upper()] = value
                else:
                    unknown.append(key)

        values: dict[str, Any] = {}
        errors: list[tuple[str, str]] = []
        for setting in _SETTINGS:
            name = setting.env.upper()
            if name in upper:
                raw: Any = upper[name]
            elif name in file_values:
                raw = file_values[name]
            else:
                continue
            try:
                values[setting.attr] = setting.parse(raw)
            except ValueError as exc:
                errors.append((setting.env, str(exc)))
        if errors:
            raise ConfigError(errors)
        if values.get("source_dir") == "":
            values["source_dir"] = None
        return cls(
            **values,
            tracing_enabled=tracing_requested(env),
            config_file=config_file,
            unknown_config_keys=tuple(unknown),
        )


def tracing_requested(environ: Mapping[str, str]) -> bool:
    """Tracing is on when an OTLP endpoint is configured and the OpenTelemetry SDK is not disabled.

    These are the OpenTelemetry specification's own variables, so a deployment that already sets them for its
    other services traces this one too (docs/tracing.md).
    """
    upper = {key.upper(): value for key, value in environ.items() if key[:5].upper() == "OTEL_"}
    if upper.get(c.ENV_OTEL_SDK_DISABLED, "").strip().lower() == "true":
        return False
    return any(upper.get(name, "").strip() for name in (c.ENV_OTEL_ENDPOINT, c.ENV_OTEL_TRACES_ENDPOINT))


def find_config_file(env: Mapping[str, str]) -> str | None:
    """The first candidate that is an existing, non-empty file (docs/compatibility.md#config-json)."""
    candidates: list[str] = []
    explicit = env.get(c.ENV_CONFIG_FILE)
    if explicit:
        candidates.append(explicit)
    app_root = env.get(c.ENV_APP_ROOT) or c.DEFAULT_APP_ROOT
    if os.path.isdir(app_root):
        candidates.append(os.path.join(app_root, "config.json"))
    entry = env.get(c.ENV_ENTRY_SCRIPT)
    if entry:
        entry_dir = os.path.dirname(os.path.abspath(entry))
        if os.path.isdir(entry_dir):
            candidates.append(os.path.join(entry_dir, "config.json"))
    for candidate in candidates:
        try:
            if os.path.isfile(candidate) and os.path.getsize(candidate) > 0:
                return os.path.abspath(candidate)
        except OSError:
            continue
    return None


def read_config_file(path: str) -> dict[str, Any]:
    """Read config.json; it must hold a JSON object."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ConfigFileError(f"{path}: {exc}") from exc
    except RecursionError:
        raise ConfigFileError(f"{path}: nested too deeply to be a configuration") from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: the top level must be a JSON object, not {type(data).__name__}")
    return data


def format_config_error(error: ConfigError) -> str:
    """The CRITICAL block upstream logs for invalid settings (docs/compatibility.md#invalid-settings)."""
    ruler = "=" * 51
    lines = ["", "===============Configuration Error================="]
    lines += [f"{name}: {message} (environment variable: {name})" for name, message in error.errors]
    lines.append(ruler)
    return "\n".join(lines)
