"""``/metrics`` for Prometheus, read from the database at each scrape.

The SCP host, the API and the workers are separate processes (and hosts, distributed), so
in-process counters would each see a part; the database sees everything.  Each scrape reads:
received instances, series and jobs by state, deliveries by state and failed attempts, failed
and refused result notifications per channel, stage
durations per model (from the job timeline), queue depths, workers alive, and the jobs that are
not moving (a lost worker's, held, or waiting for a worker) with the takeovers so far.  The free
space of the data directory and its reserve are measured by the process that answers the scrape,
on the file system it shares with the SCP and the workers.

``deploy/monitoring/`` holds the alert rules and the Grafana dashboard built on these names.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from server import crud
from server.core.config import Settings
from server.core.disk import free_bytes, reserve_bytes
from server.db_models import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobEvent,
    Notification,
    NotificationChannel,
    Series,
    WorkerHeartbeat,
    utcnow,
)
from server.tasks.heartbeat import ALIVE_WITHIN
from server.tasks.queue import QueueGateway

__all__ = ["DatabaseCollector", "DiskCollector", "router", "registry_for"]

logger = logging.getLogger(__name__)
#: Upper bounds (seconds) of the stage-duration histogram: from the sub-second weight-free stages to
#: the minutes a learned model takes on a CPU node (issue 19 measured 3.5 to 21 minutes per stage).
STAGE_SECONDS_BUCKETS: tuple[float, ...] = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800)
router = APIRouter(tags=["operations"])


class DatabaseCollector(Collector):
    """Collects lungcds metrics from the database (and the broker's queue depths)."""

    def __init__(self, engine: Engine, queue: QueueGateway | None, lost_job_after_s: float = 600.0) -> None:
        self._engine = engine
        self._queue = queue
        self._lost_job_after_s = lost_job_after_s

    def collect(self) -> Iterator[Metric]:
        with Session(self._engine) as session:
            yield from self._counts(session)
            yield from self._stages(session)
            yield self._workers(session)
            yield from self._stuck(session)
        if self._queue is not None:
            depth = GaugeMetricFamily("lungcds_queue_depth", "Messages waiting per queue", labels=["queue"])
            try:
                for name, value in self._queue.depths().items():
                    depth.add_metric([name], value)
            except Exception:  # noqa: BLE001 - a broker outage must not break the scrape
                logger.warning("queue depths unavailable for /metrics", exc_info=True)
            yield depth

    @staticmethod
    def _counts(session: Session) -> Iterator[Metric]:
        received = CounterMetricFamily("lungcds_instances_received", "DICOM instances stored (duplicates once)")
        received.add_metric([], session.exec(select(func.count()).select_from(Instance)).one())
        yield received
        for model, name, text in (
            (Series, "lungcds_series", "Series by state"),
            (Job, "lungcds_jobs", "Analysis jobs by state"),
            (Delivery, "lungcds_deliveries", "Report deliveries by state"),
        ):
            gauge = GaugeMetricFamily(name, text, labels=["state"])
            for state, count in session.exec(select(model.state, func.count()).group_by(model.state)).all():
                gauge.add_metric([state], count)
            yield gauge
        failures = CounterMetricFamily(
            "lungcds_delivery_failures", "Failed or refused delivery attempts", labels=["outcome"]
        )
        for kind, count in session.exec(
            select(JobEvent.kind, func.count())
            .where(col(JobEvent.kind).in_(("delivery_failed", "delivery_refused")))
            .group_by(JobEvent.kind)
        ).all():
            failures.add_metric([kind.removeprefix("delivery_")], count)
        yield failures
        yield DatabaseCollector._notification_failures(session)

    @staticmethod
    def _notification_failures(session: Session) -> Metric:
        """Result notifications that did not get through: attempts retried, and notifications refused for good."""
        failures = CounterMetricFamily(
            "lungcds_notification_failures",
            "Result notifications not accepted: failed attempts (retried) and refusals (final), per channel",
            labels=["channel", "outcome"],
        )
        failed = dict(
            session.exec(
                select(Notification.channel, func.sum(Notification.failures)).group_by(Notification.channel)
            ).all()
        )
        refused = dict(
            session.exec(
                select(Notification.channel, func.count())
                .where(Notification.state == DeliveryState.REFUSED)
                .group_by(Notification.channel)
            ).all()
        )
        for channel in sorted({NotificationChannel.WEBHOOK, NotificationChannel.FHIR} | set(failed) | set(refused)):
            failures.add_metric([channel, "failed"], float(failed.get(channel) or 0))
            failures.add_metric([channel, "refused"], float(refused.get(channel) or 0))
        return failures

    @staticmethod
    def _stages(session: Session) -> Iterator[Metric]:
        """Stage wall times as a histogram per stage, the buckets counted in SQL (every process's jobs)."""
        stages = HistogramMetricFamily(
            "lungcds_stage_duration_seconds",
            "Wall time of each analysis stage (loading, each model, reports)",
            labels=["stage"],
        )
        seconds = func.coalesce(JobEvent.seconds, 0.0)
        rows = session.exec(
            select(
                JobEvent.name,
                func.count(),
                func.sum(seconds),
                *(func.sum(case((seconds <= bound, 1), else_=0)) for bound in STAGE_SECONDS_BUCKETS),
            )
            .where(JobEvent.kind == "stage")
            .group_by(JobEvent.name)
        ).all()
        for row in rows:
            values: tuple[Any, ...] = tuple(row)
            name, count, total = values[0], int(values[1]), float(values[2] or 0.0)
            cumulative = [int(value) for value in values[3:]]
            buckets = [(f"{bound:g}", n) for bound, n in zip(STAGE_SECONDS_BUCKETS, cumulative, strict=True)]
            stages.add_metric([name or "unknown"], [*buckets, ("+Inf", count)], sum_value=total)
        yield stages

    def _stuck(self, session: Session) -> Iterator[Metric]:
        """Jobs that are not moving, by why (the same list as ``GET /jobs/stuck``), and takeovers so far."""
        stuck = GaugeMetricFamily(
            "lungcds_jobs_stuck",
            "Jobs not moving: lease_expired (worker lost), held (e.g. disk full), waiting (no worker takes it)",
            labels=["reason"],
        )
        waiting_after = timedelta(seconds=self._lost_job_after_s)
        counts = Counter(job.reason for job in crud.stuck_jobs(session, utcnow(), waiting_after))
        for reason in ("lease_expired", "held", "waiting"):
            stuck.add_metric([reason], counts.get(reason, 0))
        yield stuck
        taken = CounterMetricFamily("lungcds_jobs_taken_over", "Jobs whose lost worker's attempt was taken over")
        taken.add_metric(
            [], session.exec(select(func.count()).select_from(JobEvent).where(JobEvent.kind == "taken_over")).one()
        )
        yield taken

    @staticmethod
    def _workers(session: Session) -> Metric:
        alive = GaugeMetricFamily("lungcds_workers_alive", "Workers with a recent heartbeat")
        cutoff = utcnow() - ALIVE_WITHIN
        alive.add_metric(
            [],
            session.exec(
                select(func.count()).select_from(WorkerHeartbeat).where(col(WorkerHeartbeat.last_seen) >= cutoff)
            ).one(),
        )
        return alive


class DiskCollector(Collector):
    """Free bytes of the data directory and the reserve below which lungcds stops writing.

    The reserve is ``LUNGCDS_MIN_FREE_DISK_MB``, as :func:`server.core.disk.disk_shortage`
    applies it: below it the SCP refuses instances and analyses are held.  Both are exported so
    that an alert compares them and a dashboard shows how close the disk is.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def collect(self) -> Iterator[Metric]:
        free = GaugeMetricFamily(
            "lungcds_disk_free_bytes", "Free bytes on the file system of the data directory (LUNGCDS_DATA_DIR)"
        )
        free.add_metric([], free_bytes(self._settings)[1])
        yield free
        reserve = GaugeMetricFamily(
            "lungcds_disk_reserve_bytes",
            "Free space lungcds keeps (LUNGCDS_MIN_FREE_DISK_MB): below it the SCP refuses instances and "
            "analyses are held",
        )
        reserve.add_metric([], reserve_bytes(self._settings))
        yield reserve


def registry_for(engine: Engine, queue: QueueGateway | None, settings: Settings) -> CollectorRegistry:
    """A registry holding only this installation's collectors (no process-global state)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(engine, queue, settings.lost_job_after_s))
    registry.register(DiskCollector(settings))
    return registry


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
