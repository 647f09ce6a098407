"""Property tests for ``init()`` and the state changes: configs, tags, run ids, fork parameters.

Each call either succeeds and journals exactly what the run object reports, or raises a
``TypeError``/``ValueError`` whose message names the argument; the journal stays sound.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
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

from .helpers import integrity

OFF = {"autostart": False}
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                      st.floats(allow_nan=False), st.text(max_size=10))
odd_leaf = st.one_of(json_leaf, st.floats(), st.builds(object), st.just(dt.date(2024, 1, 2)),
                     st.floats().map(np.float64), st.binary(max_size=4), st.just({1, 2}))
configs = st.recursive(
    odd_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(), st.floats(allow_nan=False),
                                  st.tuples(st.integers())), inner, max_size=3)),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("init")


@contextlib.contextmanager
def fresh(base: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(dir=base) as d:
        yield Path(d) / "journal"


def _create_payload(jdir: Path, key: int) -> dict:
    with journal.Journal.open(jdir, readonly=True) as j:
        ev = journal.pending_events(j, key, after=0, limit=1)[0]
        return ev.data()


@given(config=configs)
def test_any_config_is_journaled_as_the_run_reports_it(base, config):
    with fresh(base) as jdir:
        run = pluto.init(dir=jdir, project="cfg", config=config, settings=OFF)
        journaled = _create_payload(jdir, run._key)["config"]
        # JSON-native: what the run holds is exactly what the journal (and the server) get
        assert json.loads(json.dumps(run.config)) == run.config
        assert journaled == run.config
        if isinstance(config, dict):
            assert set(run.config) == {str(k) for k in config}
            run.update_config(config)  # merging a config into itself changes nothing
        run.finish()
        assert integrity(jdir / "journal.db") == "ok"


@given(delta=configs)
def test_update_config_takes_dicts_and_refuses_the_rest_clearly(base, delta):
    with fresh(base) as jdir:
        run = pluto.init(dir=jdir, project="cfg", config={"a": {"b": 1}}, settings=OFF)
        try:
            run.update_config(delta)
        except TypeError as exc:
            assert not isinstance(delta, dict) and "config must be a dict" in str(exc)
        else:
            assert isinstance(delta, dict)
        run.log({"x": 1.0})  # training goes on
        run.finish()
        assert integrity(jdir / "journal.db") == "ok"


@pytest.mark.parametrize("make", ["cycle-dict", "cycle-list", "deep-dict", "deep-list"])
def test_cyclic_or_absurdly_deep_configs_are_a_clear_value_error(tmp_path, make):
    cfg: Any
    if make == "cycle-dict":
        cfg = {"a": 1}
        cfg["self"] = cfg
    elif make == "cycle-list":
        inner: list = [1]
        inner.append(inner)
        cfg = {"l": inner}
    elif make == "deep-dict":
        cfg = leaf = {}
        for _ in range(100_000):
            leaf["k"] = leaf = {}
    else:
        cfg = leaf = []
        for _ in range(100_000):
            leaf.append(nxt := [])
            leaf = nxt
    if make.startswith("deep"):
        cfg = {"deep": cfg}
    with pytest.raises(ValueError, match="config"):
        pluto.init(dir=tmp_path / "j", project="cfg", config=cfg, settings=OFF)
    run = pluto.init(dir=tmp_path / "j", project="cfg", config={"ok": 1}, settings=OFF)
    with pytest.raises(ValueError, match="config"):
        run.update_config(cfg)
    run.log({"x": 1.0})
    run.finish()
    assert integrity(tmp_path / "j" / "journal.db") == "ok"


@given(tags=st.one_of(st.text(max_size=20), st.lists(st.text(max_size=30), max_size=60),
                      st.lists(st.one_of(st.text(max_size=3), st.integers(), st.none()),
                               max_size=4)))
def test_tags_are_journaled_deduplicated_or_refused(base, tags):
    with fresh(base) as jdir:
        try:
            run = pluto.init(dir=jdir, project="tags", tags=tags, settings=OFF)
        except TypeError as exc:
            assert "tags must be strings" in str(exc)
            return
        except ValueError as exc:  # over the server's 50-tag / one group: tag limits
            assert str(exc).startswith("init(tags=...): a run can have at most "), exc
            assert "(the Pluto server's limit)" in str(exc)
            return
        want = [tags] if isinstance(tags, str) else list(dict.fromkeys(tags))
        assert run.tags == want == _create_payload(jdir, run._key)["tags"]
        run.add_tags(tags)
        run.remove_tags(tags)
        assert run.tags == []
        run.finish()


run_ids = st.one_of(st.text(max_size=40), st.integers(-5, 2**70), st.from_regex(r"[A-Z0-9]{1,4}-\d{1,6}", fullmatch=True),
                    st.sampled_from(["²", "٣", "00", "../../etc/passwd", "a\x00b", "x" * 5000]),
                    st.floats(), st.none(), st.booleans())


@given(run_id=run_ids)
def test_any_run_id_opens_a_run_or_is_refused_clearly(base, run_id):
    with fresh(base) as jdir:
        try:
            run = pluto.init(dir=jdir, project="ids", run_id=run_id, settings=OFF)
        except (TypeError, ValueError) as exc:
            assert "run_id" in str(exc), repr(exc)
            return
        if run_id is not None:  # numbers (and digit strings) name a server run
            numeric = isinstance(run_id, int) or run_id.isdigit()
            assert run.run_id == (str(int(run_id)) if numeric else run_id)
        run.log({"x": 1.0})
        run.finish()
        again = pluto.init(dir=jdir, project="ids", run_id=run.run_id, resume=True, settings=OFF)
        assert again.run_id == run.run_id and again.resumed
        again.close()
        assert integrity(jdir / "journal.db") == "ok"


@given(parent=st.one_of(run_ids, st.just("local-parent")),
       step=st.one_of(st.integers(-5, 2**70), st.floats(), st.booleans(), st.text(max_size=3),
                      st.none(), st.integers(0, 9).map(np.int64)))
def test_any_fork_parameters_fork_or_are_refused_clearly(base, parent, step):
    with fresh(base) as jdir:
        p = pluto.init(dir=jdir, project="fork", run_id="local-parent", settings=OFF)
        p.log({"x": 1.0}, step=3)
        p.finish()
        try:
            child = pluto.init(dir=jdir, project="fork", fork_run_id=parent, fork_step=step,
                               settings=OFF)
        except (TypeError, ValueError) as exc:
            assert "fork" in str(exc), repr(exc)
            return
        fork = _create_payload(jdir, child._key)["fork"]
        assert fork is None if parent is None else fork["step"] == int(step)
        child.finish()
        assert integrity(jdir / "journal.db") == "ok"
