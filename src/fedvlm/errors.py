"""Errors fedvlm raises for bad user input.

The CLI turns any of these into a one-line message and exit code 2 (no traceback), so the
message itself must name the field, file or client at fault and say what was expected.
"""


class FedvlmError(Exception):
    """Base class: bad input the user can fix."""


class ConfigError(FedvlmError):
    """A config key or value is unknown or invalid."""


class DataError(FedvlmError):
    """A dataset, column or file is missing or malformed."""


class ModelError(FedvlmError):
    """A model path or architecture cannot be loaded or adapted."""


class UpdateError(FedvlmError):
    """A client update does not match the expected adapter (keys, shapes, finiteness)."""


def error_reason(e: BaseException) -> str:
    """The one line a failed client is named by, the same on every engine: the message of
    fedvlm's own errors (they say in words what went wrong and where), else ``Type:
    message`` (a bare ``KeyError: 'x'`` needs its type to mean anything)."""
    text = str(e).strip()
    line = (text.splitlines() or [""])[0]
    return (line if isinstance(e, FedvlmError) and line else f"{type(e).__name__}: {line}".rstrip(": "))[:300]
