"""Property tests: whatever a training script hands ``log()``, ``init()`` and friends, the call
either does the documented thing or raises a clear ``TypeError``/``ValueError``, training goes
on, and the journal stays sound and readable by the daemon.

The documented value rules (docs/sdk.md, pluto-sdk.md) are restated here independently of
``pluto_offline.values.route``: numbers and ``.item()`` scalars are metrics (NaN/±inf kept), a
list keeps its last element, a str of ≤ 200 chars is a string series, everything else (bool,
None, dict, tuple, objects) is dropped with a warning once per key.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pluto_offline as pluto
from pluto_offline import journal
from pluto_offline.ids import clean_chars

from .helpers import integrity

DROP = object()


class FakeTensor:
    """A torch-like 0-d tensor: only ``.item()``."""

    def __init__(self, value: float) -> None:
        self.value = value

    def item(self) -> float:
        return self.value


class ManyElements:
    """A tensor of several elements: ``.item()`` raises, as torch's does."""

    def item(self) -> float:
        raise RuntimeError("a Tensor with 4 elements cannot be converted to Scalar")


scalars = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.sampled_from([5e-324, 1.7976931348623157e308, -0.0, float("nan"), float("-inf")]),
    st.integers(-(2**70), 2**70),
    st.booleans(), st.none(),
    st.text(max_size=8), st.text(min_size=195, max_size=205),
    st.floats().map(np.float64), st.floats(width=32).map(np.float32),
    st.integers(-(2**62), 2**62).map(np.int64), st.booleans().map(np.bool_),
    st.floats().map(FakeTensor), st.builds(ManyElements), st.builds(object),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner),
                            st.dictionaries(st.text(max_size=4), inner, max_size=2)),
    max_leaves=5,
)
keys = st.one_of(st.text(max_size=12), st.text(min_size=250, max_size=400),
                 st.sampled_from(["train/loss", "a/b/c", "", " ", "é/ü", "🔥", "x\x00y",
                                  "'; DROP TABLE events; --"]),
                 st.text(max_size=6).map(np.str_))


def expected(value: Any) -> tuple[str, Any]:
    """Where a logged value must go: ('metric', number), ('data', str) or ('drop', None)."""
    if isinstance(value, list):
        if not value:
            return ("drop", None)
        value = value[-1]
    if isinstance(value, bool | np.bool_):
        return ("drop", None)
    if isinstance(value, int | float):
        return ("metric", value)
    if isinstance(value, str):
        return ("data", str(value)) if len(value) <= 200 else ("drop", None)
    if isinstance(value, FakeTensor | np.generic):
        return expected(value.item())
    return ("drop", None)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b and type(a) is type(b)


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("values")


@contextlib.contextmanager
def fresh(base: Path) -> Iterator[Path]:
    """A journal directory of its own per example: one example's damage cannot hide in
    another's (hypothesis shrinks each failure on its own)."""
    with tempfile.TemporaryDirectory(dir=base) as d:
        yield Path(d) / "journal"


@pytest.fixture(scope="module")
def warned() -> Any:
    handler = Warnings()
    logging.getLogger("pluto_offline").addHandler(handler)
    yield handler
    logging.getLogger("pluto_offline").removeHandler(handler)


def _journaled(jdir: Path, key: int, step: int) -> tuple[dict, dict, set[str]]:
    """What the journal holds for a run at a step: metrics, string series, METRIC lognames."""
    j = journal.Journal.open(jdir, readonly=True)
    try:
        metrics: dict = {}
        strings: dict = {}
        names: set[str] = set()
        for ev in journal.pending_events(j, key, after=0, limit=10**6):
            if ev.kind == "metrics":
                for s, _t, data in journal.unpack_metrics(ev.payload):
                    if s == step:
                        metrics.update(data)
                json.loads("[" + journal.metrics_ndjson(ev.payload).replace("\n", ",") + "]")
            elif ev.kind == "data":
                for line in ev.payload.split("\n"):
                    d = json.loads(line)
                    if d["step"] == step:
                        strings[d["logName"]] = d["data"]
            elif ev.kind == "lognames" and ev.data()["type"] == "METRIC":
                names.update(ev.data()["names"])
        return metrics, strings, names
    finally:
        j.close()


@given(data=st.dictionaries(keys, values, max_size=6))
def test_log_journals_exactly_what_the_rules_say_and_never_raises(base, warned, data):
    with fresh(base) as jdir:
        run = pluto.init(dir=jdir, project="values", settings={"autostart": False})
        run.log(data, step=7)
        run.log({"after": 1.0})  # training goes on
        run.log(data, step=9)  # the names are known now: the fast path
        run.flush()
        metrics, strings, names = _journaled(jdir, run._key, 7)
        assert _journaled(jdir, run._key, 9)[0].keys() == metrics.keys()
        run.finish()
        assert not list((jdir.parent / "journal" / "spill").glob("*.spill"))  # all folded
        assert integrity(jdir / "journal.db") == "ok"
    want_m: dict = {}
    want_s: dict = {}
    dropped = []
    for k, v in data.items():
        name = clean_chars(str(k))
        kind, value = expected(v)
        if kind == "metric":
            want_m[name] = value
        elif kind == "data":
            want_s[name] = value
        else:
            dropped.append(name)
    assert set(metrics) == set(want_m)
    for name, value in want_m.items():
        got = metrics[name]
        assert type(name) is str and type(got) in (int, float), (name, got)
        assert same(float(got), float(value)) or got == value, (name, got, value)
    assert strings == want_s
    assert set(want_m) <= names  # every metric name is registered for the server's UI
    for name in dropped:
        if name not in want_m and name not in want_s:
            assert any(repr(name) in m for m in warned.messages), name


@given(good=st.dictionaries(st.text(min_size=1, max_size=5), st.floats(), min_size=1,
                            max_size=3),
       bad_key=st.one_of(st.integers(), st.none(), st.tuples(st.integers()), st.floats()))
def test_a_non_str_key_is_refused_whole_and_leaves_no_trace(base, good, bad_key):
    with fresh(base) as jdir:
        run = pluto.init(dir=jdir, project="keys", settings={"autostart": False})
        with pytest.raises(ValueError, match="unsupported type for key"):
            run.log({**good, bad_key: 1.0}, step=1)
        run.log(good, step=2)  # the same names, now valid: still registered with the server
        run.flush()
        at1, _, _ = _journaled(jdir, run._key, 1)
        at2, _, names = _journaled(jdir, run._key, 2)
        run.finish()
    assert at1 == {}
    assert set(at2) == {clean_chars(k) for k in good}
    assert set(at2) <= names


@given(step=st.one_of(st.integers(-5, 2**63), st.floats(), st.booleans(), st.text(max_size=3),
                      st.none(), st.integers(0, 10).map(np.int64)),
       timestamp=st.one_of(st.none(), st.floats(), st.integers(-10, 2**40), st.text(max_size=3),
                           st.booleans()))
def test_odd_steps_and_timestamps_are_refused_or_used_never_crash(base, step, timestamp):
    with fresh(base) as jdir:
        run = pluto.init(dir=jdir, project="steps", settings={"autostart": False})
        try:
            run.log({"x": 1.0}, step=step, timestamp=timestamp)
        except (TypeError, ValueError) as exc:
            assert "step" in str(exc)
        run.log({"x": 2.0})
        run.flush()
        run.finish()
        assert integrity(jdir / "journal.db") == "ok"
