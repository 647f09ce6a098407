"""The read side used by ``pluto.query``: projects, run lists, run details.

Times of runs are ISO 8601 strings (``2024-05-01T12:00:00.000Z``), as the real api prints them.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from syncd.server.db import Database
from syncd.server.errors import NOT_FOUND, api_error
from syncd.server.prefix import format_display_id, parse_display_id
from syncd.server.runs import Runs
from syncd.server.series import log_group

_SELECT = (
    "SELECT r.id, r.name, r.number, p.prefix, r.status, r.tags, r.config, r.system_metadata,"
    " r.logger_settings, r.status_metadata, r.created_at, r.updated_at, r.status_updated,"
    " p.name, r.external_id, r.fork_run_id, r.fork_step FROM runs r"
    " JOIN projects p ON p.id = r.project_id"
)


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    stamp = dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class Reads:
    def __init__(self, db: Database, runs: Runs) -> None:
        self.db = db
        self.runs = runs

    def _run(self, row: tuple) -> dict[str, Any]:
        return {
            "id": row[0],
            "name": row[1],
            "number": row[2],
            "displayId": format_display_id(row[3], row[2]),
            "status": row[4],
            "tags": json.loads(row[5]),
            "config": _json(row[6]),
            "systemMetadata": _json(row[7]),
            "loggerSettings": _json(row[8]),
            "statusMetadata": _json(row[9]),
            "createdAt": iso(row[10]),
            "updatedAt": iso(row[11]),
            "statusUpdated": iso(row[12]),
            "projectName": row[13],
            "externalId": row[14],
            "forkedFromRunId": row[15],
            "forkStep": row[16],
            "url": self.runs.run_url(row[13], row[0]),
        }

    def _details(self, row: tuple) -> dict[str, Any]:
        run = self._run(row)
        names = self.db.query(
            "SELECT log_name, log_type FROM log_names WHERE run_id=? ORDER BY log_name", (row[0],)
        )
        run["logNames"] = [
            {"logName": n, "logType": t, "logGroup": log_group(n) or None} for n, t in names
        ]
        return run

    def projects(self) -> dict[str, Any]:
        rows = self.db.query(
            "SELECT p.id, p.name, count(r.id), p.created_at, p.updated_at FROM projects p"
            " LEFT JOIN runs r ON r.project_id = p.id GROUP BY p.id ORDER BY p.name"
        )
        return {
            "projects": [
                {"id": i, "name": n, "runCount": c, "createdAt": iso(a), "updatedAt": iso(u)}
                for i, n, c, a, u in rows
            ]
        }

    def list_runs(
        self, project: str, search: str | None, tags: list[str], limit: int, offset: int
    ) -> dict[str, Any]:
        where, params = "p.name=?", [project]
        if search:
            where += " AND instr(lower(r.name), lower(?)) > 0"
            params.append(search)
        for tag in tags:
            where += " AND EXISTS (SELECT 1 FROM json_each(r.tags) WHERE value=?)"
            params.append(tag)
        rows = self.db.query(
            f"{_SELECT} WHERE {where} ORDER BY r.created_at DESC, r.id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return {"runs": [self._run(r) for r in rows]}

    def details(self, run_id: int) -> dict[str, Any]:
        rows = self.db.query(f"{_SELECT} WHERE r.id=?", (run_id,))
        if not rows:
            raise api_error(404, NOT_FOUND)
        return self._details(rows[0])

    def details_by_display_id(self, display_id: str, project: str | None) -> dict[str, Any]:
        parsed = parse_display_id(display_id)
        if parsed is None:
            raise api_error(
                400, "Invalid displayId format. Expected PREFIX-NUMBER (e.g., 'MMP-1')"
            )
        where, params = "p.prefix=? AND r.number=?", list(parsed)
        if project:
            where += " AND p.name=?"
            params.append(project)
        rows = self.db.query(f"{_SELECT} WHERE {where}", params)
        if not rows:
            raise api_error(404, NOT_FOUND)
        if len(rows) > 1:
            raise api_error(409, f"Display ID {display_id} matches runs in several projects")
        return self._details(rows[0])
