"""What a run is, as its properties show it: ids, names, config, tags, step, fork, and the
server's ids once plutosync has created it. :class:`pluto_offline.run.Run` is what it does."""

from __future__ import annotations

import sqlite3
from typing import Any

from pluto_offline.errors import JournalError


class RunInfo:
    """The read-only side of a run. The fields are set by :class:`~pluto_offline.run.Run`."""

    _run_id: str
    _ref_kind: str
    _project: str
    _name: str
    _config: Any
    _tags: list[str]
    _step: int
    _resumed: bool
    _fork: dict | None
    _server: tuple | None  # (server id, display id, url) once read from the journal

    def _read_delivery(self) -> tuple | None:
        """``(server_id, display_id, url)`` from the journal's delivery table, or None."""
        raise NotImplementedError

    @property
    def run_id(self) -> str:
        """The client-chosen id (sent as ``externalId``); for a server-side resume, the ref."""
        return self._run_id

    @property
    def id(self) -> int | None:
        """The server's numeric id, once the daemon has created the run (else None)."""
        return self._server_fields()[0]

    @property
    def display_id(self) -> str | None:
        return self._server_fields()[1]

    @property
    def url(self) -> str | None:
        return self._server_fields()[2]

    def _server_fields(self) -> tuple:
        if self._server is not None:
            return self._server
        fields: tuple = (None, None, None)
        if self._ref_kind == "id":
            fields = (int(self._run_id), None, None)
        elif self._ref_kind == "display":
            fields = (None, self._run_id, None)
        try:
            row = self._read_delivery()
        except (JournalError, sqlite3.DatabaseError):
            row = None
        if row and row[0] is not None:
            fields = tuple(row)
            self._server = fields
        return fields

    @property
    def config(self) -> Any:
        return self._config

    @property
    def tags(self) -> list[str]:
        return self._tags

    @property
    def name(self) -> str:
        return self._name

    @property
    def project(self) -> str:
        return self._project

    @property
    def step(self) -> int:
        """The step of the last ``log()`` (the next implicit step is ``step + 1``)."""
        return self._step

    @property
    def resumed(self) -> bool:
        return self._resumed

    @property
    def fork_run_id(self) -> Any:
        return None if self._fork is None else next(iter(self._fork["parent"].values()))

    @property
    def fork_step(self) -> int | None:
        return None if self._fork is None else self._fork["step"]

    def __repr__(self) -> str:
        return f"<pluto_offline.Run {self._project}/{self._run_id} step={self._step}>"

