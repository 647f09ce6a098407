"""``Table(rows=..., columns=...)`` and ``Table(dataframe=...)``: the stock constructors, the
stock JSON, checked against the installed stock ``pluto.data.Table`` built from the same
arguments and against what ``log()`` journals for ``POST /ingest/data``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pluto import data as stock

import pluto_offline as pluto
from pluto_offline import Table, journal

CASES = {
    "rows and columns": ([[1, "a"], [2, "b"]], {"columns": ["n", "s"], "rows": ["r1", "r2"]}),
    "rows only": ([[1.5, 2], [3.5, 4]], {"rows": ("x", "y")}),
    "row names of other types": ([[1], [2]], {"rows": [10, None]}),
    "rows that do not fit": ([[1, 2], [3, 4]], {"rows": ["only"], "columns": ["a", "b"]}),
    "a 2-D array with rows": (np.array([[1, 2], [3, 4]]), {"rows": ["p", "q"],
                                                           "columns": ["c", "d"]}),
    "no data, names only": (None, {"rows": ["r"], "columns": ["c"]}),
}


def _journaled(tmp_path, value) -> dict:
    """What ``log()`` journals for ``value``: one line of ``POST /ingest/data``."""
    run = pluto.init(dir=tmp_path, project="p", settings={"disable_console": True,
                                                         "disable_system_metrics": True})
    run.log({"t": value}, step=7)
    run.finish()
    with journal.Journal.open(tmp_path, readonly=True) as j:
        (payload,) = [p for (p,) in j.conn.execute(
            "SELECT payload FROM events WHERE kind = 'data'")]
    return json.loads(payload)


@pytest.mark.parametrize("case", list(CASES))
def test_rows_and_columns_give_the_stock_json(tmp_path, case):
    data, kwargs = CASES[case]
    ours, theirs = Table(data, **kwargs).to_dict(), stock.Table(data, **kwargs).to_dict()
    assert ours == theirs
    line = _journaled(tmp_path, Table(data, **kwargs))
    assert (line["dataType"], line["logName"], line["step"]) == ("TABLE", "t", 7)
    assert line["data"] == json.dumps(theirs)  # the text the stock SDK would send


def test_rows_name_the_rows_by_the_first_cell_type():
    got = Table([[1, "a"], [2.5, "b"]], columns=["n", "s"], rows=["r1", "r2"]).to_dict()
    assert got["row"] == [{"name": "r1", "dtype": "int"}, {"name": "r2", "dtype": "float"}]
    assert got["col"] == [{"name": "n", "dtype": "int"}, {"name": "s", "dtype": "str"}]
    assert "row" not in Table([[1], [2]], rows=["one"]).to_dict()


def test_a_dataframe_gives_the_stock_json(tmp_path):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"n": [1, 2], "s": ["a", "b"], "f": [0.5, 1.5]}, index=["r1", "r2"])
    for kwargs in ({}, {"columns": ["N", "S", "F"], "rows": ["x", "y"]},
                   {"columns": ["too", "few"], "rows": ["z"]}):
        ours = Table(dataframe=df, **kwargs).to_dict()
        assert ours == stock.Table(dataframe=df, **kwargs).to_dict()
    assert ours["col"][0] == {"name": "n", "dtype": "int"}  # the frame's, when they do not fit
    assert ours["row"] == [{"name": "r1", "dtype": "int"}, {"name": "r2", "dtype": "int"}]
    # as the first argument too (the stock Table reads only dataframe= for it)
    assert Table(df).to_dict() == Table(dataframe=df).to_dict()
    line = _journaled(tmp_path, Table(dataframe=df))
    assert line["data"] == json.dumps(stock.Table(dataframe=df).to_dict())
