"""Launch settings: what the server front-ends need, resolved once in the launcher from the environment."""

from __future__ import annotations

import errno
import logging
import math
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from azureml_inference_server_http import constants as c
from azureml_inference_server_http.config import ServerConfig
from azureml_inference_server_http.config import parse_bool
from azureml_inference_server_http.config import parse_int
from azureml_inference_server_http.exceptions import ConfigError
from azureml_inference_server_http.exceptions import ConfigFileError

logger = logging.getLogger("azmlinfsrv")

# Registry of front-ends, imported lazily: gunicorn is never imported on Windows (it does not install there).
SERVERS = {
    "gunicorn": "azmlinfsrv.servers.gunicorn:serve",
    # A supervisor process that runs waitress in a child and replaces it if user code crashes it.
    "waitress": "azmlinfsrv.servers.supervisor:serve",
}


def default_server() -> str:
    return "waitress" if sys.platform == "win32" else "gunicorn"


class LaunchError(Exception):
    """A launch setting is invalid; the message is shown to the user as is."""


@dataclass(frozen=True)
class LaunchSettings:
    server: str
    host: str
    port: int
    health_port: int | None  # a second listening port, only with SEPERATE_HEALTH_ENDPOINT=true
    workers: int
    threads: int
    worker_timeout: int
    graceful_timeout: int
    preload: bool
    access_log: bool
    max_requests: int
    debug_port: int | None


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse_int(raw)
    except ValueError:
        raise LaunchError(f"{name} must be an integer, not {raw!r}.") from None
    if value < minimum:
        raise LaunchError(f"{name} must be at least {minimum}, not {value}.")
    return value


def resolve(env: Mapping[str, str], server: str | None = None, debug_port: int | None = None) -> LaunchSettings:
    """Read the launch settings from the merged environment (after the flags were written into it)."""
    chosen = server or env.get(c.ENV_SERVER) or default_server()
    if chosen not in SERVERS:
        raise LaunchError(f"Unknown server {chosen!r}: choose one of {', '.join(SERVERS)}.")
    port = _int(env, c.ENV_SERVER_PORT, c.DEFAULT_SERVER_PORT, 1)
    separate = env.get(c.ENV_SEPARATE_HEALTH_ENDPOINT) == "true"
    health_port = _int(env, c.ENV_HEALTH_PORT, c.DEFAULT_HEALTH_PORT, 1) if separate else None
    worker_timeout = _int(env, c.ENV_WORKER_TIMEOUT, c.DEFAULT_WORKER_TIMEOUT, 1)
    # The effective server settings, config.json included; an invalid one is reported by the worker as upstream does.
    try:
        server_config: ServerConfig | None = ServerConfig.from_env(env)
    except (ConfigError, ConfigFileError):
        server_config = None
    scoring_timeout_ms = server_config.scoring_timeout_ms if server_config else c.DEFAULT_SCORING_TIMEOUT_MS
    threads = max(1, server_config.worker_threads) if server_config else c.DEFAULT_WORKER_THREADS
    # gunicorn kills a worker whose main loop misses heartbeats for worker_timeout seconds; that only happens
    # when run() holds the GIL. Never let it cut a run() that SCORING_TIMEOUT_MS still allows (W2).
    needed = math.ceil(scoring_timeout_ms / 1000) + 5 if scoring_timeout_ms > 0 else 0
    if needed > worker_timeout:
        if c.ENV_WORKER_TIMEOUT in env:
            logger.info(
                "WORKER_TIMEOUT=%s is shorter than SCORING_TIMEOUT_MS allows; using %s s so that the scoring "
                "timeout decides.",
                worker_timeout,
                needed,
            )
        worker_timeout = needed
    preload_raw = env.get(c.ENV_WORKER_PRELOAD, "false")
    try:
        preload = parse_bool(preload_raw)
    except ValueError:
        preload = False
    try:
        access_log = parse_bool(env.get("AZMLINFSRV_ACCESS_LOG", "false"))
    except ValueError:
        raise LaunchError("AZMLINFSRV_ACCESS_LOG must be true or false.") from None
    return LaunchSettings(
        server=chosen,
        host=env.get(c.ENV_HOST) or "0.0.0.0",
        port=port,
        health_port=health_port,
        workers=_int(env, c.ENV_WORKER_COUNT, c.DEFAULT_WORKER_COUNT, 1),
        threads=threads,
        worker_timeout=worker_timeout,
        graceful_timeout=_int(env, c.ENV_GRACEFUL_TIMEOUT, c.DEFAULT_GRACEFUL_TIMEOUT, 0),
        preload=preload,
        access_log=access_log,
        max_requests=_int(env, "AZMLINFSRV_MAX_REQUESTS", 0, 0),
        debug_port=debug_port,
    )


# Variables through which a server receives its listening sockets already bound: systemd socket activation, and a
# gunicorn master re-executing itself (USR2). Their ports are taken on purpose.
INHERITED_SOCKETS_ENV = ("LISTEN_FDS", "GUNICORN_FD")


def inherits_sockets(env: Mapping[str, str]) -> bool:
    return any(env.get(name) for name in INHERITED_SOCKETS_ENV)


def address_in_use(host: str, port: int) -> bool:
    """True when ``host:port`` is taken: binding it as the servers do fails with "address already in use".

    A bind test before the banner, so that a taken port is one clear line and not gunicorn's five one-second
    retries. Any other failure (a host that does not resolve, a privileged port) is left to the server to report.
    """
    name: str | bytes | None = None if host in ("", "*") else host.strip("[]")
    if isinstance(name, str) and name.isascii():
        name = name.encode()  # a str host would import the IDNA codec first, a millisecond of every start
    try:
        candidates = socket.getaddrinfo(
            name, port, socket.AF_UNSPEC, socket.SOCK_STREAM, socket.IPPROTO_TCP, socket.AI_PASSIVE
        )
    except OSError:
        return False
    for family, kind, proto, _, address in candidates:
        try:
            sock = socket.socket(family, kind, proto)
        except OSError:
            continue
        with sock:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if sys.platform != "win32":
                # As gunicorn and waitress bind: connections in TIME_WAIT do not make a port taken. On Windows the
                # option would let this bind succeed on a port another process listens on.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", errno.EADDRINUSE)):
                    return True
    return False


def port_in_use_message(host: str, port: int, flag: str = "--port") -> str:
    """The one line for a taken port. It says "address already in use", which test launchers look for to retry."""
    return (
        f"Cannot listen on {host}:{port}: address already in use (another process is listening there). "
        f"Stop that process, or choose a free port with {flag}."
    )
