"""The embedded broker's tables stay bounded: consumed messages are deleted.

kombu's SQLAlchemy transport (the embedded default, ``sqla+sqlite:///DATA/broker.db``) marks a
fetched message invisible and never deletes it: an installation that analyses a series every
20 s would grow its broker file by every message it ever handled.  Deleting invisible rows is
safe: a worker holds the payload of what it fetched in memory, and a message it hands back
(worker shutdown, lost child) is published again as a new, visible row.  A job whose worker was
killed holding such a message is recovered from the database by its lease
(:func:`server.crud.take_over_lost_jobs`), not from this row.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, cast

from sqlalchemy import CursorResult, create_engine, inspect, text
from sqlalchemy.engine import Engine

__all__ = ["MESSAGE_TABLE", "purge_consumed_messages"]

logger = logging.getLogger(__name__)

#: kombu's default message table name (transport option ``message_tablename``).
MESSAGE_TABLE = "kombu_message"
_SQLA_PREFIX = "sqla+"


def purge_consumed_messages(broker_url: str) -> int:
    """Delete the consumed (invisible) messages of an SQLAlchemy-transport broker; how many.

    Other brokers (Redis, RabbitMQ) delete what is acknowledged themselves: nothing to do.
    """
    if not broker_url.startswith(_SQLA_PREFIX):
        return 0
    engine = _engine(broker_url.removeprefix(_SQLA_PREFIX))
    with engine.begin() as conn:
        if not inspect(conn).has_table(MESSAGE_TABLE):
            return 0
        result = cast(
            CursorResult[Any], conn.execute(text(f"DELETE FROM {MESSAGE_TABLE} WHERE visible = :no"), {"no": False})
        )
    deleted = int(result.rowcount)
    if deleted:
        logger.info("consumed broker messages purged", extra={"messages": deleted})
    return deleted


@functools.cache
def _engine(url: str) -> Engine:
    """One engine per broker database for this process."""
    return create_engine(url)
