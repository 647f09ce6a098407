"""Error answers, shaped like the real services' ones.

Handlers raise :class:`HttpError`; the HTTP layer turns it into a response.
"""

from __future__ import annotations

from typing import Any


class HttpError(Exception):
    """An error answer: ``status`` and a JSON ``body``."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


def api_error(status: int, reason: str) -> HttpError:
    """The api service's plain error: ``{"error": "<reason>"}``."""
    return HttpError(status, {"error": reason})


def validation_error(field: str, message: str) -> HttpError:
    """A schema validation failure: 400 carrying an error object, as the api's validator does."""
    return HttpError(
        400,
        {
            "success": False,
            "error": {
                "name": "ZodError",
                "message": f"{field}: {message}",
                "issues": [{"path": [field], "message": message}],
            },
        },
    )


def ingest_error(reason: str, status: int = 422) -> HttpError:
    """The ingest service's error (422 for everything, a bad key included)."""
    return HttpError(status, {"code": status, "message": reason, "error": reason})


NOT_FOUND = "Run not found"
