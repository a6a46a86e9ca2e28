"""Urgent analyses first: STAT accessions and priority source AEs, on the real brokers."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server.core.config import Settings
from server.db_models import Job, Series, Study
from server.routing.priority import is_urgent, message_priority
from server.tasks.app import GPU_QUEUE, create_celery, enqueue_analysis, redis_lists

BROKERS = {
    "redis": ("127.0.0.1", 6379, "redis://127.0.0.1:6379/13"),
    "rabbitmq": ("127.0.0.1", 5672, "amqp://guest:guest@127.0.0.1:5672//"),
}


def _job(session: Session, n: int, calling_aet: str, accession: str) -> int:
    study = Study(study_instance_uid=f"1.2.3.{n}", accession_number=accession)
    series = Series(
        series_instance_uid=f"1.2.3.{n}.1", study_instance_uid=study.study_instance_uid, calling_aet=calling_aet
    )
    job = Job(idempotency_key=f"key-{n}", series_instance_uid=series.series_instance_uid, pipeline_version="test")
    for row in (study, series, job):  # no ORM relationships: insert parents first
        session.add(row)
        session.flush()
    session.commit()
    assert job.id is not None
    return job.id


@pytest.fixture
def jobs(engine: Engine) -> dict[str, int]:
    """Three jobs: routine, from the emergency CT, and a STAT accession from a routine scanner."""
    with Session(engine) as session:
        return {
            "routine": _job(session, 1, "CT_MAIN", "A1001"),
            "er": _job(session, 2, "ER_CT", "A1002"),
            "stat": _job(session, 3, "CT_MAIN", "STAT-77"),
        }


def test_urgent_by_source_ae_or_stat_accession(settings: Settings, engine: Engine, jobs: dict[str, int]) -> None:
    with Session(engine) as session:
        assert not any(is_urgent(session, job, settings) for job in jobs.values()), "nothing is urgent by default"
        settings.priority_calling_aets = ["ER_CT"]
        settings.priority_accession_pattern = "^STAT"
        assert {name: is_urgent(session, job, settings) for name, job in jobs.items()} == {
            "routine": False,
            "er": True,
            "stat": True,
        }
        assert not is_urgent(session, 999_999, settings), "an unknown job is routine"


def test_a_bad_stat_pattern_is_refused_at_start(settings: Settings) -> None:
    with pytest.raises(ValidationError, match="not a regular expression"):
        Settings(data_dir=settings.data_dir, priority_accession_pattern="^STAT(")


def test_each_broker_gets_its_own_priority_scale() -> None:
    assert (message_priority("redis://h/0", True), message_priority("redis://h/0", False)) == (0, 9)
    assert (message_priority("amqp://h//", True), message_priority("amqp://h//", False)) == (9, 0)
    assert message_priority("sqla+sqlite:///x.db", True) is None


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(params=list(BROKERS))
def broker_settings(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Settings]:
    host, port, url = BROKERS[request.param]
    if not _reachable(host, port):
        pytest.skip(f"no {request.param} at {host}:{port}")
    settings.broker_url = url
    settings.priority_calling_aets = ["ER_CT"]
    settings.priority_accession_pattern = "^STAT"
    app = create_celery(settings)
    with app.connection_for_write() as connection:
        # A queue declared earlier without priorities would keep its arguments; deleting is idempotent.
        connection.default_channel.queue_delete(GPU_QUEUE)
    yield settings
    with app.connection_for_write() as connection:
        connection.default_channel.queue_delete(GPU_QUEUE)


def test_the_broker_hands_out_urgent_jobs_first(
    broker_settings: Settings, engine: Engine, jobs: dict[str, int]
) -> None:
    app = create_celery(broker_settings)
    with app.connection_for_write() as connection:
        app.amqp.queues[GPU_QUEUE].bind(connection.default_channel).declare()
    for name in ("routine", "er", "stat"):
        enqueue_analysis(app, jobs[name], 0)
    if broker_settings.broker_url.startswith("redis"):
        # The lists an autoscaler reads (deploy/k8s/overlays/keda) hold every waiting job.
        with app.connection_for_read() as connection:
            client = connection.default_channel.client
            assert [client.llen(name) for name in redis_lists(GPU_QUEUE)] == [2, 1]
    order = []
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        for _ in range(3):
            raw = channel.basic_get(GPU_QUEUE, no_ack=True)
            assert raw is not None
            args, _kwargs, _embed = channel.message_to_python(raw).decode()
            order.append(args[0])
    names = {job: name for name, job in jobs.items()}
    assert [names[job] for job in order] == ["er", "stat", "routine"]
