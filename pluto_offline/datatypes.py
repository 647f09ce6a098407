"""``Histogram``, ``Table`` and ``Graph``: structured values for ``log()``, as the stock SDK's.

Constructors and JSON shapes are the stock SDK's (``pluto/data.py``, pluto-ml 0.0.29)::

    run.log({"weights": pluto_offline.Histogram(values, bins=64),
             "preds": pluto_offline.Table(rows_of_values, columns=["x", "y"])})

Each logged one becomes a line of ``POST /ingest/data`` (``{"time", "data": <JSON text of
to_dict()>, "dataType": "HISTOGRAM" | "TABLE" | "GRAPH", "logName", "step"}``) and its name is
registered with ``logName/add`` as ``HISTOGRAM``, ``TABLE`` or, for a graph (a type the
server's list lacks), ``DATA``. Stock ``pluto.Histogram``/``Table``/``Graph`` objects are
taken as they are.

Differences, on purpose: a ``Histogram`` of a list needs no numpy (it is used when installed);
a ``Graph``'s edges are ``[[source, target, attributes], ...]`` and its successor/predecessor
sets sorted lists, because the stock object's tuple keys and sets are not JSON (the stock SDK
cannot send a graph with edges at all).
"""

from __future__ import annotations

import json
import logging
from typing import Any

logger = logging.getLogger("pluto_offline")
LOG_TYPES = {"Histogram": "HISTOGRAM", "Table": "TABLE", "Graph": "DATA"}


class Data:
    """A structured value: ``to_dict()`` is what the server stores (as JSON text)."""

    def __init__(self, data: dict) -> None:
        self._data = data

    def to_dict(self) -> dict[str, Any]:
        return {**self._data, "type": type(self).__name__, "v": 1}


class Histogram(Data):
    """``Histogram(values, bins=64)``: counts over ``bins`` equal-width bins from the
    values' min to max (numpy's rule); or ``Histogram((counts, edges), bins=None)``:
    pre-binned, ``len(edges) == len(counts) + 1``."""

    def __init__(self, data: Any, bins: Any = 64) -> None:
        self._shape = "generic"
        if not isinstance(bins, int) and len(data) == 2:
            freq, edges = _plain(data[0]), _plain(data[1])
            if len(freq) + 1 == len(edges):
                self._shape = "uniform"
            else:
                logger.warning("pluto_offline: Histogram: %d counts need %d edges, got %d: "
                               "kept as given", len(freq), len(freq) + 1, len(edges))
        elif isinstance(data, list | tuple) or hasattr(data, "tolist"):
            freq, edges = _histogram(_plain(data), bins)
            self._shape = "uniform"
        else:
            logger.warning("pluto_offline: Histogram: data must be a list or an array, got "
                           "%s: an empty histogram is logged", type(data).__name__)
            freq, edges = [0], [0, 1]
        self._freq, self._bins = freq, edges
        super().__init__(self.to_data())

    def to_data(self) -> dict[str, Any]:
        if self._shape == "uniform":
            return {"freq": self._freq, "maxFreq": max(self._freq),
                    "bins": {"min": min(self._bins), "max": max(self._bins),
                             "num": len(self._bins) - 1},
                    "shape": "uniform"}
        return {"freq": self._freq, "bins": self._bins, "shape": "generic"}


