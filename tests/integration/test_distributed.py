"""Distributed mode on the machine's real PostgreSQL and Redis: the SCP/API host runs
``lungcds serve --no-worker`` and a separate ``lungcds worker`` process does the analysis."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import create_engine, text

from tests.peers import (
    PG_ADMIN_URL,
    LungcdsProcess,
    OrthancPeer,
    free_port,
    reachable,
    scratch_postgres,
    start_lungcds,
    start_worker,
    storescu,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.distributed]

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with scratch_postgres() as url:
        yield url


@pytest.fixture
def redis_url() -> str:
    if not reachable(REDIS_HOST, REDIS_PORT):
        pytest.skip("no Redis on 127.0.0.1:6379")
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=7)
    client.flushdb()
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/7"


def _serve_no_worker(tmp_path: Path, database_url: str, broker_url: str, extra: dict[str, str]) -> LungcdsProcess:
    """``lungcds serve --no-worker`` on PostgreSQL and a broker; 5 mm slices eligible; ``extra`` settings."""
    env = {
        "LUNGCDS_DATABASE_URL": database_url,
        "LUNGCDS_BROKER_URL": broker_url,
        "LUNGCDS_MAX_SLICE_THICKNESS_MM": "5",
    }
    return start_lungcds(tmp_path / "lungcds", worker=False, extra_env={**env, **extra})


@pytest.fixture
def distributed(tmp_path: Path, orthanc: OrthancPeer, postgres_url: str, redis_url: str) -> Iterator[LungcdsProcess]:
    server = _serve_no_worker(tmp_path, postgres_url, redis_url, {"LUNGCDS_DESTINATIONS": orthanc.destination})
    yield server
    server.stop()


def test_worker_in_a_separate_process_on_postgres_and_redis(
    ct_dir: Path, orthanc: OrthancPeer, distributed: LungcdsProcess
) -> None:
    folder = ct_dir / "lung-dx-a0001-chest-5mm-s2"
    files = sorted(p for p in folder.iterdir() if p.is_file())
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    assert storescu(distributed.dicom_port, files).returncode == 0

    queued = wait_for(lambda: (s := distributed.series(uid)) and s["state"] == "queued" and s, 60, 0.5, "queued")
    assert queued["job"]["state"] == "queued", "no worker yet: the job waits on the broker"

    start_worker(distributed)

    series = wait_for(lambda: distributed.delivered(uid), 900, 1.0, "analysis by the separate worker and delivery")
    assert series["job"]["attempts"] == 1
    sr_uid = next(d["sop_instance_uid"] for d in series["job"]["deliveries"] if d["kind"] == "sr")
    assert [r for r in orthanc.lookup(sr_uid) if r["Type"] == "Instance"]
    engine = create_engine(distributed.env["LUNGCDS_DATABASE_URL"])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM instance")).scalar() == 64
        assert conn.execute(text("SELECT state FROM job")).scalar() == "done"
    engine.dispose()


def _pool_children(worker: subprocess.Popen[bytes]) -> list[int]:
    """The prefork pool children of a ``lungcds worker`` process (they run the tasks)."""
    found = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


def test_a_worker_child_killed_mid_analysis_completes_once(
    ct_dir: Path, orthanc: OrthancPeer, tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    server = _serve_no_worker(
        tmp_path, postgres_url, redis_url, {"LUNGCDS_DESTINATIONS": orthanc.destination, "LUNGCDS_JOB_LEASE_S": "6"}
    )
    try:
        files = sorted(p for p in (ct_dir / "lung-dx-a0001-chest-5mm-s2").iterdir() if p.is_file())
        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
        assert storescu(server.dicom_port, files).returncode == 0
        wait_for(lambda: (s := server.series(uid)) and s["state"] == "queued", 60, 0.5, "queued")
        worker = start_worker(server)
        wait_for(lambda: (s := server.series(uid)) and s["state"] == "analysing", 120, 0.1, "analysis started")
        children = _pool_children(worker)
        assert children, "the worker has a pool child running the analysis"
        for pid in children:
            os.kill(pid, signal.SIGKILL)  # mid-analysis: no clean-up, no acknowledgement

        series = wait_for(lambda: server.delivered(uid), 900, 1.0, "the analysis taken over and delivered")
        assert series["job"]["attempts"] == 2
        deliveries = series["job"]["deliveries"]
        assert sorted(d["kind"] for d in deliveries) == ["kos", "pdf", "sc", "seg", "sr"], "one set of reports"
        for delivery in deliveries:
            assert len([r for r in orthanc.lookup(delivery["sop_instance_uid"]) if r["Type"] == "Instance"]) == 1
        engine = create_engine(postgres_url)
        with engine.connect() as conn:
            started = conn.execute(text("SELECT count(*) FROM job_event WHERE kind = 'started'")).scalar()
            taken = conn.execute(text("SELECT count(*) FROM job_event WHERE kind = 'taken_over'")).scalar()
        engine.dispose()
        # Taken over once: by the redelivered message once the lease ran out, or by the server's sweep.
        assert (started, taken) == (2, 1)
    finally:
        server.stop()


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    """A private Redis without persistence (as the machine's): a restart forgets every message."""
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: reachable("127.0.0.1", port), 30, 0.1, "Redis to listen")
    return process


