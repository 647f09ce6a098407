"""Value rules shared by ``init`` and the run: config merging, tags, logged-value routing.

The fast path in ``Run.log`` handles plain ``float``/``int`` values itself; everything else
comes here::

    >>> route(0.5), route(True), route("warmup")
    (('metric', 0.5), ('drop', 'a bool is not a metric'), ('data', 'warmup'))
"""

from __future__ import annotations

import json
import logging
import math
import operator
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger("pluto_offline")

STRING_SERIES_MAX_LEN = 200
# The Pluto server's tag rules (runs/create and runs/tags/update): at most 50 tags per run, and
# at most one tag starting with "group:"; anything else is a 400 that would lose the run's create.
MAX_TAGS = 50
GROUP_TAG_PREFIX = "group:"
MAX_STEP = 2**53  # beyond, JSON numbers (and the server) lose integers; SQLite overflows at 2**63
# 9999-12-31: later times in ms overflow SQLite's INTEGER (and mean a unit mistake)
MAX_TIMESTAMP_S = 253402300799


def deep_merge(base: dict, override: dict) -> dict:
    """A new dict: ``override`` merged into ``base``, recursively for dict-valued keys."""
    merged = dict(base)
    for key, value in override.items():
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            merged[key] = deep_merge(old, value)
        else:
            merged[key] = value
    return merged


def native_config(config: Any, what: str = "config") -> Any:
    """JSON-native copy of a config: keys made str, tuples made lists, other values ``str()``.

    A round trip through JSON, so what the run holds is exactly what the journal holds.
    Non-finite floats (NaN, ±inf, also nested) become the strings ``"NaN"``, ``"Infinity"``,
    ``"-Infinity"``: Python's ``json`` writes them as bare tokens, which the Pluto server's
    ``JSON.parse`` refuses (400 on the run's create or config update). Each key path is warned
    about once per process; ``what`` names the argument in that warning.
    """
    if config is None:
        return None
    if hasattr(config, "to_container"):  # OmegaConf without importing it
        config = config.to_container(resolve=True)
    replaced: list[tuple[str, str]] = []
    try:
        plain = _keys_to_str(config)
        try:
            text = json.dumps(plain, default=str, allow_nan=False)
        except ValueError:  # a non-finite float somewhere: only this rare case walks again
            text = json.dumps(_finite(plain, what, replaced), default=str, allow_nan=False)
        native = json.loads(text)
    except RecursionError:  # a cycle, or nesting deeper than the interpreter's stack
        raise ValueError(f"{what} cannot be journaled: it refers to itself (a cycle) or is "
                         "nested too deeply; pass a plain tree of dicts and lists") from None
    for path, spelling in replaced:
        if path not in _warned_non_finite:
            _warned_non_finite.add(path)
            logger.warning("pluto_offline: %s is %s, which the Pluto server cannot parse in a "
                           "config (bare NaN/Infinity is not JSON); journaled as the string %r, "
                           "which run.config holds too", path, spelling, spelling)
    return native


_warned_non_finite: set[str] = set()  # key paths already warned about, once per process


