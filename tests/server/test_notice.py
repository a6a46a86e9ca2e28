"""A chest CT turned away by the eligibility rules leaves a not-analysed notice in PACS; nothing else does."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from server import crud
from server.core.config import Settings
from server.db_models import Delivery, Job, utcnow
from server.routing.intake import SeriesIntake
from server.routing.notice import is_chest_ct_image_series
from server.tasks.app import ANALYSIS_TASK, create_celery
from tests.peers import free_port
from tests.server.conftest import HeaderFactory, Recorder, finalise_phantom
from tests.server.test_intake import ASSOC, _series, _store

THICK = {"count": 64, "spacing": 5.0, "thickness": 5.0}


@pytest.mark.parametrize(
    ("overrides", "chest"),
    [
        ({"body_part_examined": "CHEST"}, True),
        ({"body_part_examined": "chest "}, True),
        ({"body_part_examined": "ABDOMEN", "study_description": "Chest"}, False),  # the header's body part wins
        ({"body_part_examined": "PARTIALBODY"}, False),
        ({"study_description": "Thorax^AThoraxRoutine (Adult)"}, True),
        ({"series_description": "CT lungs 1.0 B70f"}, True),
        ({"study_description": "CT Body 3.0"}, False),
        ({"study_description": "Longitudinal follow-up"}, False),
        ({}, False),  # says nothing: not called chest
        ({"body_part_examined": "CHEST", "image_type": ("ORIGINAL", "PRIMARY", "LOCALIZER")}, False),
        ({"body_part_examined": "CHEST", "modality": "MR"}, False),
    ],
)
def test_only_chest_ct_image_series_are_called_chest(
    ct_headers: HeaderFactory, overrides: dict[str, object], chest: bool
) -> None:
    assert is_chest_ct_image_series(ct_headers(count=3, **overrides)) is chest


def _finalise(intake: SeriesIntake, headers: list) -> str:  # type: ignore[type-arg]
    _store(intake, headers)
    uid = headers[0].series_instance_uid
    intake.association_ended(ASSOC, frozenset({uid}), released=True)
    return str(uid)


def test_a_thick_chest_ct_is_rejected_and_gets_a_notice_job(
    intake: SeriesIntake, engine: Engine, queue: Recorder, ct_headers: HeaderFactory
) -> None:
    uid = _finalise(intake, ct_headers(**THICK, body_part_examined="CHEST"))
    series = _series(engine, uid)
    assert series.state == "rejected" and "slice thickness 5.0 mm exceeds 3.0 mm" in series.reasons
    assert len(queue.calls) == 1


@pytest.mark.parametrize(
    "overrides",
    [{"body_part_examined": "ABDOMEN"}, {"body_part_examined": "CHEST", "notify": False}],
    ids=["not chest", "notices switched off"],
)
def test_no_notice_for_other_series_or_when_switched_off(
    intake: SeriesIntake,
    engine: Engine,
    queue: Recorder,
    ct_headers: HeaderFactory,
    settings: Settings,
    overrides: dict[str, object],
) -> None:
    settings.notify_not_analysed = bool(overrides.pop("notify", True))
    uid = _finalise(intake, ct_headers(**THICK, **overrides))
    assert _series(engine, uid).state == "rejected"
    assert queue.calls == []


def test_no_notice_for_a_series_of_two_patients(
    intake: SeriesIntake, engine: Engine, queue: Recorder, ct_headers: HeaderFactory
) -> None:
    headers = ct_headers(**THICK, body_part_examined="CHEST")
    mixed = headers[:32] + [
        type(h)(**{**h.__dict__, "patient_id": "PID-2", "patient_name": "Roe^Richard"}) for h in headers[32:]
    ]
    uid = _finalise(intake, mixed)
    assert _series(engine, uid).state == "rejected"
    assert queue.calls == []  # no report may name a patient when the instances disagree on whose they are


def test_the_worker_sends_an_sr_and_pdf_saying_why_and_the_series_stays_rejected(
    intake: SeriesIntake, engine: Engine, queue: Recorder, settings: Settings, phantom_series: list[Path]
) -> None:
    settings.max_slice_thickness_mm = 2.0  # the 2.5 mm phantom (Body Part Examined CHEST) is too thick
    settings.destinations = [f"PACS@127.0.0.1:{free_port()}"]
    job_id, revision, uid = finalise_phantom(intake, queue, settings, phantom_series)  # the notice job
    create_celery(settings).tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
    with Session(engine) as session:
        job = session.get(Job, job_id)
        kinds = {d.kind for d in session.exec(select(Delivery)).all()}
    assert job is not None and job.state == "done" and job.result_dir is not None
    series = _series(engine, uid)
    assert series.state == "rejected" and "slice thickness 2.5 mm exceeds 2.0 mm" in series.reasons
    assert kinds == {"sr", "pdf", "sc"}, "the reader gets an SR, a PDF and a picture saying it was not analysed"
    result = json.loads((Path(job.result_dir) / "result.json").read_text())
    assert result["analysable"] is False and result["eligibility"]["eligible"] is False
    assert result["reasons"] == series.reasons
    sr = pydicom.dcmread(Path(job.result_dir) / "sr.dcm")
    assert sr.PatientID == "PHANTOM-1" and sr.SeriesDescription.startswith("lungcds: series not analysable")


def test_no_step_of_the_notice_job_shows_the_rejected_series_as_queued_or_analysed(
    intake: SeriesIntake, engine: Engine, queue: Recorder, ct_headers: HeaderFactory
) -> None:
    """CI once saw a rejected series read "analysing" (its reasons gone) while its notice job ran."""
    uid = _finalise(intake, ct_headers(**THICK, body_part_examined="CHEST"))
    job_id, revision = queue.calls[0][0], queue.calls[0][1]
    rejected = _series(engine, uid).reasons
    lease = timedelta(seconds=60)

    def after(step: Callable[[Session], object]) -> tuple[str, list[str]]:
        with Session(engine) as session:
            step(session)
            session.commit()
        series = _series(engine, uid)
        return series.state, series.reasons

    def current() -> int:
        with Session(engine) as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job.revision

    assert after(lambda s: crud.start_job(s, job_id, revision, lease)) == ("rejected", rejected)
    assert after(lambda s: crud.hold_job(s, job_id, revision, "the disk is full")) == ("rejected", rejected)
    assert after(lambda s: crud.start_job(s, job_id, revision, timedelta(seconds=-1))) == ("rejected", rejected)
    assert after(lambda s: crud.take_over_lost_jobs(s, utcnow())) == ("rejected", rejected)
    assert after(lambda s: crud.fail_job(s, job_id, current(), "RuntimeError: boom")) == ("rejected", rejected)
    assert after(lambda s: crud.requeue_job(s, job_id)) == ("rejected", rejected)
    assert after(lambda s: crud.cancel_job(s, job_id)) == ("rejected", rejected)

    # An analysis job still shows its series queued, then being analysed.
    analysed = _finalise(intake, ct_headers(series_uid="1.2.826.0.1.3680043.8.498.3", body_part_examined="CHEST"))
    job_id, revision = queue.calls[1][0], queue.calls[1][1]
    assert _series(engine, analysed).state == "queued"
    with Session(engine) as session:
        assert crud.start_job(session, job_id, revision, lease).started
        session.commit()
    assert _series(engine, analysed).state == "analysing"
