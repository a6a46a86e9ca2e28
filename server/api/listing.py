"""Listings: time filters as UTC instants, and a ``sort`` parameter over an allow-list of columns."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator
from sqlalchemy import ColumnElement

from server.api.problems import Problem

__all__ = ["Instant", "order_by"]


def _as_utc(value: datetime) -> datetime:
    """A filter time in UTC: one without an offset is taken as UTC; one that UTC cannot hold is refused.

    Without this, ``0001-01-01T00:00+01:00`` (a time before year 1 in UTC) or a naive time reached
    the database layer and ended as a server error instead of a 422 that says why.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(f"{value.isoformat()} is outside the range of UTC times") from exc


#: A query-parameter time (ISO 8601); compared in UTC.
Instant = Annotated[datetime, AfterValidator(_as_utc)]


def order_by(sort: str, columns: Mapping[str, Any]) -> ColumnElement[Any]:
    """The ORDER BY clause for ``sort`` (e.g. ``-last_received_at``); 422 for an unknown column."""
    descending = sort.startswith("-")
    name = sort.lstrip("+-")
    if name not in columns:
        raise Problem(422, "Unknown sort key", f"sort by one of {', '.join(sorted(columns))} (prefix - to reverse)")
    column = columns[name]
    clause: ColumnElement[Any] = column.desc() if descending else column.asc()
    return clause
