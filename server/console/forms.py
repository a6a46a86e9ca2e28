"""The console's HTML forms as the browser posts them (``application/x-www-form-urlencoded``).

Parsed with the standard library rather than a multipart parser: the console posts no files,
its forms are a few fields, and the body is never larger than the API's request body limit
(:class:`server.api.admission.BodyLimit`).  The body is read only after the session is known
(:mod:`server.console.auth`), as the REST API reads none before it knows the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from urllib.parse import parse_qs

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from server.api.problems import Problem

__all__ = ["FORM_MEDIA_TYPE", "MAX_FIELDS", "Form", "read_form"]

FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
#: Most fields a console form has is about twenty (the rules editor); more is not a console form.
MAX_FIELDS = 200


@dataclass(frozen=True)
class Form:
    """The fields of a posted form: every value of each name, in the order sent."""

    fields: dict[str, list[str]]

    def raw(self, name: str) -> str:
        """The first value of ``name`` exactly as sent (a validator that strips it says what was wrong)."""
        values = self.fields.get(name)
        return values[0] if values else ""

    def text(self, name: str) -> str:
        """The first value of ``name`` without surrounding spaces; empty when absent."""
        return self.raw(name).strip()

    def optional(self, name: str) -> str | None:
        """The first value of ``name``, or None when absent or blank."""
        return self.text(name) or None

    def values(self, name: str) -> list[str]:
        """Every value of ``name`` (checkbox groups), blanks left out."""
        return [value.strip() for value in self.fields.get(name, []) if value.strip()]

    def flag(self, name: str) -> bool:
        """True when the checkbox ``name`` was ticked (browsers send only ticked ones)."""
        return bool(self.fields.get(name))


def _parsed(body: bytes) -> Form:
    """``body`` as form fields (blocking: run in a thread); 400 for what no browser form sends."""
    try:
        text = body.decode("utf-8")
        fields = parse_qs(text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError as exc:
        raise Problem(400, "Invalid form", f"the form is not UTF-8 text: {exc}") from exc
    except ValueError as exc:  # more than MAX_FIELDS fields
        raise Problem(400, "Invalid form", f"the form has more than {MAX_FIELDS} fields") from exc
    return Form(fields)


async def read_form(request: Request) -> Form:
    """The request's body as a form (415 for any other media type, 400 when it cannot be one)."""
    message = Message()
    message["content-type"] = request.headers.get("content-type", "")
    if message.get_content_type() != FORM_MEDIA_TYPE:
        raise Problem(415, "Unsupported media type", f"send the form as {FORM_MEDIA_TYPE}")
    return await run_in_threadpool(_parsed, await request.body())