def _messages_waiting(port: int) -> int:
    """Messages in the analysis queue's Redis lists, one per priority step ("gpu", "gpu:9")."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        return sum(int(client.llen(key)) for key in client.scan_iter(match="gpu*") if client.type(key) == b"list")
    finally:
        client.close()


def test_a_broker_restart_loses_no_job(ct_dir: Path, orthanc: OrthancPeer, tmp_path: Path, postgres_url: str) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    broker = _start_redis(port)
    server = _serve_no_worker(
        tmp_path,
        postgres_url,
        f"redis://127.0.0.1:{port}/0",
        {"LUNGCDS_DESTINATIONS": orthanc.destination, "LUNGCDS_LOST_JOB_AFTER_S": "8"},
    )
    try:
        files = sorted(p for p in (ct_dir / "lung-dx-a0001-chest-5mm-s2").iterdir() if p.is_file())
        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
        assert storescu(server.dicom_port, files).returncode == 0
        wait_for(lambda: (s := server.series(uid)) and s["state"] == "queued", 60, 0.5, "queued")
        # The job is committed as queued before its message is published: kill the broker only
        # once the message is in it, or a publish retried into the new broker hides the loss.
        wait_for(lambda: _messages_waiting(port) >= 1, 60, 0.1, "the job's message in Redis")
        broker.kill()  # the broker dies with the job's message in memory
        broker.wait(timeout=10)
        broker = _start_redis(port)
        start_worker(server)
        series = wait_for(lambda: server.delivered(uid), 900, 1.0, "the lost job sent again and analysed")
        assert series["job"]["attempts"] == 1
        engine = create_engine(postgres_url)
        with engine.connect() as conn:
            kinds = [row[0] for row in conn.execute(text("SELECT kind FROM job_event ORDER BY id")).all()]
        engine.dispose()
        assert kinds.count("resent") >= 1 and kinds.index("resent") < kinds.index("started")
    finally:
        server.stop()
        broker.kill()
        broker.wait(timeout=10)


def _allow_connections(postgres_url: str, allowed: bool) -> None:
    """Open or close the test database to new connections, closing the open ones when closing."""
    name = postgres_url.rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {"true" if allowed else "false"}'))
        if not allowed:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"), {"name": name}
            )
    admin.dispose()


def test_a_database_outage_refuses_cleanly_and_loses_nothing_acknowledged(
    ct_dir: Path, tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    server = _serve_no_worker(tmp_path, postgres_url, redis_url, {"LUNGCDS_SERIES_IDLE_SECONDS": "3600"})
    try:
        files = sorted(p for p in (ct_dir / "lung-dx-a0001-chest-5mm-s2").iterdir() if p.is_file())
        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
        assert storescu(server.dicom_port, files[:20]).returncode == 0
        _allow_connections(postgres_url, False)  # the database goes away
        try:
            during = storescu(server.dicom_port, files[20:40], extra=("-v",))
        finally:
            _allow_connections(postgres_url, True)
        assert during.returncode != 0, "storescu saw refusals, not success"
        said = during.stdout + during.stderr
        assert "Received Store Response (Refused: OutOfResources)" in said and "(Success)" not in said, said[-2000:]
        assert storescu(server.dicom_port, files).returncode == 0  # the modality sends again
        series = wait_for(
            lambda: (s := server.series(uid)) and s["instance_count"] == len(files) and s, 120, 0.5, "all stored"
        )
        assert series["instance_count"] == 64
        engine = create_engine(postgres_url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM instance")).scalar() == 64, "each instance once"
        engine.dispose()
        assert server.process.poll() is None, "the server kept running"
    finally:
        server.stop()
