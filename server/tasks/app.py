"""The Celery application: one code path for the embedded and the distributed mode.

Embedded, the broker is kombu's SQLAlchemy transport on a SQLite file under the data dir;
distributed, the same tasks run on Redis or RabbitMQ by changing ``LUNGCDS_BROKER_URL``.
Results live in our database, so Celery keeps no result backend (tasks never wait on
each other, house rule 10).
"""

from __future__ import annotations

import functools
import logging

from celery import Celery
from kombu import Exchange, Queue
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import crud
from server.core.config import Settings
from server.core.db import make_engine
from server.routing.priority import is_urgent, message_priority
from server.tasks.embedded_broker import use_embedded_broker_transport

__all__ = [
    "ANALYSIS_TASK",
    "CPU_QUEUE",
    "DELIVERY_TASK",
    "GPU_QUEUE",
    "HARD_LIMIT_GRACE_S",
    "RETRIEVE_TASK",
    "NOTIFY_TASK",
    "LungcdsCelery",
    "create_celery",
    "enqueue_analysis",
    "redis_lists",
    "visibility_timeout",
]

logger = logging.getLogger(__name__)

ANALYSIS_TASK = "lungcds.analyse_series"
DELIVERY_TASK = "lungcds.deliver_object"
RETRIEVE_TASK = "lungcds.retrieve_study"
NOTIFY_TASK = "lungcds.send_notification"
GPU_QUEUE = "gpu"
CPU_QUEUE = "cpu"
#: Separator of kombu's per-priority Redis list names ("gpu", "gpu:9").
REDIS_PRIORITY_SEPARATOR = ":"
#: Seconds between the soft and the hard time limit of a task.
HARD_LIMIT_GRACE_S = 120


def visibility_timeout(settings: Settings) -> int:
    """Seconds a fetched, unacknowledged message stays invisible: the hard limit plus an hour."""
    return settings.analysis_time_limit_s + HARD_LIMIT_GRACE_S + 3600


class LungcdsCelery(Celery):
    """A Celery app that carries the process' settings for the tasks' lazy resources."""

    settings: Settings


def create_celery(settings: Settings) -> LungcdsCelery:
    """Build the app for ``settings``; opens no connection (house rule 9)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    use_embedded_broker_transport()
    app = LungcdsCelery("lungcds", broker=settings.broker_url, set_as_current=True)
    # The default app for every thread: SCP threads enqueue too, and Celery's "current app"
    # is thread-local, so a thread that has not seen this app would otherwise fall back to
    # Celery's built-in default broker (amqp://localhost).
    app.set_default()
    app.settings = settings
    transport_options: dict[str, object] = {}
    queue_arguments: dict[str, object] | None = None
    if settings.broker_url.startswith(("redis", "rediss")):
        # Longer than the slowest analysis (its hard time limit), so an unacknowledged job is
        # not redelivered while it still runs (Celery docs, "Redis: visibility timeout").
        transport_options["visibility_timeout"] = visibility_timeout(settings)
        # One list per priority step, read in order (urgent jobs first; server.routing.priority),
        # named "gpu" and "gpu:9" so that autoscalers can read their lengths (redis_lists).
        transport_options["priority_steps"] = list(range(10))
        transport_options["queue_order_strategy"] = "priority"
        transport_options["sep"] = REDIS_PRIORITY_SEPARATOR
    elif settings.broker_url.startswith(("amqp", "pyamqp")):
        queue_arguments = {"x-max-priority": 9}
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A task over the soft limit gets SoftTimeLimitExceeded and fails its job with that
        # reason; the hard limit, a little later, replaces a child that ignored it.
        task_soft_time_limit=settings.analysis_time_limit_s,
        task_time_limit=settings.analysis_time_limit_s + HARD_LIMIT_GRACE_S,
        # Celery counts KiB; None leaves children alone.
        worker_max_memory_per_child=settings.worker_max_memory_mb * 1024 or None,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options,
        task_queues=tuple(
            Queue(name, Exchange(name, type="direct"), routing_key=name, queue_arguments=queue_arguments)
            for name in (GPU_QUEUE, CPU_QUEUE)
        ),
        task_default_queue=CPU_QUEUE,
        task_routes={
            ANALYSIS_TASK: {"queue": GPU_QUEUE},
            DELIVERY_TASK: {"queue": CPU_QUEUE},
            RETRIEVE_TASK: {"queue": CPU_QUEUE},
            NOTIFY_TASK: {"queue": CPU_QUEUE},
        },
        imports=(
            "server.tasks.analysis",
            "server.tasks.delivery",
            "server.tasks.heartbeat",
            "server.tasks.notify",
            "server.tasks.retrieve",
            "server.tasks.warmup",
        ),
    )
    # Register the tasks now, not only when a worker starts, so producers and in-process
    # execution see the same registry.
    app.loader.import_default_modules()
    return app


def enqueue_analysis(app: LungcdsCelery, job_id: int, revision: int, countdown: float | None = None) -> None:
    """Put the analysis of one job revision on the gpu queue, urgent jobs ahead (by task name, on ``app``).

    ``countdown`` delays it (seconds), for a job whose lease another attempt still holds.
    """
    settings = app.settings
    with Session(_engine(settings.database_url)) as session:
        urgent = bool(settings.priority_calling_aets or settings.priority_accession_pattern) and is_urgent(
            session, job_id, settings
        )
        priority = message_priority(settings.broker_url, urgent)
        app.send_task(ANALYSIS_TASK, args=[job_id, revision], priority=priority, countdown=countdown)
        crud.mark_sent(session, job_id)
        session.commit()
    logger.info("analysis queued", extra={"job": job_id, "revision": revision, "urgent": urgent})


def redis_lists(queue: str) -> tuple[str, ...]:
    """The Redis lists holding the waiting messages of ``queue``: urgent (priority 0) and routine."""
    priorities = sorted({message_priority("redis://", urgent) for urgent in (True, False)}, key=lambda p: p or 0)
    return tuple(queue if not p else f"{queue}{REDIS_PRIORITY_SEPARATOR}{p}" for p in priorities)


@functools.cache
def _engine(database_url: str) -> Engine:
    """One engine per database for the producers' priority look-ups (the pool is shared by threads)."""
    return make_engine(database_url)
