"""NDJSON bodies of the ingest service, parsed fast and checked line by line.

A body is parsed in one ``json.loads`` call when it is well formed (the common case); only a
body with a bad line is re-read line by line to name the line. Python's json accepts the bare
``NaN``/``Infinity``/``-Infinity`` tokens the ingest service allows.

>>> ids = {"loss": 7}
>>> rows, lines, error = metric_rows(b'{"time": 1, "step": 0, "data": {"loss": 0.5}}\\n', ids, len)
>>> rows, lines, error
([(7, 0, 1, 0.5)], 1, None)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

# String spellings of non-finite values; NaN is stored as NULL (SQLite has no NaN).
_SPECIAL = {"NaN": None, "Infinity": float("inf"), "-Infinity": float("-inf")}
_INT64 = 2**63

# (series id, step, time, value): ready to bind, no second pass over the rows.
MetricRow = tuple[int, int, int, "float | None"]


def parse(body: bytes) -> tuple[list[Any], list[int], tuple[int, str] | None]:
    """``(objects, their 1-based line numbers, (line, reason) of the first bad line or None)``."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return [], [], (1, "body is not valid UTF-8")
    lines = text.split("\n")
    stripped = text.strip()
    if stripped and "\n\n" not in text.strip("\n"):
        first = next(i for i, line in enumerate(lines) if line.strip())
        count = stripped.count("\n") + 1
        try:
            objects = json.loads("[" + stripped.replace("\n", ",") + "]")
        except ValueError:
            objects = None
        # The count check rejects a line holding two comma-separated objects.
        if objects is not None and len(objects) == count:
            return objects, list(range(first + 1, first + 1 + count)), None
    objects, numbers = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            objects.append(json.loads(line))
        except ValueError as exc:
            return objects, numbers, (number, f"invalid JSON: {exc}")
        numbers.append(number)
    return objects, numbers, None


def _is_int(value: Any) -> bool:
    return type(value) is int and -_INT64 <= value < _INT64


def metric_rows(
    body: bytes, ids: dict[str, int], new_id: Callable[[str], int]
) -> tuple[list[MetricRow], int, tuple[int, str] | None]:
    """Rows ``(series id, step, time, value)`` of the good lines before the first bad one,
    the number of those lines, and the first bad line ``(number, reason)`` or ``None``.

    ``ids`` maps known metric names to series ids; ``new_id(name)`` makes one for a new name.
    """
    objects, numbers, error = parse(body)
    rows: list[MetricRow] = []
    append = rows.append
    for index, obj in enumerate(objects):
        if type(obj) is not dict:
            return rows, index, (numbers[index], "expected a JSON object")
        step, when, data = obj.get("step"), obj.get("time"), obj.get("data")
        if not _is_int(when) or when < 0:
            return rows, index, (numbers[index], "'time' must be an integer (epoch ms)")
        if not _is_int(step) or step < 0:
            return rows, index, (numbers[index], "'step' must be an integer >= 0")
        if type(data) is not dict:
            return rows, index, (numbers[index], "'data' must be an object")
        start = len(rows)
        for name, value in data.items():
            kind = type(value)
            if kind is float:
                if value != value:  # NaN
                    value = None
            elif kind is int:
                value = float(value)
            elif value is None:
                continue  # null values are skipped
            elif kind is str and value in _SPECIAL:
                value = _SPECIAL[value]
            else:
                del rows[start:]
                return rows, index, (numbers[index], f"value of {name!r} is not a number")
            series = ids.get(name)
            if series is None:
                series = new_id(name)
            append((series, step, when, value))
    return rows, len(objects), error


def _check(obj: Any, fields: dict[str, type]) -> str | None:
    if type(obj) is not dict:
        return "expected a JSON object"
    for field, kind in fields.items():
        value = obj.get(field)
        if kind is int:
            if not _is_int(value):
                return f"'{field}' must be an integer"
        elif not isinstance(value, kind):
            return f"'{field}' must be a {kind.__name__}"
    return None


LOG_FIELDS = {"time": int, "message": str}
DATA_FIELDS = {"time": int, "data": str, "dataType": str, "logName": str, "step": int}


def checked_lines(
    body: bytes, fields: dict[str, type]
) -> tuple[list[dict], tuple[int, str] | None]:
    """The good lines (objects with ``fields``) before the first bad one."""
    objects, numbers, error = parse(body)
    for index, obj in enumerate(objects):
        problem = _check(obj, fields)
        if problem:
            return objects[:index], (numbers[index], problem)
    return objects, error
