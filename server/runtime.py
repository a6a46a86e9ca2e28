"""``lungcds serve``: the DICOM SCP, the REST API, the routing loop and (embedded) a worker.

One process holds the SCP and API threads and a background loop that finalises idle series
and pumps the outbox.  In the embedded default the Celery worker runs in this same process,
in the main thread (Celery installs its signal handlers there), with a thread pool; with
``--no-worker`` the process waits for SIGTERM/SIGINT and workers run elsewhere.  Once both
listeners are bound, ``DATA_DIR/serve.json`` records the actual ports (port 0 = any free one).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import uvicorn

from dicom_node.commitment_journal import CommitmentJournal
from dicom_node.commitment_scp import StorageCommitment
from dicom_node.scp import StorageSCP
from dicom_node.spool import Spool
from server.api.main import create_app
from server.audit import build_audit_trail
from server.core.config import Settings
from server.core.db import make_engine, upgrade
from server.core.tls import scp_ssl_context
from server.retention import purge_expired
from server.routing.destinations import commitment_requester
from server.routing.intake import SeriesIntake
from server.services.dicomweb_multipart import STOW_INCOMING, remove_abandoned_parts
from server.services.dicomweb_store import series_in_open_requests
from server.tasks.app import CPU_QUEUE, GPU_QUEUE, LungcdsCelery, create_celery, enqueue_analysis
from server.tasks.broker_tables import purge_consumed_messages
from server.tasks.delivery import pump_outbox
from server.tasks.lost_jobs import resend_lost_jobs, resume_held_jobs, take_over_lost_jobs
from server.tasks.notify import pump_notifications
from server.tasks.queue import CeleryQueue

__all__ = ["RUNTIME_FILE", "ServerRuntime", "lease_sweep_interval", "storage_commitment_for"]

logger = logging.getLogger(__name__)

#: Written into the data dir once the server listens: pid, bound ports, AE title.
RUNTIME_FILE = "serve.json"
#: How often the retention policy looks for expired series.
PURGE_INTERVAL_SECONDS = 3600.0
#: How often the embedded broker's consumed messages are deleted.
BROKER_PURGE_INTERVAL_SECONDS = 60.0
#: How often jobs held for disk space look for space again.
HELD_JOB_INTERVAL_SECONDS = 10.0


def lease_sweep_interval(settings: Settings) -> float:
    """Seconds between looks for running jobs whose lease expired: a sixth of the lease, 1 to 30 s.

    A lost worker's job is thus taken over within about the lease plus this interval.
    """
    return min(30.0, max(1.0, settings.job_lease_s / 6))


def storage_commitment_for(settings: Settings, intake: SeriesIntake) -> StorageCommitment | None:
    """The SCP's Storage Commitment (PS3.4 Annex J) when ``LUNGCDS_STORAGE_COMMITMENT`` is on, else None.

    Instances are checked against the index (``intake.locate_instance``), results that cannot go on
    the requesting association go to the requester's address in ``LUNGCDS_SENDER_ADDRESSES``, and
    every request and result is audited through the intake.
    """
    if not settings.storage_commitment:
        return None
    return StorageCommitment(
        settings.ae_title,
        CommitmentJournal(settings.commitment_dir),
        intake.locate_instance,
        lambda calling_aet: commitment_requester(settings, calling_aet),
        intake,
    )


class ServerRuntime:
    """The long-running server process of one lungcds installation."""

    def __init__(self, settings: Settings, *, with_worker: bool) -> None:
        self.settings = settings
        self.with_worker = with_worker
        self.engine = make_engine(settings.database_url)
        self.celery: LungcdsCelery = create_celery(settings)
        self.audit = build_audit_trail(settings, self.engine)
        self.intake = SeriesIntake(self.engine, settings, self._enqueue_analysis, self.audit)
        self._stop = threading.Event()
        self._scp: StorageSCP | None = None
        self._api: uvicorn.Server | None = None
        self._threads: list[threading.Thread] = []
        self.dicom_port = 0
        self.api_port = 0

    def _enqueue_analysis(self, job_id: int, revision: int) -> None:
        enqueue_analysis(self.celery, job_id, revision)

    def start(self) -> None:
        """Migrate the database, then start the SCP, the API and the routing loop."""
        settings = self.settings
        for folder in (settings.data_dir, settings.spool_dir, settings.results_dir, settings.weights_dir):
            folder.mkdir(parents=True, exist_ok=True)
        abandoned = remove_abandoned_parts(settings.data_dir / STOW_INCOMING)
        if abandoned:
            logger.warning(
                "removed STOW-RS part files of requests that ended with their process", extra={"files": abandoned}
            )
        upgrade(settings.database_url)
        spool = Spool(settings.spool_dir, min_free_bytes=settings.min_free_disk_mb * 2**20, admit=self.intake.admit)
        self._scp = StorageSCP(
            settings.ae_title,
            spool,
            self.intake,
            allowed_calling_aets=settings.allowed_calling_aets,
            maximum_associations=settings.max_associations,
            association_request_timeout=settings.association_request_timeout_s,
            maximum_pending_per_peer=settings.max_pending_connections_per_peer,
            on_rejected=self.intake.association_rejected,
            ssl_context=scp_ssl_context(settings),
            storage_commitment=storage_commitment_for(settings, self.intake),
        )
        self.dicom_port = self._scp.start(settings.bind_host, settings.dicom_port)
        self._start_api()
        self._spawn(self._routing_loop, "routing-loop")
        self._write_runtime_file()
        logger.info(
            "lungcds serving",
            extra={
                "ae_title": settings.ae_title,
                "dicom_port": self.dicom_port,
                "api_port": self.api_port,
                "embedded": settings.embedded,
                "worker": self.with_worker,
            },
        )

    def _spawn(self, target: object, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _start_api(self) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in self.settings.bind_host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.settings.bind_host, self.settings.api_port))
        self.api_port = sock.getsockname()[1]
        certificate, key = self.settings.api_tls_certificate, self.settings.api_tls_private_key
        config = uvicorn.Config(
            create_app(self.settings, self.engine, CeleryQueue(self.celery), self.audit),
            log_config=None,
            lifespan="off",
            access_log=False,
            ssl_certfile=str(certificate) if certificate else None,
            ssl_keyfile=str(key) if key else None,
        )
        self._api = uvicorn.Server(config)
        self._spawn(lambda: self._api.run(sockets=[sock]) if self._api else None, "rest-api")

    def _routing_loop(self) -> None:
        """Run the periodic duties until stopped; one failing duty never stops the others or the loop.

        Every tick: finalise idle series (never one an open association is still sending) and pump
        the outboxes (report deliveries, result notifications).  Every few seconds: take over jobs
        whose worker was lost and resume jobs held for disk space.  Less often: resend jobs whose
        message the broker lost, purge the embedded broker's consumed messages, apply the retention
        policy.
        """
        settings = self.settings
        tick = min(1.0, settings.series_idle_seconds / 4)
        duties: list[tuple[str, float, Callable[[], object]]] = [
            ("finalise idle series", 0.0, lambda: self.intake.finalize_idle(busy=self._series_being_received())),
            ("outbox", 0.0, lambda: pump_outbox(self.celery, self.engine)),
            ("notifications", 0.0, lambda: pump_notifications(self.celery, self.engine)),
            ("lost workers", lease_sweep_interval(settings), lambda: take_over_lost_jobs(self.celery, self.engine)),
            ("held jobs", HELD_JOB_INTERVAL_SECONDS, lambda: resume_held_jobs(self.celery, self.engine, settings)),
            (
                "lost messages",
                settings.lost_job_after_s / 4,
                lambda: resend_lost_jobs(self.celery, self.engine, settings),
            ),
            ("broker tables", BROKER_PURGE_INTERVAL_SECONDS, lambda: purge_consumed_messages(settings.broker_url)),
            ("retention", PURGE_INTERVAL_SECONDS, lambda: purge_expired(self.engine, settings)),
        ]
        due = dict.fromkeys((name for name, _, _ in duties), 0.0)
        while not self._stop.wait(tick):
            for name, interval, duty in duties:
                if time.monotonic() < due[name]:
                    continue
                due[name] = time.monotonic() + interval
                try:
                    duty()
                except Exception:  # the loop must survive a database or broker outage
                    logger.exception("routing loop duty failed; retrying", extra={"duty": name})

    def _series_being_received(self) -> frozenset[str]:
        """Series that an open association of our SCP or a STOW-RS request of this process is still
        sending (never finalised as idle)."""
        scp = self._scp
        associations = scp.series_in_open_associations() if scp is not None else frozenset()
        return associations | series_in_open_requests()

    def _write_runtime_file(self) -> None:
        info = {
            "pid": os.getpid(),
            "ae_title": self.settings.ae_title,
            "dicom_port": self.dicom_port,
            "api_port": self.api_port,
            "bind_host": self.settings.bind_host,
        }
        path = Path(self.settings.data_dir) / RUNTIME_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info), encoding="utf-8")
        tmp.replace(path)

    def run_forever(self) -> None:
        """Block: run the embedded worker, or wait for a termination signal."""
        try:
            if self.with_worker:
                worker = self.celery.Worker(
                    queues=[GPU_QUEUE, CPU_QUEUE],
                    pool="threads",
                    concurrency=self.settings.worker_concurrency,
                    loglevel=self.settings.log_level,
                    without_gossip=True,
                    without_mingle=True,
                    hostname=f"embedded@{socket.gethostname()}",
                )
                worker.start()
            else:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, self._on_signal)
                self._stop.wait()
        finally:
            self.stop()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        logger.info("signal received; shutting down", extra={"signal": signum})
        self._stop.set()

    def stop(self) -> None:
        """Stop accepting associations and requests, then the loop (idempotent)."""
        self._stop.set()
        if self._scp is not None:
            self._scp.stop()
            self._scp = None
        if self._api is not None:
            self._api.should_exit = True
        for thread in self._threads:
            thread.join(timeout=10)
        (Path(self.settings.data_dir) / RUNTIME_FILE).unlink(missing_ok=True)
