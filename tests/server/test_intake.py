"""Series intake: indexing, completion by content or idle time, reopening, routing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from dicom_node.header import InstanceHeader
from dicom_node.scp import AssociationInfo
from dicom_node.spool import StoredInstance
from server.db_models import Instance, Job, Series, utcnow
from server.routing.intake import SeriesIntake
from tests.server.conftest import HeaderFactory, Recorder

ASSOC = AssociationInfo(id="a1", calling_aet="CT01", called_aet="LUNGCDS", peer_host="127.0.0.1", peer_port=1)


def _store(intake: SeriesIntake, headers: list[InstanceHeader], tmp: Path = Path("/spool")) -> None:
    for h in headers:
        intake.instance_stored(
            StoredInstance(header=h, path=tmp / f"{h.sop_instance_uid}.dcm", size=1000, duplicate=False), ASSOC
        )


def _series(engine: Engine, uid: str) -> Series:
    with Session(engine) as session:
        series = session.get(Series, uid)
        assert series is not None
        return series


def _age(engine: Engine, uid: str, seconds: float) -> None:
    with Session(engine) as session:
        session.execute(
            update(Series)
            .where(Series.series_instance_uid == uid)
            .values(last_received_at=utcnow() - timedelta(seconds=seconds))
        )
        session.commit()


def test_complete_series_is_queued_once_when_the_association_is_released(
    intake: SeriesIntake, engine: Engine, queue: Recorder, ct_headers: HeaderFactory
) -> None:
    headers = ct_headers()
    _store(intake, headers)
    series_uid = headers[0].series_instance_uid
    assert _series(engine, series_uid).state == "receiving"
    intake.association_ended(ASSOC, frozenset({series_uid}), released=True)
    series = _series(engine, series_uid)
    assert series.state == "queued" and series.instance_count == 100
    assert series.completion_trigger == "association released"
    assert len(queue.calls) == 1
    assert intake.finalize(series_uid, trigger="idle timeout") is False
    assert len(queue.calls) == 1


def test_duplicates_are_indexed_once(intake: SeriesIntake, engine: Engine, ct_headers: HeaderFactory) -> None:
    headers = ct_headers(count=30)
    _store(intake, headers)
    _store(intake, headers[:5])
    with Session(engine) as session:
        assert len(session.exec(select(Instance)).all()) == 30
    assert _series(engine, headers[0].series_instance_uid).instance_count == 30


def test_an_incomplete_series_waits_for_the_idle_timeout_then_records_why(
    intake: SeriesIntake, engine: Engine, queue: Recorder, ct_headers: HeaderFactory
) -> None:
    headers = ct_headers(skip=(50,))
    uid = headers[0].series_instance_uid
    _store(intake, headers)
    intake.association_ended(ASSOC, frozenset({uid}), released=True)
    assert _series(engine, uid).state == "receiving"
    assert intake.finalize_idle() == 0
    _age(engine, uid, 60)
    assert intake.finalize_idle() == 1
    series = _series(engine, uid)
    assert series.state == "rejected" and series.completion_trigger == "idle timeout"
    assert any("missing" in r for r in series.reasons)
    assert queue.calls == []


def test_an_aborted_association_does_not_complete_the_series(
    intake: SeriesIntake, engine: Engine, ct_headers: HeaderFactory
) -> None:
    headers = ct_headers()
    _store(intake, headers)
    intake.association_ended(ASSOC, frozenset({headers[0].series_instance_uid}), released=False)
    assert _series(engine, headers[0].series_instance_uid).state == "receiving"


def test_thick_slices_are_rejected_with_the_reason(
    intake: SeriesIntake, engine: Engine, queue: Recorder, ct_headers: HeaderFactory
) -> None:
    headers = ct_headers(count=64, spacing=5.0, thickness=5.0)
    _store(intake, headers)
    intake.association_ended(ASSOC, frozenset({headers[0].series_instance_uid}), released=True)
    series = _series(engine, headers[0].series_instance_uid)
    assert series.state == "rejected"
    assert "slice thickness 5.0 mm exceeds 3.0 mm" in series.reasons
    assert queue.calls == []


def test_late_instances_reopen_the_series_and_reuse_its_job(
    intake: SeriesIntake, engine: Engine, queue: Recorder, ct_headers: HeaderFactory
) -> None:
    headers = ct_headers(count=101)
    uid = headers[0].series_instance_uid
    _store(intake, headers[:100])
    intake.association_ended(ASSOC, frozenset({uid}), released=True)
    assert len(queue.calls) == 1
    _store(intake, headers[100:])
    series = _series(engine, uid)
    assert series.state == "receiving" and series.reopen_count == 1
    with Session(engine) as session:
        job = session.exec(select(Job)).one()
        assert job.revision == queue.calls[0][1] + 1, "the queued revision is now stale"
    intake.association_ended(ASSOC, frozenset({uid}), released=True)
    assert len(queue.calls) == 2
    assert queue.calls[0][0] == queue.calls[1][0], "the same job, not a second analysis"
    assert queue.calls[1][1] > queue.calls[0][1]
    with Session(engine) as session:
        assert len(session.exec(select(Job)).all()) == 1


def test_non_ct_storage_is_kept_and_ignored(
    intake: SeriesIntake, engine: Engine, queue: Recorder, ct_headers: HeaderFactory
) -> None:
    headers = ct_headers(count=1, sop_class_uid="1.2.840.10008.5.1.4.1.1.88.33", modality="SR")
    _store(intake, headers)
    intake.association_ended(ASSOC, frozenset({headers[0].series_instance_uid}), released=True)
    series = _series(engine, headers[0].series_instance_uid)
    assert series.state == "ignored"
    assert "stored but not analysed" in series.reasons[0]
    assert queue.calls == []


def test_two_series_of_one_study_are_routed_separately(
    intake: SeriesIntake, engine: Engine, queue: Recorder, ct_headers: HeaderFactory
) -> None:
    a = ct_headers(series_uid="1.2.3.4.100")
    b = ct_headers(series_uid="1.2.3.4.200")
    _store(intake, [x for pair in zip(a, b, strict=True) for x in pair])
    intake.association_ended(ASSOC, frozenset({"1.2.3.4.100", "1.2.3.4.200"}), released=True)
    assert _series(engine, "1.2.3.4.100").state == "queued"
    assert _series(engine, "1.2.3.4.200").state == "queued"
    assert len({job for job, _ in queue.calls}) == 2


def test_a_refused_instance_is_on_the_audit_record_with_its_status_and_reason(
    intake: SeriesIntake, engine: Engine
) -> None:
    from server.db_models import AuditEvent

    intake.instance_refused("1.2.3.9", 0xC000, "pydicom could not parse the data set: truncated", ASSOC)
    with Session(engine) as session:
        [event] = session.exec(select(AuditEvent).where(AuditEvent.outcome == "refused")).all()
    assert (event.channel, event.actor, event.action, event.source) == ("dicom", "dicom:CT01", "c-store", "127.0.0.1:1")
    assert event.detail == {
        "association": "a1",
        "sop_instance_uid": "1.2.3.9",
        "status": "0xC000",
        "reason": "pydicom could not parse the data set: truncated",
    }
