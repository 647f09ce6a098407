"""Routing: one request in (method, path, query, headers, body), one :class:`Response` out.

Knows nothing of sockets (see :mod:`syncd.server.http`), so every endpoint can be driven
directly. Auth: every request needs ``Authorization: Bearer <key>`` with a key in the store;
the api answers 401 otherwise, the ingest service 422.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from syncd.server import faults as faults_mod
from syncd.server import ndjson
from syncd.server import validate as v
from syncd.server.alerts import Alerts
from syncd.server.db import Database
from syncd.server.errors import HttpError, api_error, ingest_error, validation_error
from syncd.server.files import Files
from syncd.server.reads import Reads
from syncd.server.runs import ORG_SLUG, Runs
from syncd.server.series import Series
from syncd.server.validate import as_int


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        return cls(status, json.dumps(payload).encode(), "application/json", headers or {})


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes

    def json_body(self) -> dict[str, Any]:
        # The real api reads a body only when it is declared JSON; anything else is {}.
        if not self.headers.get("Content-Type", "").lower().startswith("application/json"):
            return {}
        try:
            data = v.loads(self.body or b"null")
        except ValueError:
            raise api_error(400, "Malformed JSON in request body") from None
        if not isinstance(data, dict):
            raise validation_error("body", "Expected object")
        return data

    def int_param(self, name: str, default: int | None = None, required: bool = False) -> int | None:
        raw = self.query.get(name)
        if raw is None or raw == "":
            if required:
                raise validation_error(name, "Required")
            return default
        value = as_int(int(raw)) if raw.lstrip("-").isdigit() else None
        if value is None or value < 0:
            raise validation_error(name, "Expected a non-negative integer")
        return value

    def str_param(self, name: str, required: bool = False) -> str | None:
        value = self.query.get(name)
        if required and not value:
            raise validation_error(name, "Required")
        return value


Handler = Callable[[Request], Response]


class App:
    """The whole server minus the sockets.

    >>> app = App(Database(tmpdir), "http://127.0.0.1:3001")  # doctest: +SKIP
    >>> app.handle(Request("POST", "/api/slug", {}, {"Authorization": "Bearer k"}, b""))  # doctest: +SKIP
    """

    def __init__(
        self, db: Database, base_url: str, fault_table: faults_mod.FaultTable | None = None,
        reaper: tuple[float, float] = (150.0, 1800.0),
    ) -> None:
        self.db = db
        self.runs = Runs(db, base_url)
        self.reads = Reads(db, self.runs)
        self.series = Series(db)
        self.alerts = Alerts(db)
        self.files = Files(db, os.path.dirname(db.path), lambda: self.runs.base_url)
        self.faults = fault_table or faults_mod.FaultTable()
        self.reaper = reaper
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._post: dict[str, Handler] = {
            "/api/slug": lambda r: Response.json(200, {"organization": {"slug": ORG_SLUG, "name": "Local"}}),
            "/api/runs/create": self._json(self.runs.create),
            "/api/runs/resume": self._json(self.runs.resume),
            "/api/runs/status/update": self._json(self.runs.update_status),
            "/api/runs/config/update": self._json(self.runs.update_config),
            "/api/runs/tags/update": self._json(self.runs.update_tags),
            "/api/runs/logName/add": self._json(self.runs.add_log_names),
            "/api/runs/trigger": self._json(self.runs.heartbeat),
            "/api/runs/alert": self._json(self.alerts.add),
            "/ingest/metrics": self._ingest_metrics,
            "/ingest/logs": self._ingest_lines(ndjson.LOG_FIELDS, self.series.add_logs),
            "/ingest/data": self._ingest_lines(ndjson.DATA_FIELDS, self.series.add_data),
            "/files": self._presign,
            "/_admin/faults": self._add_faults,
            "/_admin/reap": lambda r: Response.json(200, {"reaped": self.runs.reap(*self.reaper)}),
        }
        self._get: dict[str, Handler] = {
            "/api/runs/projects": lambda r: Response.json(200, self.reads.projects()),
            "/api/runs/list": self._list_runs,
            "/api/runs/metric-names": self._metric_names,
            "/api/runs/metrics": self._metrics,
            "/api/runs/logs": self._logs,
            "/api/runs/data": self._data,
            "/_admin/alerts": lambda r: Response.json(
                200, {"alerts": self.alerts.list(r.int_param("runId", required=True))}),
            "/api/runs/files": self._list_files,
            "/_admin/faults": lambda r: Response.json(200, {"faults": self.faults.list()}),
            "/_admin/stats": self._stats,
            "/_admin/health": lambda r: Response.json(200, {"ok": True}),
        }

    # --- entry point ------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        with self._counts_lock:
            self._counts[request.path] += 1
        ingest = request.path.startswith("/ingest/") or request.path == "/files"
        try:
            if not self._authorized(request.headers):
                if ingest:
                    raise ingest_error("Invalid API key")
                raise HttpError(401, {"error": "Unauthorized", "message": "Invalid API key"})
            return self._route(request)(request)
        except HttpError as err:
            return Response.json(err.status, err.body)

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        scheme, _, key = (headers.get("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and bool(key) and self.db.key_is_valid(key.strip())

    def _route(self, request: Request) -> Handler:
        path = request.path
        if request.method == "POST" and path in self._post:
            return self._post[path]
        if request.method == "DELETE" and path == "/_admin/faults":
            return lambda r: Response.json(200, {"cleared": self.faults.clear()})
        if request.method == "GET":
            if path in self._get:
                return self._get[path]
            if path.startswith("/api/runs/details/by-display-id/"):
                return self._details_by_display_id
            if path.startswith("/api/runs/details/"):
                return self._details
        raise api_error(404, "Not found")

    @staticmethod
    def _json(action: Callable[[dict], dict]) -> Handler:
        return lambda request: Response.json(200, action(request.json_body()))

    # --- ingest -----------------------------------------------------------------------------
    @staticmethod
    def _ingest_target(request: Request) -> tuple[str, int]:
        for header in ("X-Run-Id", "X-Project-Name"):
            if request.headers.get(header) is None:
                raise ingest_error(f"Missing {header} header", status=400)
        raw = request.headers["X-Run-Id"].strip()
        # The ingest service does not check the run: a non-numeric id is stored as run 0.
        return request.headers["X-Project-Name"], int(raw) if raw.isdigit() else 0

    @staticmethod
    def _processed(records: int) -> Response:
        text = f"Stream processed successfully: {records} records"
        return Response(200, text.encode(), "text/plain; charset=utf-8")

    def _ingest_metrics(self, request: Request) -> Response:
        project, run_id = self._ingest_target(request)
        rows, lines, error = ndjson.metric_rows(
            request.body,
            self.series.series_ids(project, run_id),
            lambda name: self.series.new_series(project, run_id, name),
        )
        # Lines before a bad one are kept, as the streaming ingest may already have stored them.
        self.series.add_metrics(project, run_id, rows)
        if error:
            raise ingest_error(f"Invalid record on line {error[0]}: {error[1]}")
        return self._processed(lines)

    def _ingest_lines(self, fields: dict[str, type], store: Callable) -> Handler:
        def handle(request: Request) -> Response:
            project, run_id = self._ingest_target(request)
            lines, error = ndjson.checked_lines(request.body, fields)
            if lines:
                store(project, run_id, lines)
            if error:
                raise ingest_error(f"Invalid record on line {error[0]}: {error[1]}")
            return self._processed(len(lines))

        return handle

    def _presign(self, request: Request) -> Response:
        project, run_id = self._ingest_target(request)
        try:
            body = v.loads(request.body or b"null")
        except ValueError:
            raise ingest_error("Invalid JSON body") from None
        return Response.json(200, self.files.presign(project, run_id, body))

    # --- reads ------------------------------------------------------------------------------
    def _list_files(self, request: Request) -> Response:
        project = request.str_param("projectName", required=True)
        run_id = request.int_param("runId", required=True)
        return Response.json(200, self.files.list(project, run_id, request.str_param("logName")))

    def _list_runs(self, request: Request) -> Response:
        project = request.str_param("projectName", required=True)
        tags = [t for t in (request.str_param("tags") or "").split(",") if t]
        limit = min(request.int_param("limit", 50), 200)
        offset = min(request.int_param("offset", 0), 100_000)
        return Response.json(
            200, self.reads.list_runs(project, request.str_param("search"), tags, limit, offset)
        )

    def _details(self, request: Request) -> Response:
        raw = request.path.rsplit("/", 1)[1]
        if not raw.isdigit():
            raise validation_error("runId", "Expected number")
        return Response.json(200, self.reads.details(int(raw)))

    def _details_by_display_id(self, request: Request) -> Response:
        display_id = unquote(request.path.rsplit("/", 1)[1])
        return Response.json(
            200, self.reads.details_by_display_id(display_id, request.str_param("projectName"))
        )

    def _metric_names(self, request: Request) -> Response:
        project = request.str_param("projectName", required=True)
        raw = request.str_param("runIds") or request.str_param("runId")
        run_ids = None
        if raw:
            parts = [p.strip() for p in raw.split(",") if p.strip()]
            if not all(p.isdigit() for p in parts):
                raise validation_error("runIds", "Expected comma-separated numbers")
            run_ids = [int(p) for p in parts]
        limit = min(request.int_param("limit", 500), 500)
        names = self.series.metric_names(project, run_ids, request.str_param("search"), limit)
        return Response.json(200, {"metricNames": names})

    def _metrics(self, request: Request) -> Response:
        project = request.str_param("projectName", required=True)
        run_id = request.int_param("runId", required=True)
        limit = max(1, min(request.int_param("limit", 10_000), 10_000))
        points = self.series.metrics(
            project, run_id, request.str_param("logName"), limit,
            request.int_param("stepMin"), request.int_param("stepMax"),
        )
        return Response.json(200, {"metrics": points})

    def _logs(self, request: Request) -> Response:
        project = request.str_param("projectName", required=True)
        run_id = request.int_param("runId", required=True)
        limit = min(request.int_param("limit", 10_000), 10_000)
        logs = self.series.logs(
            project, run_id, request.str_param("logType"), limit, request.int_param("offset", 0)
        )
        return Response.json(200, {"logs": logs})

    def _data(self, request: Request) -> Response:
        """This server's own read of data rows (string series, histograms, tables, graphs):
        ``{"data": [{"time", "step", "dataType", "logName", "data"}]}`` by time."""
        project = request.str_param("projectName", required=True)
        run_id = request.int_param("runId", required=True)
        limit = min(request.int_param("limit", 10_000), 10_000)
        rows = self.series.data(project, run_id, request.str_param("logName"), limit,
                                request.int_param("offset", 0))
        return Response.json(200, {"data": rows})

    # --- admin ------------------------------------------------------------------------------
    def _add_faults(self, request: Request) -> Response:
        data = request.json_body()
        try:
            rules = [faults_mod.rule_from_dict(d) for d in data.get("rules", [data])]
        except (ValueError, TypeError) as exc:
            raise api_error(400, str(exc)) from None
        for rule in rules:
            self.faults.add(rule)
        return Response.json(200, {"faults": self.faults.list()})

    def _stats(self, request: Request) -> Response:
        with self._counts_lock:
            stats: dict[str, Any] = {"requests": dict(self._counts)}
        run_id = request.int_param("runId")
        if run_id is not None:
            stats["metrics"] = self.series.counts(run_id)
            stats["files"] = self.files.count(run_id)
        return Response.json(200, stats)
