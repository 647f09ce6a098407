"""``POST /api/runs/alert`` (the py service's): a run's alerts, stored and read back.

Body (pluto-api.md, the stock client's ``make_compat_alert_v1``): ``{"runId": n, "alert":
{"timestamp": ms, "level": str, "title": str, "body": str, "email": bool | null, "url": str |
null}}``. Unknown run → 404; a missing or non-object ``alert`` → 400. This server only stores
them (the real service sends email): ``GET /_admin/alerts?runId=n`` lists them, oldest first.
"""

from __future__ import annotations

import json
from typing import Any

from syncd.server import validate as v
from syncd.server.db import Database
from syncd.server.errors import api_error

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    alert TEXT NOT NULL
);
"""


class Alerts:
    def __init__(self, db: Database) -> None:
        self.db = db
        with db.lock:
            db.conn.executescript(SCHEMA)

    def add(self, body: dict) -> dict[str, Any]:
        run_id = v.req_int(body, "runId")
        alert = body.get("alert")
        if not isinstance(alert, dict):
            raise api_error(400, "alert must be an object")
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone() is None:
                raise api_error(404, "Run not found")
            conn.execute("INSERT INTO alerts (run_id, alert) VALUES (?, ?)",
                         (run_id, json.dumps(alert)))
        return {"success": True}

    def list(self, run_id: int) -> list[dict]:
        return [json.loads(a) for (a,) in self.db.query(
            "SELECT alert FROM alerts WHERE run_id=? ORDER BY id", (run_id,))]
