"""The patient's earlier analyses: same Patient ID and issuer, other studies, done, readable, same birth date."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from dicom_node.spool import Spool, StoredInstance
from models.phantom import chest_phantom, write_ct_series
from server.api.main import create_app
from server.core.config import Settings
from server.core.db import session_scope
from server.core.security import create_api_key
from server.db_models import Job, Series
from server.routing.intake import SeriesIntake
from server.services.followup import prior_analyses
from server.tasks.app import ANALYSIS_TASK, create_celery
from tests.server.conftest import HeaderFactory, Recorder

HEADLINE = {"lung_volume_ml": 5000.0, "well_aerated_pct": 80.0}


def _analysed(
    intake: SeriesIntake,
    engine: Engine,
    tmp_path: Path,
    ct_headers: HeaderFactory,
    n: int,
    *,
    result: dict[str, object] | None = None,
    **patient: str,
) -> str:
    """Series ``n`` of study ``n`` stored, queued and marked done with a result.json; its study UID."""
    study, series = f"1.2.826.0.1.3680043.8.498.{n}0", f"1.2.826.0.1.3680043.8.498.{n}1"
    headers = [
        dataclasses.replace(h, **{"patient_birth_date": "19700101", **patient})
        for h in ct_headers(count=30, spacing=5.0, series_uid=series, study_uid=study, study_date=f"2026010{n}")
    ]
    for h in headers:
        intake.instance_stored(StoredInstance(h, Path(f"/spool/{h.sop_instance_uid}.dcm"), 1, False), None)
    assert intake.finalize(series, trigger="test")
    out = tmp_path / f"results-{n}"
    out.mkdir()
    (out / "result.json").write_text(
        json.dumps(
            result
            or {
                "analysable": True,
                "headline": HEADLINE,
                "acquisition": {"slice_thickness_mm": 2.0},
                "outputs": {"sr": {"sop_instance_uid": f"9.{n}", "series_instance_uid": f"8.{n}"}},
            }
        )
    )
    with Session(engine) as session:
        session.execute(update(Job).where(Job.series_instance_uid == series).values(state="done", result_dir=str(out)))
        session.execute(update(Series).where(Series.series_instance_uid == series).values(state="done"))
        session.commit()
    return study


def test_only_other_analysed_studies_of_the_same_patient_are_priors(
    intake: SeriesIntake, engine: Engine, tmp_path: Path, ct_headers: HeaderFactory
) -> None:
    first = _analysed(intake, engine, tmp_path, ct_headers, 1)
    current = _analysed(intake, engine, tmp_path, ct_headers, 2)
    _analysed(intake, engine, tmp_path, ct_headers, 3, patient_id="SOMEONE-ELSE")
    _analysed(intake, engine, tmp_path, ct_headers, 4, issuer_of_patient_id="OTHER-HOSPITAL")
    _analysed(intake, engine, tmp_path, ct_headers, 5, patient_birth_date="19010101")
    _analysed(intake, engine, tmp_path, ct_headers, 6, result={"analysable": False})
    with Session(engine) as session:
        priors = prior_analyses(session, current)
    assert [p.study_instance_uid for p in priors] == [first]
    prior = priors[0]
    assert (prior.study_date, prior.headline, prior.sr_sop_instance_uid) == ("20260101", HEADLINE, "9.1")


def test_no_patient_id_no_history(
    intake: SeriesIntake, engine: Engine, tmp_path: Path, ct_headers: HeaderFactory
) -> None:
    _analysed(intake, engine, tmp_path, ct_headers, 1, patient_id="")
    current = _analysed(intake, engine, tmp_path, ct_headers, 2, patient_id="")
    with Session(engine) as session:
        assert prior_analyses(session, current) == []


def _store_study(
    intake: SeriesIntake, settings: Settings, tmp_path: Path, n: int, study_date: str, *, consolidation: bool
) -> str:
    """A phantom chest CT of PHANTOM-1 as study ``n`` of ``study_date``, stored and finalised; its series UID."""
    phantom = chest_phantom(shape_zyx=(96, 128, 128), spacing_zyx=(2.5, 2.8, 2.8), consolidation=consolidation)
    series = f"1.2.826.0.1.3680043.8.498.77{n}1"
    files = write_ct_series(
        phantom,
        None,
        tmp_path / f"study-{n}",
        patient_id="PHANTOM-1",
        patient_name="Phantom^Chest",
        patient_age="050Y",
        patient_sex="O",
        study_uid=f"1.2.826.0.1.3680043.8.498.77{n}0",
        series_uid=series,
        slice_thickness=2.5,
    )
    spool = Spool(settings.spool_dir, min_free_bytes=0)
    for path in files:
        ds = pydicom.dcmread(path)
        ds.StudyDate = study_date
        ds.save_as(path)
        intake.instance_stored(spool.store_file(path), None)
    assert intake.finalize(series, trigger="test")
    return series


def test_the_second_study_of_a_patient_is_compared_with_the_first_in_result_and_reports(
    intake: SeriesIntake, queue: Recorder, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    """Through the analysis task: the first study has no prior, the second compares with it."""
    app = create_celery(settings)
    results = []
    for n, date, consolidation in ((1, "20260101", False), (2, "20260301", True)):
        _store_study(intake, settings, tmp_path, n, date, consolidation=consolidation)
        job_id, revision = queue.calls[-1][0], queue.calls[-1][1]
        app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
        with Session(engine) as session:
            job = session.get(Job, job_id)
            assert job is not None and job.state == "done", job and job.error
            results.append(json.loads((Path(str(job.result_dir)) / "result.json").read_text()))
    first, second = results
    assert first["followup"]["comparable"] is False
    assert first["followup"]["reasons"] == ["no earlier analysed chest CT of this patient"]
    followup = second["followup"]
    assert followup["comparable"] is True, followup["reasons"]
    assert followup["prior"]["study_instance_uid"] == first["study_instance_uid"]
    assert followup["prior"]["sr_sop_instance_uid"] == first["outputs"]["sr"]["sop_instance_uid"]
    assert followup["interval_days"] == 59
    for key, change in followup["changes"].items():
        assert change["prior"] == first["headline"][key] and change["current"] == second["headline"][key], key
    well = followup["changes"]["well_aerated_pct"]
    assert well["delta"] == pytest.approx(well["current"] - well["prior"]) and well["delta"] < 0
    with session_scope(engine) as session:
        key = create_api_key(session, "viewer").secret
    client = TestClient(create_app(settings, engine))
    url = f"/api/v1/series/{second['series_instance_uid']}/result"
    served = client.get(url, headers={"Authorization": f"Bearer {key}"}).json()
    assert served.get("followup") == followup, served
    assert {"headline", "zones", "emphysema", "acquisition"} <= set(served)
    assert {"RU", "RM", "RL", "LU", "LM", "LL", "core", "rind"} <= set(served["measurements"])