class Table(Data):
    """``Table(data=None, columns=[...], rows=[...], dataframe=None)``: a list of rows, a 2-D
    array or a pandas DataFrame; column/row names are kept when their count fits."""

    def __init__(self, data: Any = None, **kwargs: Any) -> None:
        self._col = list(kwargs.get("columns", []))
        self._row = list(kwargs.get("rows", []))
        self._table: list = kwargs.get("table", [[None]])
        frame = kwargs.get("dataframe")
        data = frame if frame is not None else data
        if type(data).__name__ == "DataFrame" and hasattr(data, "to_dict"):
            split = data.to_dict(orient="split")
            self._table = split.get("data", [[None]])
            if not (self._col and len(self._col) == len(self._table[0])):
                self._col = list(split.get("columns", []))
            if not (self._row and len(self._row) == len(self._table)):
                self._row = list(split.get("index", []))
        elif hasattr(data, "tolist"):
            self._table = data.tolist()
        elif isinstance(data, list):
            self._table = data
        elif data is not None:
            logger.warning("pluto_offline: Table: unsupported data type %s",
                           type(data).__name__)
        super().__init__(self.to_data())

    def to_data(self) -> dict[str, Any]:
        t = self._table
        out: dict[str, Any] = {"table": t}
        if t and len(self._col) == len(t[0]):
            out["col"] = [{"name": str(c), "dtype": type(t[0][i]).__name__}
                          for i, c in enumerate(self._col)]
        if len(self._row) == len(t):
            out["row"] = [{"name": str(r), "dtype": type(t[i][0]).__name__}
                          for i, r in enumerate(self._row)]
        return out


class Graph(Data):
    """``Graph(data={})``, then ``add_node(node, **attr)`` / ``add_edge(src, dst, **attr)``."""

    def __init__(self, data: dict | None = None) -> None:
        data = data or {}
        self._nodes: dict = dict(data.get("nodes", {}))
        self._edges: dict = {}
        for edge in data.get("edges", []):
            src, dst, *attr = edge
            self.add_edge(src, dst, **(attr[0] if attr else {}))
        super().__init__({})

    def add_node(self, node: Any, **attr: Any) -> None:
        self._nodes.setdefault(node, {}).update(attr)

    def add_edge(self, src: Any, dst: Any, **attr: Any) -> None:
        self.add_node(src)
        self.add_node(dst)
        self._edges[(src, dst)] = attr

    @property
    def nodes(self) -> dict:
        return self._nodes

    def edges(self, data: bool = False) -> list:
        return list(self._edges.items()) if data else list(self._edges)

    def to_data(self) -> dict[str, Any]:
        succ: dict = {n: [] for n in self._nodes}
        pred: dict = {n: [] for n in self._nodes}
        for src, dst in self._edges:
            succ[src].append(dst)
            pred[dst].append(src)
        return {"nodes": self._nodes, "edges": [[s, d, a] for (s, d), a in self._edges.items()],
                "successors": {n: sorted(v, key=str) for n, v in succ.items()},
                "predecessors": {n: sorted(v, key=str) for n, v in pred.items()}}

    def to_dict(self) -> dict[str, Any]:
        return {**self.to_data(), "type": "Graph", "v": 1}


def as_data(value: Any) -> tuple[str, str, str] | None:
    """``(dataType, JSON text, logType)`` of a structured value (ours or the stock SDK's), or
    None for anything else. Raises ``ValueError`` when it cannot be written as JSON."""
    name = type(value).__name__
    if name not in LOG_TYPES or not callable(getattr(value, "to_dict", None)):
        return None
    try:
        text = json.dumps(value.to_dict(), default=str, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a {name} that cannot be written as JSON: {exc}") from None
    return name.upper(), text, LOG_TYPES[name]


def _plain(values: Any) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _histogram(values: list, bins: int) -> tuple[list[int], list[float]]:
    """Counts and edges as ``numpy.histogram(values, bins)`` gives them."""
    try:
        import numpy

        counts, edges = numpy.histogram(values, bins=bins)
        return counts.tolist(), edges.tolist()
    except ImportError:
        pass
    lo, hi = (float(min(values)), float(max(values))) if values else (0.0, 1.0)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    return counts, [lo + i * width for i in range(bins)] + [hi]


def entry(key: str, value: Any,
          known: dict[str, str]) -> tuple[str, str, str, str | None] | str | None:
    """For ``log()``: ``(name, dataType, JSON text, logType if the name is new else None)``
    for a structured value, a reason string when it must be dropped, or None when ``value``
    is not one. A new name is added to ``known`` (name -> its logType)."""
    try:
        item = as_data(value)
    except ValueError as exc:
        return str(exc)
    if item is None:
        return None
    data_type, text, log_type = item
    if key in known:
        return key, data_type, text, None
    known[key] = log_type
    return key, data_type, text, log_type
