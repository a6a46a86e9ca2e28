"""What the API and the routing loop need of the queue: enqueue, depths, a health check."""

from __future__ import annotations

import logging
from typing import Protocol

from server.tasks.app import CPU_QUEUE, GPU_QUEUE, RETRIEVE_TASK, LungcdsCelery, enqueue_analysis

__all__ = ["QueueGateway", "CeleryQueue"]

logger = logging.getLogger(__name__)


class QueueGateway(Protocol):
    """The queue as the API sees it (a Celery broker in production, a fake in tests)."""

    def enqueue_analysis(self, job_id: int, revision: int) -> None:
        """Put one job revision on the analysis queue."""

    def enqueue_retrieval(self, source: str, study_uid: str, series_uid: str | None, method: str) -> str:
        """Put a retrieval on the cpu queue; its task id."""

    def depths(self) -> dict[str, int]:
        """Messages waiting per queue."""

    def check(self) -> str | None:
        """None when the broker answers, else what is wrong in words."""


class CeleryQueue:
    """The Celery broker behind :class:`QueueGateway`."""

    def __init__(self, app: LungcdsCelery, timeout: float = 3.0) -> None:
        self._app = app
        self._timeout = timeout

    def enqueue_analysis(self, job_id: int, revision: int) -> None:
        enqueue_analysis(self._app, job_id, revision)

    def enqueue_retrieval(self, source: str, study_uid: str, series_uid: str | None, method: str) -> str:
        result = self._app.send_task(RETRIEVE_TASK, args=[source, study_uid, series_uid, method])
        return str(result.id)

    def depths(self) -> dict[str, int]:
        """Passive queue declarations report the waiting messages on every kombu transport."""
        depths: dict[str, int] = {}
        with self._app.connection_for_read() as connection:
            channel = connection.default_channel
            for name in (GPU_QUEUE, CPU_QUEUE):
                try:
                    depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
                except Exception as exc:  # noqa: BLE001 - transports raise their own types; undeclared = empty
                    logger.debug("queue %s not declared: %s", name, exc)
                    depths[name] = 0
        return depths

    def check(self) -> str | None:
        try:
            with self._app.connection_for_read() as connection:
                connection.ensure_connection(max_retries=1, timeout=self._timeout)
        except Exception as exc:  # noqa: BLE001 - any broker failure is a readiness answer, not a crash
            return f"broker unreachable: {type(exc).__name__}: {exc}"
        return None
