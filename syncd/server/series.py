"""Stored series: metric points (deduplicated), console logs and data lines.

Metric rows are unique on (series, step), a series being one (project, run, metric name); a
repeated point keeps the row with the highest ``time`` (ties: the later write), as the real
ingest does. ``ingest_counts`` records every accepted point so the duplicates absorbed can be
told apart from the rows stored.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from syncd.server.db import Database
from syncd.server.ndjson import MetricRow

_UPSERT = (
    "INSERT INTO metrics (series, step, time, value) VALUES (?,?,?,?)"
    " ON CONFLICT (series, step) DO UPDATE SET time=excluded.time, value=excluded.value"
    " WHERE excluded.time >= metrics.time"
)


def ch_time(ms: int) -> str:
    """A time as the metrics store prints it: ``2024-05-01 12:00:00.123`` (UTC)."""
    stamp = dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
    return stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}"


def log_group(name: str) -> str:
    """``train/loss`` -> ``train``; a name without ``/`` has an empty group."""
    return name.rsplit("/", 1)[0] if "/" in name else ""


def _value(value: float | None) -> tuple[float, str]:
    """Non-finite values come back as 0 with a flag, like the real metrics endpoint."""
    if value is None:
        return 0, "NaN"
    if math.isinf(value):
        return 0, "Inf" if value > 0 else "-Inf"
    return value, ""


class Series:
    """Writes and reads of run series. ``run_id`` is whatever ``X-Run-Id`` said."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._ids: dict[tuple[str, int], dict[str, int]] = {}

    def series_ids(self, project: str, run_id: int) -> dict[str, int]:
        """The name -> series id map of a run (cached; extend it with :meth:`new_series`)."""
        known = self._ids.get((project, run_id))
        if known is None:
            known = dict(
                self.db.query(
                    "SELECT name, id FROM series WHERE project=? AND run_id=?", (project, run_id)
                )
            )
            self._ids[(project, run_id)] = known
        return known

    def new_series(self, project: str, run_id: int, name: str) -> int:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO series (project, run_id, name) VALUES (?,?,?)",
                (project, run_id, name),
            )
            series = conn.execute(
                "SELECT id FROM series WHERE project=? AND run_id=? AND name=?",
                (project, run_id, name),
            ).fetchone()[0]
        self.series_ids(project, run_id)[name] = series
        return series

    def add_metrics(self, project: str, run_id: int, rows: list[MetricRow]) -> None:
        """Upsert rows made by :func:`~syncd.server.ndjson.metric_rows`."""
        if not rows:
            return
        with self.db.transaction() as conn:
            conn.executemany(_UPSERT, rows)
            conn.execute(
                "INSERT INTO ingest_counts (project, run_id, points) VALUES (?,?,?)"
                " ON CONFLICT DO UPDATE SET points = points + excluded.points",
                (project, run_id, len(rows)),
            )

    def add_logs(self, project: str, run_id: int, lines: list[dict]) -> None:
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO logs (project, run_id, time, message, line_number, log_type)"
                " VALUES (?,?,?,?,?,?)",
                [
                    (project, run_id, o["time"], o["message"], o.get("lineNumber"), o.get("logType"))
                    for o in lines
                ],
            )

    def add_data(self, project: str, run_id: int, lines: list[dict]) -> None:
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO data (project, run_id, time, log_name, step, data_type, data)"
                " VALUES (?,?,?,?,?,?,?)",
                [
                    (project, run_id, o["time"], o["logName"], o["step"], o["dataType"], o["data"])
                    for o in lines
                ],
            )

    # --- reads ------------------------------------------------------------------------------
    def metrics(
        self, project: str, run_id: int, log_name: str | None, limit: int,
        step_min: int | None, step_max: int | None,
    ) -> list[dict[str, Any]]:
        """Points ordered by name then step, sampled down to ``limit`` per name."""
        where, params = "s.project=? AND s.run_id=?", [project, run_id]
        if log_name is not None:
            where += " AND s.name=?"
            params.append(log_name)
        if step_min is not None:
            where += " AND m.step >= ?"
            params.append(step_min)
        if step_max is not None:
            where += " AND m.step <= ?"
            params.append(step_max)
        rows = self.db.query(
            "SELECT s.name, m.step, m.time, m.value FROM series s JOIN metrics m"
            f" ON m.series = s.id WHERE {where} ORDER BY s.name, m.step",
            params,
        )
        by_name: dict[str, list[tuple]] = {}
        for row in rows:
            by_name.setdefault(row[0], []).append(row)
        out = []
        for name, points in by_name.items():
            total = len(points)
            stride = math.ceil(total / limit) if total > limit else 1
            for rn, (_, step, when, value) in enumerate(points, start=1):
                if stride > 1 and rn % stride != 1 and rn != total:
                    continue
                number, flag = _value(value)
                out.append(
                    {"logName": name, "logGroup": log_group(name), "value": number,
                     "valueFlag": flag, "time": ch_time(when), "step": step}
                )
        return out

    def metric_names(
        self, project: str, run_ids: list[int] | None, search: str | None, limit: int
    ) -> list[str]:
        where, params = "project=?", [project]
        if run_ids is not None:
            where += f" AND run_id IN ({','.join('?' * len(run_ids))})"
            params.extend(run_ids)
        if search:
            where += " AND instr(lower(name), lower(?)) > 0"
            params.append(search)
        rows = self.db.query(
            f"SELECT DISTINCT name FROM series WHERE {where} ORDER BY name LIMIT ?",
            [*params, limit],
        )
        return [r[0] for r in rows]

    def logs(self, project: str, run_id: int, log_type: str | None, limit: int, offset: int) -> list[dict]:
        where, params = "project=? AND run_id=?", [project, run_id]
        if log_type:
            where += " AND lower(log_type)=lower(?)"
            params.append(log_type)
        rows = self.db.query(
            "SELECT message, log_type, time, line_number FROM logs"
            f" WHERE {where} ORDER BY time, id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [
            {"message": m, "logType": t, "time": ch_time(w), "lineNumber": n, "step": n}
            for m, t, w, n in rows
        ]

    def data(self, project: str, run_id: int, log_name: str | None, limit: int,
             offset: int) -> list[dict]:
        where, params = "project=? AND run_id=?", [project, run_id]
        if log_name is not None:
            where += " AND log_name=?"
            params.append(log_name)
        rows = self.db.query(
            "SELECT time, step, data_type, log_name, data FROM data"
            f" WHERE {where} ORDER BY time, id LIMIT ? OFFSET ?", [*params, limit, offset])
        return [{"time": t, "step": s, "dataType": k, "logName": n, "data": d}
                for t, s, k, n, d in rows]

    def counts(self, run_id: int) -> dict[str, int]:
        """Points accepted vs rows stored for a run (all projects): the dedup oracle."""
        received = self.db.query(
            "SELECT coalesce(sum(points), 0) FROM ingest_counts WHERE run_id=?", (run_id,)
        )[0][0]
        stored = self.db.query(
            "SELECT count(*) FROM series s JOIN metrics m ON m.series = s.id WHERE s.run_id=?",
            (run_id,),
        )[0][0]
        return {"received": received, "stored": stored, "duplicates": received - stored}
