"""The api service's write side: create, resume, status, config, tags, log names, heartbeat.

Each method takes the request's JSON body and returns the JSON answer, or raises
:class:`~syncd.server.errors.HttpError` with the real server's status and reason.
"""

from __future__ import annotations

import json
import time
from typing import Any

from syncd.server import validate as v
from syncd.server.db import Database, now_ms
from syncd.server.errors import NOT_FOUND, api_error
from syncd.server.prefix import format_display_id, parse_display_id, project_prefix

ORG_SLUG = "local"
INVALID_JSON = "Invalid JSON format in request body"
# Higher wins: a terminal status below the current one is ignored.
SEVERITY = {"COMPLETED": 1, "TERMINATED": 2, "CANCELLED": 3, "FAILED": 4}

RUN_COLUMNS = (
    "r.id, r.number, p.prefix, p.name, r.status, r.config, r.tags, r.name, r.external_id"
)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


class Runs:
    """Run lifecycle on top of :class:`Database`. ``base_url`` builds the ``url`` answers."""

    def __init__(self, db: Database, base_url: str) -> None:
        self.db = db
        self.base_url = base_url

    def run_url(self, project: str, run_id: int) -> str:
        return f"{self.base_url}/o/{ORG_SLUG}/projects/{project}/{run_id}"

    def _answer(self, row: tuple, resumed: bool, fork: tuple = (None, None)) -> dict[str, Any]:
        run_id, number, prefix, project = row[0], row[1], row[2], row[3]
        return {
            "runId": run_id,
            "number": number,
            "displayId": format_display_id(prefix, number),
            "projectName": project,
            "organizationSlug": ORG_SLUG,
            "url": self.run_url(project, run_id),
            "resumed": resumed,
            "forkedFromRunId": fork[0],
            "forkStep": fork[1],
        }

    @staticmethod
    def _set_running(conn: Any, run_id: int, at_ms: int) -> None:
        conn.execute(
            "UPDATE runs SET status='RUNNING', status_updated=?, updated_at=?, running_since=?,"
            " heartbeat_at=NULL WHERE id=?",
            (at_ms, at_ms, time.time(), run_id),
        )

    @staticmethod
    def _fetch(conn: Any, where: str, params: tuple) -> list[tuple]:
        return conn.execute(
            f"SELECT {RUN_COLUMNS} FROM runs r JOIN projects p ON p.id = r.project_id WHERE {where}",
            params,
        ).fetchall()

    # --- create -----------------------------------------------------------------------------
    def create(self, body: dict) -> dict[str, Any]:
        name = v.req_str(body, "runName")
        project = v.req_str(body, "projectName")
        external_id = v.opt_str(body, "externalId", min_len=1)
        tags = v.str_list(body, "tags", required=False, max_len=v.MAX_TAGS) or []
        v.check_tags(tags)
        config = v.json_text(body, "config", INVALID_JSON)
        logger_settings = v.json_text(body, "loggerSettings", INVALID_JSON)
        system_metadata = v.json_text(body, "systemMetadata", INVALID_JSON)
        created_at = v.opt_int(body, "createdAt")
        updated_at = v.opt_int(body, "updatedAt")
        fork_run_id = v.opt_int(body, "forkRunId")
        fork_step = v.opt_int(body, "forkStep")
        inherit_config = v.opt_bool(body, "inheritConfig", True)
        inherit_tags = v.opt_bool(body, "inheritTags", False)
        if fork_run_id is not None and fork_step is None:
            raise api_error(400, "forkStep is required when forkRunId is provided")

        now = now_ms()
        with self.db.transaction() as conn:
            project_id, prefix = self._project(conn, project, now)
            if external_id is not None:
                found = self._fetch(
                    conn, "r.project_id=? AND r.external_id=?", (project_id, external_id)
                )
                if found:
                    return self._reattach(conn, found[0], config, now)
            if fork_run_id is not None:
                config, tags = self._fork(
                    conn, project_id, fork_run_id, fork_step, config, tags,
                    inherit_config, inherit_tags,
                )
            else:
                fork_step = None
            number = conn.execute(
                "UPDATE projects SET next_number = next_number + 1, updated_at=? WHERE id=?"
                " RETURNING next_number - 1",
                (now, project_id),
            ).fetchone()[0]
            created = created_at if created_at is not None else now
            run_id = conn.execute(
                "INSERT INTO runs (project_id, number, name, external_id, status, config, tags,"
                " logger_settings, system_metadata, created_at, updated_at, fork_run_id,"
                " fork_step, running_since) VALUES (?,?,?,?,'RUNNING',?,?,?,?,?,?,?,?,?)"
                " RETURNING id",
                (
                    project_id, number, name, external_id, _dumps(config), json.dumps(tags),
                    _dumps(logger_settings), _dumps(system_metadata), created,
                    updated_at if updated_at is not None else created,
                    fork_run_id, fork_step, time.time(),
                ),
            ).fetchone()[0]
        return self._answer((run_id, number, prefix, project), False, (fork_run_id, fork_step))

    @staticmethod
    def _project(conn: Any, name: str, now: int) -> tuple[int, str]:
        row = conn.execute("SELECT id, prefix FROM projects WHERE name=?", (name,)).fetchone()
        if row:
            return row[0], row[1]
        prefix = project_prefix(name)
        project_id = conn.execute(
            "INSERT INTO projects (name, prefix, created_at, updated_at) VALUES (?,?,?,?)"
            " RETURNING id",
            (name, prefix, now, now),
        ).fetchone()[0]
        return project_id, prefix

    def _reattach(self, conn: Any, row: tuple, config: Any, now: int) -> dict[str, Any]:
        """A create repeating a known externalId: the same run, back to RUNNING."""
        run_id, status, old_config = row[0], row[4], _loads(row[5])
        if status != "RUNNING":
            self._set_running(conn, run_id, now)
        if config is not None:
            conn.execute(
                "UPDATE runs SET config=?, updated_at=? WHERE id=?",
                (_dumps(v.deep_merge(old_config, config)), now, run_id),
            )
        return self._answer(row, True)

    @staticmethod
    def _fork(
        conn: Any, project_id: int, parent_id: int, step: int, config: Any, tags: list[str],
        inherit_config: bool, inherit_tags: bool,
    ) -> tuple[Any, list[str]]:
        parent = conn.execute(
            "SELECT config, tags FROM runs WHERE id=? AND project_id=?", (parent_id, project_id)
        ).fetchone()
        if parent is None:
            raise api_error(400, "Fork parent run not found in this project")
        last = conn.execute(
            "SELECT max(m.step) FROM series s JOIN metrics m ON m.series = s.id WHERE s.run_id=?",
            (parent_id,),
        ).fetchone()[0]
        last = last if last is not None else 0
        if step < 0 or step > last:
            raise api_error(
                400, f"forkStep {step} is beyond the parent run's last step ({last})"
            )
        parent_config = _loads(parent[0])
        if inherit_config and isinstance(parent_config, dict):
            # The server's merge is shallow: the child's top-level keys win.
            config = {**parent_config, **(config if isinstance(config, dict) else {})}
        if inherit_tags:
            tags = list(dict.fromkeys(json.loads(parent[1]) + tags))
            if len(tags) > v.MAX_TAGS:
                raise api_error(400, f"A run can have at most {v.MAX_TAGS} tags")
            v.check_tags(tags)
        return config, tags

    # --- resume -----------------------------------------------------------------------------
    def resume(self, body: dict) -> dict[str, Any]:
        given = [k for k in ("runId", "displayId", "externalId") if body.get(k) is not None]
        if len(given) != 1:
            raise api_error(400, "Exactly one of runId, displayId or externalId must be provided")
        project = v.opt_str(body, "projectName")
        with self.db.transaction() as conn:
            if given[0] == "runId":
                rows = self._fetch(conn, "r.id=?", (v.req_int(body, "runId"),))
            elif given[0] == "externalId":
                external_id = v.req_str(body, "externalId", min_len=1)
                if project is None:
                    raise api_error(400, "projectName is required when using externalId")
                rows = self._fetch(
                    conn, "p.name=? AND r.external_id=?", (project, external_id)
                )
            else:
                rows = self._by_display_id(conn, v.req_str(body, "displayId"), project)
            if not rows:
                raise api_error(404, NOT_FOUND)
            if rows[0][4] != "RUNNING":
                self._set_running(conn, rows[0][0], now_ms())
        answer = self._answer(rows[0], True)
        del answer["forkedFromRunId"], answer["forkStep"]
        return answer

    def _by_display_id(self, conn: Any, display_id: str, project: str | None) -> list[tuple]:
        parsed = parse_display_id(display_id)
        if parsed is None:
            raise api_error(
                400, "Invalid displayId format. Expected PREFIX-NUMBER (e.g., 'MMP-1')"
            )
        where, params = "p.prefix=? AND r.number=?", parsed
        if project is not None:
            where, params = where + " AND p.name=?", (*parsed, project)
        rows = self._fetch(conn, where, params)
        if len(rows) > 1:
            raise api_error(
                409, f"Display ID {display_id} matches runs in several projects; pass projectName"
            )
        return rows

    # --- updates ----------------------------------------------------------------------------
    def _require_run(self, conn: Any, run_id: int) -> tuple:
        row = conn.execute(
            "SELECT status, config, logger_settings FROM runs WHERE id=?", (run_id,)
        ).fetchone()
        if row is None:
            raise api_error(404, NOT_FOUND)
        return row

    def update_status(self, body: dict) -> dict[str, Any]:
        run_id = v.req_int(body, "runId")
        status = v.req_enum(body, "status", v.STATUSES)
        metadata = v.json_text(body, "statusMetadata", "Invalid statusMetadata JSON")
        settings = v.json_text(body, "loggerSettings", INVALID_JSON)
        at = v.opt_int(body, "statusUpdated")
        at = at if at is not None else now_ms()
        with self.db.transaction() as conn:
            current, _, old_settings = self._require_run(conn, run_id)
            if settings is not None:
                conn.execute(
                    "UPDATE runs SET logger_settings=? WHERE id=?",
                    (_dumps(v.deep_merge(_loads(old_settings), settings)), run_id),
                )
            if status == "RUNNING":
                self._set_running(conn, run_id, at)
                if metadata is not None:  # stored as given, like a terminal status's
                    conn.execute("UPDATE runs SET status_metadata=? WHERE id=?",
                                 (_dumps(metadata), run_id))
            elif SEVERITY[status] >= SEVERITY.get(current, 0):
                conn.execute(
                    "UPDATE runs SET status=?, status_metadata=?, status_updated=?, updated_at=?"
                    " WHERE id=?",
                    (status, _dumps(metadata), at, now_ms(), run_id),
                )
        return {"success": True}

    def update_config(self, body: dict) -> dict[str, Any]:
        run_id = v.req_int(body, "runId")
        text = v.req_str(body, "config")
        try:
            delta = v.loads(text)
        except ValueError:
            raise api_error(400, "Invalid config JSON") from None
        if not isinstance(delta, dict):
            raise api_error(400, "Invalid config JSON: expected an object")
        with self.db.transaction() as conn:
            old = _loads(self._require_run(conn, run_id)[1])
            conn.execute(
                "UPDATE runs SET config=?, updated_at=? WHERE id=?",
                (_dumps(v.deep_merge(old if old is not None else {}, delta)), now_ms(), run_id),
            )
        return {"success": True}

    def update_tags(self, body: dict) -> dict[str, Any]:
        run_id = v.req_int(body, "runId")
        tags = v.check_tags(v.str_list(body, "tags", required=True, max_len=v.MAX_TAGS))
        with self.db.transaction() as conn:
            self._require_run(conn, run_id)
            conn.execute(
                "UPDATE runs SET tags=?, updated_at=? WHERE id=?",
                (json.dumps(tags), now_ms(), run_id),
            )
        return {"success": True}

    def add_log_names(self, body: dict) -> dict[str, Any]:
        run_id = v.req_int(body, "runId")
        names = v.str_list(body, "logName", required=True)
        log_type = v.req_enum(body, "logType", v.LOG_TYPES)
        with self.db.transaction() as conn:
            self._require_run(conn, run_id)
            conn.executemany(
                "INSERT OR IGNORE INTO log_names (run_id, log_name, log_type) VALUES (?,?,?)",
                [(run_id, n, log_type) for n in names],
            )
        return {"success": True}

    def heartbeat(self, body: dict) -> dict[str, Any]:
        run_id = v.req_int(body, "runId")
        with self.db.transaction() as conn:
            status = self._require_run(conn, run_id)[0]
            conn.execute("UPDATE runs SET heartbeat_at=? WHERE id=?", (time.time(), run_id))
        return {"success": True, "status": status}

    def reap(self, heartbeat_timeout: float, initial_timeout: float) -> list[int]:
        """Mark FAILED the RUNNING runs whose heartbeat stopped; returns their ids."""
        now = time.time()
        with self.db.transaction() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM runs WHERE status='RUNNING' AND ("
                    " (heartbeat_at IS NOT NULL AND heartbeat_at < ?) OR"
                    " (heartbeat_at IS NULL AND running_since < ?))",
                    (now - heartbeat_timeout, now - initial_timeout),
                )
            ]
            reason = json.dumps({"reason": "no heartbeat", "reapedBy": "server"})
            at = now_ms()
            conn.executemany(
                "UPDATE runs SET status='FAILED', status_metadata=?, status_updated=?,"
                " updated_at=? WHERE id=?",
                [(reason, at, at, i) for i in ids],
            )
        return ids
