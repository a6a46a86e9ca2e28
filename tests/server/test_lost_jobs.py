"""No job is stranded and nothing waits for an admin (issue 14, items 2 and 7): a running job whose
lease expired is taken over by the server, a job held for disk space resumes when space returns,
stuck work is visible over REST and in the metrics, the embedded broker's consumed messages are
purged, and the idle timer leaves alone a series whose association is still open."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from kombu import Connection
from sqlalchemy import create_engine, text, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from server import crud
from server.api.main import create_app
from server.core.config import Settings
from server.core.security import create_api_key
from server.db_models import Job, JobEvent, Series, utcnow
from server.routing.intake import SeriesIntake
from server.tasks.app import ANALYSIS_TASK, LungcdsCelery, create_celery
from server.tasks.broker_tables import MESSAGE_TABLE, purge_consumed_messages
from server.tasks.lost_jobs import resume_held_jobs, take_over_lost_jobs
from tests.server.conftest import HeaderFactory

Sent = list[tuple[int, int]]


@pytest.fixture
def app(settings: Settings) -> LungcdsCelery:
    return create_celery(settings)


@pytest.fixture
def sent(app: LungcdsCelery, monkeypatch: pytest.MonkeyPatch) -> Sent:
    """Analysis messages the recovery functions send (recorded instead of put on the broker)."""
    calls: Sent = []
    monkeypatch.setattr(
        "server.tasks.lost_jobs.enqueue_analysis",
        lambda _app, job_id, revision, countdown=None: calls.append((job_id, revision)),
    )
    return calls


def _job(engine: Engine, job_id: int) -> Job:
    with Session(engine) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _start(engine: Engine, job_id: int, revision: int, lease_s: float) -> None:
    """Claim the job as a worker would, with a lease of ``lease_s`` seconds (negative: already expired)."""
    with Session(engine) as session:
        assert crud.start_job(session, job_id, revision, timedelta(seconds=60)).started
        session.execute(update(Job).where(Job.id == job_id).values(lease_until=utcnow() + timedelta(seconds=lease_s)))
        session.commit()


def test_a_running_job_whose_lease_expired_is_taken_over_at_a_new_revision(
    app: LungcdsCelery, engine: Engine, queued: tuple[int, int, str], sent: Sent
) -> None:
    job_id, revision, uid = queued
    _start(engine, job_id, revision, lease_s=30)
    assert take_over_lost_jobs(app, engine) == 0, "a live lease is left alone"
    assert sent == []

    _start_expired = update(Job).where(Job.id == job_id).values(lease_until=utcnow() - timedelta(seconds=1))
    with Session(engine) as session:
        session.execute(_start_expired)
        session.commit()
    assert take_over_lost_jobs(app, engine) == 1
    job = _job(engine, job_id)
    assert (job.state, job.revision, job.lease_until) == ("queued", revision + 1, None)
    assert sent == [(job_id, revision + 1)]
    assert take_over_lost_jobs(app, engine) == 0, "taken over once"
    with Session(engine) as session:
        assert session.get(Series, uid).state == "queued"  # type: ignore[union-attr]
        kinds = [e.kind for e in session.exec(select(JobEvent).where(JobEvent.job_id == job_id)).all()]
    assert kinds.count("taken_over") == 1

    # The lost attempt comes back after all: its revision is superseded, its results are discarded.
    with Session(engine) as session:
        assert not crud.finish_job(session, job_id, revision, result_dir="/lost", timings={})
        session.commit()
    assert _job(engine, job_id).state == "queued"


def test_the_taken_over_job_is_analysed_once_by_the_new_message(
    app: LungcdsCelery, engine: Engine, queued: tuple[int, int, str], sent: Sent
) -> None:
    job_id, revision, _ = queued
    _start(engine, job_id, revision, lease_s=-1)
    assert take_over_lost_jobs(app, engine) == 1
    app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])  # the lost attempt's message, redelivered late
    assert _job(engine, job_id).attempts == 1, "the superseded message is skipped"
    app.tasks[ANALYSIS_TASK].apply(args=list(sent[0]))
    job = _job(engine, job_id)
    assert (job.state, job.attempts) == ("done", 2), job.error


def test_a_full_results_disk_holds_the_job_and_it_resumes_when_space_returns(
    app: LungcdsCelery, engine: Engine, settings: Settings, queued: tuple[int, int, str], sent: Sent
) -> None:
    job_id, revision, uid = queued
    settings.min_free_disk_mb = 2**40  # no disk has this much free: the reserve is never met
    app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
    job = _job(engine, job_id)
    assert job.state == "queued" and job.held_for and "below the reserve" in job.held_for
    assert not (settings.results_dir / uid).exists(), "no result is written into the reserve"
    with Session(engine) as session:
        stuck = crud.stuck_jobs(session, utcnow(), timedelta(hours=1))
        assert [(s.job_id, s.reason) for s in stuck] == [(job_id, "held")]
        assert crud.unsent_queued_jobs(session, utcnow() + timedelta(days=1)) == [], "not resent while held"
    assert resume_held_jobs(app, engine, settings) == 0, "still full"

    settings.min_free_disk_mb = 0
    assert resume_held_jobs(app, engine, settings) == 1
    assert sent == [(job_id, revision)]
    app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
    assert _job(engine, job_id).state == "done"


def test_a_disk_that_fills_during_the_analysis_holds_the_job(
    app: LungcdsCelery, engine: Engine, queued: tuple[int, int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, revision, _ = queued

    def no_space(**_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("server.tasks.analysis.run_analysis", no_space)
    app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
    job = _job(engine, job_id)
    assert job.state == "queued" and job.held_for and "No space left" in job.held_for


def test_stuck_work_is_visible_over_rest_and_in_the_metrics(
    engine: Engine, settings: Settings, queued: tuple[int, int, str]
) -> None:
    job_id, revision, uid = queued
    _start(engine, job_id, revision, lease_s=-5)
    with Session(engine) as session:
        key = create_api_key(session, role="viewer").secret
        session.commit()
    client = TestClient(create_app(settings, engine))
    response = client.get("/api/v1/jobs/stuck", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    assert [(j["job_id"], j["series_instance_uid"], j["reason"]) for j in response.json()] == [
        (job_id, uid, "lease_expired")
    ]
    metrics = client.get("/metrics").text
    assert 'lungcds_jobs_stuck{reason="lease_expired"} 1.0' in metrics
    assert "lungcds_jobs_taken_over_total 0.0" in metrics


def test_the_embedded_brokers_consumed_messages_are_purged(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True)
    with Connection(settings.broker_url) as connection:
        queue = connection.SimpleQueue("purge-test")
        for number in range(3):
            queue.put({"n": number})
        message = queue.get(timeout=5)
        message.ack()
        queue.close()
    broker = create_engine(settings.broker_url.removeprefix("sqla+"))
    count = f"SELECT count(*) FROM {MESSAGE_TABLE} WHERE visible = :v"
    with broker.connect() as conn:
        assert conn.execute(text(count), {"v": False}).scalar() == 1
    assert purge_consumed_messages(settings.broker_url) == 1
    with broker.connect() as conn:
        assert conn.execute(text(count), {"v": False}).scalar() == 0
        assert conn.execute(text(count), {"v": True}).scalar() == 2, "waiting messages are kept"
    broker.dispose()
    assert purge_consumed_messages("redis://127.0.0.1:6379/0") == 0


def test_the_idle_timer_leaves_a_series_alone_while_its_association_is_open(
    engine: Engine, settings: Settings, ct_headers: HeaderFactory
) -> None:
    from dicom_node.spool import StoredInstance

    calls: Sent = []
    intake = SeriesIntake(engine, settings, lambda job, rev: calls.append((job, rev)))
    headers = ct_headers(count=30, spacing=5.0)
    for h in headers:
        intake.instance_stored(StoredInstance(h, Path(f"/spool/{h.sop_instance_uid}.dcm"), 1, False), None)
    uid = str(headers[0].series_instance_uid)
    with Session(engine) as session:
        session.execute(
            update(Series)
            .where(Series.series_instance_uid == uid)
            .values(last_received_at=utcnow() - timedelta(hours=1))
        )
        session.commit()
    assert intake.finalize_idle(busy=frozenset({uid})) == 0
    assert intake.finalize_idle() == 1
    assert len(calls) == 1
