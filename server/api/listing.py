"""Listings: time filters as UTC instants; the ``sort`` parameter is :func:`server.services.listings.order_by`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator

from server.services.listings import order_by

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
