"""Worker heartbeats in the database, for the queue overview (any broker, even the embedded one).

A worker writes its hostname, queues and pid when it is ready and every ``INTERVAL`` seconds
after; the API counts a worker alive while its last heartbeat is younger than ``ALIVE_WITHIN``.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta
from typing import Any

from celery import signals
from sqlalchemy.engine import Engine

from server.core.db import make_engine, session_scope
from server.db_models import WorkerHeartbeat, utcnow

__all__ = ["INTERVAL", "ALIVE_WITHIN", "beat"]

logger = logging.getLogger(__name__)

INTERVAL = 10.0
ALIVE_WITHIN = timedelta(seconds=3 * INTERVAL)
_stop = threading.Event()


def beat(engine: Engine, hostname: str, queues: str, started: bool = False) -> None:
    """Write one heartbeat of this worker process."""
    with session_scope(engine) as session:
        row = session.get(WorkerHeartbeat, hostname)
        now = utcnow()
        if row is None:
            row = WorkerHeartbeat(hostname=hostname, queues=queues, pid=os.getpid(), started_at=now, last_seen=now)
        else:
            row.queues, row.pid, row.last_seen = queues, os.getpid(), now
            if started:
                row.started_at = now
        session.add(row)


@signals.worker_ready.connect
def _start_heartbeats(sender: Any = None, **_: Any) -> None:
    app = sender.app
    engine = make_engine(app.settings.database_url)
    hostname = str(sender.hostname)
    queues = ",".join(sorted(q.name for q in app.amqp.queues.consume_from.values()))

    def loop() -> None:
        first = True
        while not _stop.is_set():
            try:
                beat(engine, hostname, queues, started=first)
                first = False
            except Exception:  # the database may be away for a while; keep trying
                logger.warning("heartbeat not written", exc_info=True)
            _stop.wait(INTERVAL)

    _stop.clear()
    threading.Thread(target=loop, name="lungcds-heartbeat", daemon=True).start()


@signals.worker_shutdown.connect
def _stop_heartbeats(**_: Any) -> None:
    _stop.set()
