"""The embedded broker's transport: kombu's SQLAlchemy transport, polled ten times a second.

The embedded default (``sqla+sqlite:///DATA_DIR/broker.db``) is a polled queue; kombu polls its
virtual transports once a second, so a complete series waited up to a second for its worker and
each report object up to a second more for its delivery, on a path that takes a few seconds in
all (``benchmarks/end_to_end_latency.py``).  kombu hands every transport option of this
transport to SQLAlchemy's ``create_engine``, so ``polling_interval`` cannot be given as an
option; the interval is a class attribute of this subclass instead, which the ``sqla`` and
``sqlalchemy`` URL schemes are pointed at (kombu's transport alias table, which is how kombu
names its transports).  Tables and messages are kombu's own: an existing ``broker.db`` keeps
working.
"""

from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Transport as SQLAlchemyTransport

__all__ = ["EMBEDDED_POLLING_INTERVAL_S", "EmbeddedTransport", "use_embedded_broker_transport"]

#: Seconds between two polls of the queues: one indexed query per queue, ten times a second.
EMBEDDED_POLLING_INTERVAL_S = 0.1


class EmbeddedTransport(SQLAlchemyTransport):
    """kombu's SQLAlchemy transport with a short polling interval."""

    polling_interval = EMBEDDED_POLLING_INTERVAL_S


def use_embedded_broker_transport() -> None:
    """Point the ``sqla`` and ``sqlalchemy`` URL schemes at :class:`EmbeddedTransport` (idempotent)."""
    for scheme in ("sqla", "sqlalchemy"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:EmbeddedTransport"
