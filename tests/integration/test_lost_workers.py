"""A lost worker never strands its job (issue 14, item 2), in every mode, with real processes:

* embedded (SQLite and kombu's SQLAlchemy broker): ``kill -9`` of the whole server while a job runs,
  then a restart: the job is taken over by the server itself, no admin, one set of reports;
* Redis on PostgreSQL: ``kill -9`` of the whole worker (parent and pool children) while a job runs,
  then a new worker: the same;
* RabbitMQ on PostgreSQL: a worker frozen mid-analysis (``SIGSTOP`` of its whole tree: a hung host,
  its connection still open) and a second worker.  ``kill -9`` would not show the server's takeover
  here, because RabbitMQ hands a message back as soon as the consumer's connection drops; a frozen
  worker keeps its connection and its message, so only the lease can free the job.  When the frozen
  worker is thawed it finishes the superseded attempt, which is discarded: one set of reports.

The lease is 6 s, so the server's sweep (every second) takes the job over about 6-7 s after the
worker stopped, not after Redis's visibility timeout (hours), RabbitMQ's heartbeat timeout (minutes)
or never (embedded).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from sqlalchemy import create_engine, text

from tests.peers import (
    LungcdsProcess,
    OrthancPeer,
    reachable,
    scratch_postgres,
    scratch_rabbitmq,
    start_lungcds,
    start_worker,
    storescu,
    wait_for,
)

# Minutes of killing and freezing workers: with the heavy suites (`make heavy`, which .ci/run calls).
pytestmark = [pytest.mark.integration, pytest.mark.heavy]

LEASE_S = 6
SOURCE = "lung-dx-a0001-chest-5mm-s2"


def _send(server: LungcdsProcess, ct_dir: Path) -> str:
    files = sorted(p for p in (ct_dir / SOURCE).iterdir() if p.is_file())
    assert storescu(server.dicom_port, files).returncode == 0
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


def _events(database_url: str, kind: str) -> list[tuple[datetime, dict[str, Any]]]:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT at, detail FROM job_event WHERE kind = :k ORDER BY id"), {"k": kind}).all()
    engine.dispose()
    return [
        (
            row[0] if isinstance(row[0], datetime) else datetime.fromisoformat(row[0]),  # SQLite keeps text
            row[1] if isinstance(row[1], dict) else json.loads(row[1]),
        )
        for row in rows
    ]


def _one_set_in_the_pacs(series: dict[str, Any], orthanc: OrthancPeer) -> None:
    deliveries = series["job"]["deliveries"]
    assert sorted(d["kind"] for d in deliveries) == ["kos", "pdf", "sc", "seg", "sr"], "one set of reports"
    for delivery in deliveries:
        assert len([r for r in orthanc.lookup(delivery["sop_instance_uid"]) if r["Type"] == "Instance"]) == 1
    assert int(orthanc.http.get("/statistics").json()["CountInstances"]) == len(deliveries)


def test_embedded_server_killed_mid_analysis_takes_its_job_over_after_restart(
    ct_dir: Path, orthanc: OrthancPeer, tmp_path: Path
) -> None:
    env = {
        "LUNGCDS_MAX_SLICE_THICKNESS_MM": "5",
        "LUNGCDS_DESTINATIONS": orthanc.destination,
        "LUNGCDS_JOB_LEASE_S": str(LEASE_S),
    }
    data_dir = tmp_path / "lungcds"
    server = start_lungcds(data_dir, extra_env=env)
    try:
        uid = _send(server, ct_dir)
        wait_for(lambda: (s := server.series(uid)) and s["state"] == "analysing", 120, 0.1, "analysis started")
        server.process.send_signal(signal.SIGKILL)  # the whole server: SCP, API, routing loop and worker
        server.process.wait()
    finally:
        server.stop()
    (data_dir / "serve.json").unlink()  # what a killed server leaves behind

    restart_at = datetime.now(UTC).replace(tzinfo=None)  # the database keeps naive UTC
    restarted = start_lungcds(data_dir, extra_env=env)
    try:
        series = wait_for(lambda: restarted.delivered(uid), 600, 1.0, "the job taken over and delivered")
        assert series["job"]["attempts"] == 2
        _one_set_in_the_pacs(series, orthanc)
        database_url = f"sqlite:///{data_dir / 'lungcds.db'}"
        taken = _events(database_url, "taken_over")
        assert len(taken) == 1 and "lease expired" in taken[0][1]["why"]
        waited = (taken[0][0].replace(tzinfo=None) - restart_at).total_seconds()
        assert waited < 30, "the lease ran out while the server was down: taken over by its first sweeps"
    finally:
        restarted.stop()


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its children (a Celery prefork worker: the parent and its pool)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [pid, *(int(child) for child in found.stdout.split())]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with scratch_postgres() as url:
        yield url


@pytest.fixture
def redis_url() -> str:
    if not reachable("127.0.0.1", 6379):
        pytest.skip("no Redis on 127.0.0.1:6379")
    import redis

    redis.Redis(host="127.0.0.1", port=6379, db=8).flushdb()
    return "redis://127.0.0.1:6379/8"


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    with scratch_rabbitmq() as url:
        yield url


def _distributed_server(tmp_path: Path, postgres_url: str, broker_url: str, orthanc: OrthancPeer) -> LungcdsProcess:
    return start_lungcds(
        tmp_path / "lungcds",
        worker=False,
        extra_env={
            "LUNGCDS_DATABASE_URL": postgres_url,
            "LUNGCDS_BROKER_URL": broker_url,
            "LUNGCDS_MAX_SLICE_THICKNESS_MM": "5",
            "LUNGCDS_DESTINATIONS": orthanc.destination,
            "LUNGCDS_JOB_LEASE_S": str(LEASE_S),
        },
    )


@pytest.mark.distributed
def test_a_whole_worker_killed_mid_analysis_does_not_strand_its_job(
    ct_dir: Path, orthanc: OrthancPeer, tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    server = _distributed_server(tmp_path, postgres_url, redis_url, orthanc)
    try:
        uid = _send(server, ct_dir)
        worker = start_worker(server)
        wait_for(lambda: (s := server.series(uid)) and s["state"] == "analysing", 180, 0.1, "analysis started")
        for pid in _process_tree(worker.pid):
            os.kill(pid, signal.SIGKILL)  # parent and children: nobody is left to hand the message back
        worker.wait()
        start_worker(server)

        series = wait_for(lambda: server.delivered(uid), 600, 1.0, "the job taken over and delivered")
        _one_set_in_the_pacs(series, orthanc)
        started = _events(postgres_url, "started")
        assert len(started) == 2, "one lost attempt, one that finished"
        taken = _events(postgres_url, "taken_over")
        assert len(taken) == 1
        lost_at = started[0][0]
        assert (taken[0][0] - lost_at).total_seconds() < 120, "taken over within about the lease, not hours"
    finally:
        server.stop()


@pytest.mark.distributed
def test_a_frozen_worker_is_taken_over_by_the_server_and_its_late_result_discarded(
    ct_dir: Path, orthanc: OrthancPeer, tmp_path: Path, postgres_url: str, rabbitmq_url: str
) -> None:
    server = _distributed_server(tmp_path, postgres_url, rabbitmq_url, orthanc)
    frozen: list[int] = []
    try:
        uid = _send(server, ct_dir)
        worker = start_worker(server)
        worker_log = server.data_dir.parent / f"{server.data_dir.name}-worker1.log"
        wait_for(lambda: (s := server.series(uid)) and s["state"] == "analysing", 180, 0.1, "analysis started")
        frozen = _process_tree(worker.pid)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)  # a hung host: its connection and its reserved message stay
        start_worker(server)

        series = wait_for(lambda: server.delivered(uid), 600, 1.0, "the job taken over and delivered")
        _one_set_in_the_pacs(series, orthanc)
        started = _events(postgres_url, "started")
        taken = _events(postgres_url, "taken_over")
        assert len(started) == 2 and len(taken) == 1, "one frozen attempt, one taken over by the server"
        waited = (taken[0][0] - started[0][0]).total_seconds()
        assert waited < 60, "taken over within about the lease, before any heartbeat timeout"

        for pid in frozen:
            os.kill(pid, signal.SIGCONT)  # the frozen attempt finishes late: superseded, nothing delivered
        wait_for(lambda: "results discarded" in worker_log.read_text(errors="replace"), 300, 1.0, "the late attempt")
        again = server.series(uid)
        assert again is not None and again["job"]["revision"] == series["job"]["revision"]
        _one_set_in_the_pacs(again, orthanc)
        assert len(_events(postgres_url, "finished")) == 1
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        server.stop()