def _keys_to_str(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _keys_to_str(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_keys_to_str(v) for v in obj]
    return obj


def _finite(obj: Any, path: str, replaced: list[tuple[str, str]]) -> Any:
    """``obj`` (a ``_keys_to_str`` tree) with each non-finite float replaced by its JSON
    spelling as a string, noted with its key path in ``replaced``."""
    if isinstance(obj, dict):
        return {k: _finite(v, f"{path}[{k!r}]", replaced) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v, f"{path}[{i}]", replaced) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        spelling = "NaN" if obj != obj else ("Infinity" if obj > 0 else "-Infinity")
        replaced.append((path, spelling))
        return spelling
    return obj


def normalize_tags(tags: str | Iterable[str] | None) -> list[str]:
    """A string or any iterable of strings → a deduplicated list, order kept."""
    if tags is None:
        return []
    items = [tags] if isinstance(tags, str) else list(tags)
    out: list[str] = []
    for t in items:
        if not isinstance(t, str):
            raise TypeError(f"tags must be strings, got {type(t).__name__}: {t!r}")
        if t not in out:
            out.append(t)
    return out


def check_tags(tags: list[str], where: str, fix_count: str, fix_group: str) -> list[str]:
    """``tags`` if the Pluto server would take them, else ``ValueError`` saying what to do.

    The server's limits: at most ``MAX_TAGS`` (50) tags per run and at most one ``group:*``
    tag; it refuses anything else with a 400, which for a create loses the whole run. So the
    SDK checks them where tags are set, before anything is journaled. ``where`` names the
    call, ``fix_count`` / ``fix_group`` say how to fix each problem there.
    """
    if len(tags) > MAX_TAGS:
        raise ValueError(f"{where}: a run can have at most {MAX_TAGS} tags (the Pluto server's "
                         f"limit), this would give it {len(tags)}; {fix_count}")
    groups = [t for t in tags if t.startswith(GROUP_TAG_PREFIX)]
    if len(groups) > 1:
        raise ValueError(f"{where}: a run can have at most one '{GROUP_TAG_PREFIX}' tag (the Pluto "
                         f"server's limit), this would give it {len(groups)}: "
                         f"{', '.join(map(repr, groups))}; {fix_group}")
    return tags


def route(value: Any) -> tuple[str, Any]:
    """Where one logged value goes: ``('metric', number)``, ``('data', str)`` or ``('drop', why)``.

    Mirrors the stock SDK: numbers and ``.item()`` scalars are metrics (NaN/±inf kept), a list
    keeps its last element, a str of ≤ 200 chars is a string series, the rest is dropped.
    """
    if isinstance(value, list):
        if not value:
            return ("drop", "an empty list has no value")
        value = value[-1]
    if isinstance(value, bool):
        return ("drop", "a bool is not a metric")
    if isinstance(value, (int, float)):
        # plain types: a numpy float64 or an IntEnum would be marshalled as something else
        return ("metric", float(value) if isinstance(value, float) else int(value))
    if isinstance(value, str):
        if len(value) > STRING_SERIES_MAX_LEN:
            return ("drop", f"a string of {len(value)} chars (> {STRING_SERIES_MAX_LEN}) is not a state label")
        return ("data", str(value))
    item = getattr(value, "item", None)
    if callable(item):
        try:
            scalar = item()
        except Exception as exc:  # a tensor of many elements, for one
            return ("drop", f".item() failed: {type(exc).__name__}: {exc}")
        if isinstance(scalar, (int, float)) and not isinstance(scalar, bool):
            return ("metric", scalar)
        return ("drop", f".item() gave {_a(type(scalar).__name__)}")
    return ("drop", f"{_a(type(value).__name__)} is not a metric")


def _a(noun: str) -> str:
    """``noun`` with its indefinite article: "an Image", "a dict"."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def check_timestamp(timestamp: Any) -> float | None:
    """A usable epoch-seconds timestamp, or None (meaning now) for anything invalid."""
    if timestamp is None:
        return None
    if (
        isinstance(timestamp, bool)
        or not isinstance(timestamp, (int, float))
        or not math.isfinite(timestamp)
        or timestamp <= 0
        or timestamp > MAX_TIMESTAMP_S
    ):
        return None
    return float(timestamp)


def check_step(step: Any) -> int:
    """An explicit ``log(step=...)``: an int (``operator.index``) in ``[0, MAX_STEP]``."""
    if isinstance(step, bool):
        raise TypeError(f"step must be an int, got {step!r}")
    try:
        step = operator.index(step)
    except TypeError:
        raise TypeError(f"step must be an int, got {type(step).__name__}") from None
    if not 0 <= step <= MAX_STEP:
        raise ValueError(bad_step(step))
    return step


def bad_step(step: int) -> str:
    if step < 0:
        return f"step must be >= 0, got {step}"
    return f"step must be <= 2**53 (the largest integer JSON keeps exact), got {step}"

