"""Sorting of listings: a ``sort`` parameter over an allow-list of columns (``-`` for descending)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement

from server.api.problems import Problem

__all__ = ["order_by"]


def order_by(sort: str, columns: Mapping[str, Any]) -> ColumnElement[Any]:
    """The ORDER BY clause for ``sort`` (e.g. ``-last_received_at``); 422 for an unknown column."""
    descending = sort.startswith("-")
    name = sort.lstrip("+-")
    if name not in columns:
        raise Problem(422, "Unknown sort key", f"sort by one of {', '.join(sorted(columns))} (prefix - to reverse)")
    column = columns[name]
    clause: ColumnElement[Any] = column.desc() if descending else column.asc()
    return clause
