"""The Celery application: one code path for the embedded and the distributed mode.

Embedded, the broker is kombu's SQLAlchemy transport on a SQLite file under the data dir;
distributed, the same tasks run on Redis or RabbitMQ by changing ``LUNGCDS_BROKER_URL``.
Results live in our database, so Celery keeps no result backend (tasks never wait on
each other, house rule 10).
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from server.core.config import Settings

__all__ = [
    "ANALYSIS_TASK",
    "CPU_QUEUE",
    "DELIVERY_TASK",
    "GPU_QUEUE",
    "RETRIEVE_TASK",
    "LungcdsCelery",
    "create_celery",
    "enqueue_analysis",
]

ANALYSIS_TASK = "lungcds.analyse_series"
DELIVERY_TASK = "lungcds.deliver_object"
RETRIEVE_TASK = "lungcds.retrieve_study"
GPU_QUEUE = "gpu"
CPU_QUEUE = "cpu"


class LungcdsCelery(Celery):
    """A Celery app that carries the process' settings for the tasks' lazy resources."""

    settings: Settings


def create_celery(settings: Settings) -> LungcdsCelery:
    """Build the app for ``settings``; opens no connection (house rule 9)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = LungcdsCelery("lungcds", broker=settings.broker_url, set_as_current=True)
    # The default app for every thread: SCP threads enqueue too, and Celery's "current app"
    # is thread-local, so a thread that has not seen this app would otherwise fall back to
    # Celery's built-in default broker (amqp://localhost).
    app.set_default()
    app.settings = settings
    transport_options: dict[str, object] = {}
    if settings.broker_url.startswith(("redis", "rediss")):
        # Longer than the slowest analysis, so an unacknowledged job is not redelivered while
        # it still runs (Celery docs, "Redis: visibility timeout").
        transport_options["visibility_timeout"] = 6 * 3600
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options,
        task_queues=tuple(
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in (GPU_QUEUE, CPU_QUEUE)
        ),
        task_default_queue=CPU_QUEUE,
        task_routes={
            ANALYSIS_TASK: {"queue": GPU_QUEUE},
            DELIVERY_TASK: {"queue": CPU_QUEUE},
            RETRIEVE_TASK: {"queue": CPU_QUEUE},
        },
        imports=("server.tasks.analysis", "server.tasks.delivery", "server.tasks.heartbeat", "server.tasks.retrieve"),
    )
    # Register the tasks now, not only when a worker starts, so producers and in-process
    # execution see the same registry.
    app.loader.import_default_modules()
    return app


def enqueue_analysis(app: Celery, job_id: int, revision: int) -> None:
    """Put the analysis of one job revision on the gpu queue (by task name, on ``app``)."""
    app.send_task(ANALYSIS_TASK, args=[job_id, revision])
