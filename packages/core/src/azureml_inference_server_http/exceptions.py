"""The server's own exceptions: one root, and wrappers that carry the user's exception as their cause."""

from __future__ import annotations


class AzmlinfsrvError(Exception):
    """Root of every error the server raises itself."""


class ConfigError(AzmlinfsrvError):
    """One or more settings are invalid. ``errors`` holds ``(setting name, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors))


class ConfigFileError(AzmlinfsrvError):
    """config.json (or a user logging.json) could not be read or is not a JSON object."""


class UserScriptError(AzmlinfsrvError):
    """The entry script does not satisfy the score-script contract (missing init/run, bad signature)."""


class UserScriptImportException(AzmlinfsrvError):
    """Importing the entry script raised; the user's exception is the cause."""

    def __init__(self) -> None:
        super().__init__("Failed to import user script because it raised an unhandled exception")


class UserScriptException(AzmlinfsrvError):
    """init() or run() raised; the user's exception is the cause."""

    def __init__(self, message: str = "Caught an unhandled exception from the user script") -> None:
        super().__init__(message)


class UserScriptTimeout(AzmlinfsrvError):
    """run() did not finish within SCORING_TIMEOUT_MS."""

    def __init__(self, timeout_ms: int) -> None:
        self.timeout_ms = timeout_ms
        super().__init__(f"Script failed to finish execution within the allocated time: {timeout_ms}ms")


class NotReady(AzmlinfsrvError):
    """The score script is not loaded (yet): init() is running, has failed, or the server is draining."""
