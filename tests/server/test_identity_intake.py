"""Whose images a series holds: conflicts are recorded as instances arrive, rejected at finalisation,
refused at analysis time, and a SOP Instance UID is never stored for two contents (issue 14, item 1)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from dicom_node.header import InstanceHeader
from dicom_node.identity import series_disagreements
from dicom_node.scp import AssociationInfo
from dicom_node.spool import StoredInstance
from dicom_node.statuses import DUPLICATE_SOP_INSTANCE
from dicom_node.validation import InvalidInstance
from server.core.config import Settings
from server.db_models import AuditEvent, Instance, Job, Series
from server.routing.intake import SeriesIntake
from tests.server.conftest import HeaderFactory, Recorder

ASSOC = AssociationInfo(id="a1", calling_aet="CT01", called_aet="LUNGCDS", peer_host="127.0.0.1", peer_port=1)
SERIES = "1.2.826.0.1.3680043.8.498.2"


def _store(intake: SeriesIntake, headers: list[InstanceHeader]) -> None:
    for h in headers:
        path = Path("/spool") / str(h.study_instance_uid) / str(h.series_instance_uid) / f"{h.sop_instance_uid}.dcm"
        intake.instance_stored(StoredInstance(header=h, path=path, size=1000, duplicate=False), ASSOC)


def _two_patients(ct_headers: HeaderFactory, **other: str) -> list[InstanceHeader]:
    """Thirty slices of one series: the first fifteen of PAT-A, the last fifteen of someone else."""
    headers = ct_headers(count=30, spacing=5.0, thickness=2.0, patient_id="PAT-A")
    return [h if k < 15 else dataclasses.replace(h, **{"patient_id": "PAT-B", **other}) for k, h in enumerate(headers)]


def _series(engine: Engine, uid: str = SERIES) -> Series:
    with Session(engine) as session:
        series = session.get(Series, uid)
        assert series is not None
        return series


def _audit(engine: Engine, action: str) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.action == action)).all())


def test_two_patients_in_one_series_are_named_with_their_slice_counts(ct_headers: HeaderFactory) -> None:
    reasons = series_disagreements(_two_patients(ct_headers, patient_name="Roe^John"))
    assert "2 patients in one series: PAT-A (15 slices), PAT-B (15 slices)" in reasons
    assert "2 patient names in one series: Doe^Jane (15 slices), Roe^John (15 slices)" in reasons
    assert len(reasons) == 2


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("issuer_of_patient_id", "OTHER-HOSPITAL", "2 issuers of patient ID"),
        ("patient_birth_date", "19500101", "2 birth dates"),
        ("patient_sex", "M", "2 patient sexes"),
        ("study_instance_uid", "1.2.826.0.1.3680043.8.498.99", "2 studies"),
        ("modality", "PT", "2 modalities"),
        ("frame_of_reference_uid", "1.2.826.0.1.3680043.8.498.77", "2 frames of reference"),
    ],
)
def test_every_identity_attribute_is_compared(ct_headers: HeaderFactory, field: str, value: str, words: str) -> None:
    headers = ct_headers(count=4)
    headers[3] = dataclasses.replace(headers[3], **{field: value})
    assert [r for r in series_disagreements(headers) if r.startswith(words + " in one series")], field


def test_person_name_padding_is_not_a_disagreement(ct_headers: HeaderFactory) -> None:
    headers = ct_headers(count=3)
    headers[1] = dataclasses.replace(headers[1], patient_name="Doe^Jane^^^ ")
    headers[2] = dataclasses.replace(headers[2], patient_id=" PID-1 ")
    assert series_disagreements(headers) == []


def test_a_mixed_series_is_recorded_on_arrival_rejected_when_finalised_and_never_queued(
    intake: SeriesIntake, engine: Engine, queue: Recorder, ct_headers: HeaderFactory
) -> None:
    _store(intake, _two_patients(ct_headers))
    series = _series(engine)
    assert series.state == "receiving"
    assert series.identity_conflicts == ["Patient ID (0010,0020) is PAT-B, already held: PAT-A (by the series)"]
    arrivals = _audit(engine, "identity-check")
    assert len(arrivals) == 15 and {e.outcome for e in arrivals} == {"conflict"}
    assert arrivals[0].detail["sop_instance_uid"] == f"{SERIES}.16"

    intake.association_ended(ASSOC, frozenset({SERIES}), released=True)

    series = _series(engine)
    assert series.state == "rejected"
    assert series.reasons[0] == "2 patients in one series: PAT-A (15 slices), PAT-B (15 slices)"
    assert queue.calls == []
    with Session(engine) as session:
        assert session.exec(select(Job)).all() == []
    rejected = [e for e in _audit(engine, "identity-check") if e.outcome == "rejected"]
    assert len(rejected) == 1 and rejected[0].target == SERIES


def test_a_series_that_puts_another_patient_into_a_known_study_is_rejected(
    intake: SeriesIntake, engine: Engine, queue: Recorder, ct_headers: HeaderFactory
) -> None:
    first = ct_headers(count=30, spacing=5.0, series_uid="1.2.826.0.1.3680043.8.498.3", patient_id="PAT-A")
    second = ct_headers(count=30, spacing=5.0, patient_id="PAT-B", patient_name="Roe^John")
    _store(intake, first)
    _store(intake, second)
    assert _series(engine).identity_conflicts == [
        "Patient ID (0010,0020) is PAT-B, already held: PAT-A (by the study's patient)",
        "Patient's Name (0010,0010) is Roe^John, already held: Doe^Jane (by the study's patient)",
    ]
    intake.association_ended(ASSOC, frozenset({SERIES, "1.2.826.0.1.3680043.8.498.3"}), released=True)
    assert _series(engine, "1.2.826.0.1.3680043.8.498.3").state == "queued"
    rejected = _series(engine)
    assert rejected.state == "rejected"
    assert rejected.reasons[0].startswith("study 1.2.826.0.1.3680043.8.498.1 was received for another patient: ")
    assert "Patient ID (0010,0020) is PAT-B, already held: PAT-A" in rejected.reasons[0]
    assert len(queue.calls) == 1


def test_a_conflicting_late_instance_reopens_the_series_and_rejects_it(
    intake: SeriesIntake, engine: Engine, queue: Recorder, ct_headers: HeaderFactory
) -> None:
    headers = ct_headers(count=30, spacing=5.0)
    _store(intake, headers)
    intake.association_ended(ASSOC, frozenset({SERIES}), released=True)
    assert _series(engine).state == "queued" and len(queue.calls) == 1
    late = dataclasses.replace(headers[0], sop_instance_uid=f"{SERIES}.999", patient_id="PAT-X")
    _store(intake, [late])
    assert _series(engine).state == "receiving"
    assert intake.finalize(SERIES, trigger="idle timeout")
    series = _series(engine)
    assert series.state == "rejected"
    assert "2 patients in one series: PID-1 (30 slices), PAT-X (1 slice)" in series.reasons
    assert len(queue.calls) == 1, "the job of the first revision is stale; no new one is queued"


def test_the_same_sop_instance_uid_in_another_series_is_refused_before_it_is_written(
    intake: SeriesIntake, engine: Engine, settings: Settings, ct_headers: HeaderFactory
) -> None:
    original = ct_headers(count=1)[0]
    _store(intake, [original])
    intruder = dataclasses.replace(original, series_instance_uid="1.2.826.0.1.3680043.8.498.5", patient_id="PAT-B")
    with pytest.raises(InvalidInstance) as refused:
        intake.admit(intruder)
    assert refused.value.status == DUPLICATE_SOP_INSTANCE
    assert refused.value.reason.startswith("SOP Instance UID (0008,0018) in use: already stored in another series")
    assert "PAT-B" not in refused.value.reason, "reasons are logged: no patient data in them"
    assert refused.value.detail["stored"]["patient_id"] == "PID-1"  # type: ignore[index]
    assert refused.value.detail["received"]["patient_id"] == "PAT-B"  # type: ignore[index]
    intake.admit(original)  # the same instance again is a re-send, not a conflict


def test_a_race_past_admission_is_refused_at_indexing(
    intake: SeriesIntake, engine: Engine, ct_headers: HeaderFactory
) -> None:
    original = ct_headers(count=1)[0]
    _store(intake, [original])
    intruder = dataclasses.replace(original, series_instance_uid="1.2.826.0.1.3680043.8.498.5")
    with pytest.raises(InvalidInstance) as refused:
        _store(intake, [intruder])
    assert refused.value.status == DUPLICATE_SOP_INSTANCE
    with Session(engine) as session:
        rows = session.exec(select(Instance)).all()
        assert [r.series_instance_uid for r in rows] == [SERIES]
        assert session.get(Series, "1.2.826.0.1.3680043.8.498.5") is not None
        assert session.get(Series, "1.2.826.0.1.3680043.8.498.5").instance_count == 0  # type: ignore[union-attr]
