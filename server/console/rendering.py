"""Pages from Jinja2 templates, in words people read, with the headers that keep them to our host.

Templates autoescape every value (Starlette's :class:`~starlette.templating.Jinja2Templates`
default), so a patient name or an AE title holding markup is shown, never run.  Every console
answer carries :data:`SECURITY_HEADERS`: the pages use no script at all and load styles and
images only from this server, so the Content Security Policy allows nothing else; pages hold
patient data, so nothing is cached and no other site may frame them.

Identifiers stay out of what people read: states, rules and timeline steps are shown in words
(:data:`STATE_WORDS`, :data:`STEP_WORDS`), dates as dates, DICOM person names as names.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.datastructures import MutableHeaders
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.console.sessions import ConsoleSession

__all__ = ["SECURITY_HEADERS", "STATE_WORDS", "STEP_WORDS", "TEMPLATES", "SecurityHeaders", "render"]

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))

#: No script, nothing from another host, no framing, nothing cached, no address sent elsewhere.
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

#: Series and job states in words.
STATE_WORDS: dict[str, str] = {
    "receiving": "Receiving",
    "finalizing": "Being judged",
    "queued": "Queued",
    "analysing": "Being analysed",
    "running": "Being analysed",
    "done": "Analysed",
    "not_analysable": "Not analysable",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "rejected": "Not eligible",
    "ignored": "Not for analysis",
    "pending": "Waiting to be sent",
    "sending": "Being sent",
    "sent": "Sent",
    "refused": "Refused by the destination",
}

#: Timeline steps in words.
STEP_WORDS: dict[str, str] = {
    "first_instance_received": "First image received",
    "last_instance_received": "Last image received",
    "series_complete": "Series complete",
    "queued": "Queued for analysis",
    "started": "Analysis started",
    "stage": "Stage finished",
    "finished": "Analysis finished",
    "failed": "Analysis failed",
    "cancelled": "Cancelled by an admin",
    "reevaluated": "Judged again by an admin",
    "held": "Held",
    "released": "Released",
    "taken_over": "Taken over after a lost worker",
    "delivered": "Delivered",
    "delivery_failed": "Delivery attempt failed",
    "delivery_refused": "Delivery refused",
    "resend": "Put back in the outbox",
}

#: Report objects in words.
REPORT_WORDS: dict[str, str] = {
    "pdf": "PDF report",
    "sr": "Structured Report (DICOM SR)",
    "seg": "Lung segmentation (DICOM SEG)",
    "seg-lobes": "Lobe segmentation (DICOM SEG)",
    "seg-lesions": "Lesion segmentation (DICOM SEG)",
    "pdf-dicom": "Encapsulated PDF (DICOM)",
}


def _words(value: str | None, table: dict[str, str]) -> str:
    if value is None:
        return ""
    return table.get(value, value.replace("_", " ").capitalize())


def _moment(value: datetime | str | None) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SS UTC`` (what the database stores)."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            return _moment(datetime.fromisoformat(value))
        except ValueError:
            return value
    moment = value.astimezone(UTC) if value.tzinfo is not None else value
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _dicom_date(value: str | None) -> str:
    """A DICOM date (``YYYYMMDD``) as ``YYYY-MM-DD``; anything else unchanged."""
    if value and len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value or ""


def _person_name(value: str | None) -> str:
    """A DICOM person name (``Family^Given^Middle^Prefix^Suffix``) as ``Family, Given Middle``."""
    if not value:
        return ""
    parts = [part.strip() for part in value.split("=")[0].split("^")]
    family, given = parts[0], " ".join(part for part in parts[1:3] if part)
    return f"{family}, {given}" if family and given else family or given


def _path_part(value: object) -> str:
    """``value`` quoted for one path segment (AE titles may hold ``/`` or spaces)."""
    return quote(str(value), safe="")


def _compact_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _megabytes(value: int) -> str:
    return f"{value / 2**20:,.0f} MB"


TEMPLATES.env.filters.update(
    {
        "state": lambda value: _words(value, STATE_WORDS),
        "step": lambda value: _words(value, STEP_WORDS),
        "report": lambda value: _words(value, REPORT_WORDS),
        "moment": _moment,
        "dicom_date": _dicom_date,
        "person_name": _person_name,
        "path_part": _path_part,
        "compact_json": _compact_json,
        "megabytes": _megabytes,
    }
)


def render(request: Request, template: str, context: dict[str, Any] | None = None, status: int = 200) -> HTMLResponse:
    """The page ``template`` for ``request``: its session (role, CSRF token, notices) is in every page."""
    user: ConsoleSession | None = getattr(request.state, "console_session", None)
    values = {
        "user": user,
        "csrf_token": user.csrf_token if user is not None else "",
        "notices": user.take_notices() if user is not None else [],
        **(context or {}),
    }
    response: HTMLResponse = TEMPLATES.TemplateResponse(request, template, values, status_code=status)
    return response


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every answer of the console (pages, files, redirects, errors)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)
