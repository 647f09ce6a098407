"""Field checks for JSON bodies; each failure is the 400 a schema validator would give."""

from __future__ import annotations

import json
from typing import Any

from syncd.server.errors import api_error, validation_error

MAX_TAGS = 50
GROUP_TAG_ERROR = "A run can have at most one group:* tag."
STATUSES = ("RUNNING", "COMPLETED", "FAILED", "TERMINATED", "CANCELLED")
LOG_TYPES = ("METRIC", "IMAGE", "VIDEO", "AUDIO", "FILE", "TEXT", "ARTIFACT", "HISTOGRAM", "TABLE", "DATA")


def as_int(value: Any) -> int | None:
    """JSON numbers that are whole (``3`` or ``3.0``) as int; anything else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def req_int(body: dict, field: str) -> int:
    value = body.get(field)
    if value is None:
        raise validation_error(field, "Required")
    number = as_int(value)
    if number is None:
        raise validation_error(field, "Expected number")
    return number


def opt_int(body: dict, field: str) -> int | None:
    return None if body.get(field) is None else req_int(body, field)


def req_str(body: dict, field: str, min_len: int = 0) -> str:
    value = body.get(field)
    if value is None:
        raise validation_error(field, "Required")
    if not isinstance(value, str):
        raise validation_error(field, "Expected string")
    if len(value) < min_len:
        raise validation_error(field, f"String must contain at least {min_len} character(s)")
    return value


def opt_str(body: dict, field: str, min_len: int = 0) -> str | None:
    return None if body.get(field) is None else req_str(body, field, min_len)


def opt_bool(body: dict, field: str, default: bool) -> bool:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise validation_error(field, "Expected boolean")
    return value


def req_enum(body: dict, field: str, allowed: tuple[str, ...]) -> str:
    value = req_str(body, field)
    if value not in allowed:
        raise validation_error(field, f"Invalid enum value. Expected {' | '.join(allowed)}")
    return value


def str_list(body: dict, field: str, required: bool, max_len: int | None = None) -> list[str] | None:
    value = body.get(field)
    if value is None:
        if required:
            raise validation_error(field, "Required")
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise validation_error(field, "Expected array of strings")
    if max_len is not None and len(value) > max_len:
        raise validation_error(field, f"Array must contain at most {max_len} element(s)")
    return value


def check_tags(tags: list[str]) -> list[str]:
    """Tag rules beyond the schema: at most one ``group:*`` tag."""
    if sum(1 for t in tags if t.startswith("group:")) > 1:
        raise api_error(400, GROUP_TAG_ERROR)
    return tags


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def loads(text: str | bytes) -> Any:
    """``json.loads`` as strict as the real api's ``JSON.parse``: bare ``NaN``,
    ``Infinity`` and ``-Infinity`` are refused (only the ingest service takes them)."""
    return json.loads(text, parse_constant=_no_constant)


def json_text(body: dict, field: str, error: str) -> Any:
    """Parse an optional JSON-text field; ``None`` when absent, 400 ``error`` when unparsable."""
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise validation_error(field, "Expected string")
    try:
        return loads(value)
    except ValueError:
        raise api_error(400, error) from None


def deep_merge(base: Any, delta: Any) -> Any:
    """Merge ``delta`` into ``base``: nested objects merge key by key, anything else replaces."""
    if not isinstance(base, dict) or not isinstance(delta, dict):
        return delta
    merged = dict(base)
    for key, value in delta.items():
        merged[key] = deep_merge(merged[key], value) if key in merged else value
    return merged
