"""Fixtures for the server room: settings on a temp dir, a migrated SQLite DB, headers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from dicom_node.header import InstanceHeader
from server.core.config import Settings
from server.core.db import make_engine, upgrade
from server.routing.intake import SeriesIntake
from tests.peers import scratch_postgres

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A command-line environment: no LUNGCDS_* from the caller, data under ``tmp_path/data`` (returned)."""
    for name in list(os.environ):
        if name.startswith("LUNGCDS_"):
            monkeypatch.delenv(name)
    data = tmp_path / "data"
    monkeypatch.setenv("LUNGCDS_DATA_DIR", str(data))
    monkeypatch.setenv("LUNGCDS_LOG_LEVEL", "WARNING")
    return data


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(__import__("os").environ):
        if name.startswith("LUNGCDS_"):
            monkeypatch.delenv(name)
    return Settings(data_dir=tmp_path / "data", series_idle_seconds=5)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind the server supports (PostgreSQL skipped where there is none)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'scratch.db'}"
        return
    with scratch_postgres() as url:
        yield url


@pytest.fixture
def engine(settings: Settings) -> Engine:
    upgrade(settings.database_url)
    return make_engine(settings.database_url)


HeaderFactory = Callable[..., list[InstanceHeader]]


class Recorder:
    """Records the analyses an intake would put on the queue: (job, revision) per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, job_id: int, revision: int) -> None:
        self.calls.append((job_id, revision))


@pytest.fixture
def queue() -> Recorder:
    return Recorder()


@pytest.fixture
def intake(engine: Engine, settings: Settings, queue: Recorder) -> SeriesIntake:
    return SeriesIntake(engine, settings, queue)


def finalise_phantom(
    intake: SeriesIntake, queue: Recorder, settings: Settings, phantom_series: list[Path]
) -> tuple[int, int, str]:
    """Store the phantom series through the spool and finalise it; its one queued job: (job, revision, series)."""
    import pydicom

    from dicom_node.spool import Spool

    spool = Spool(settings.spool_dir, min_free_bytes=0)
    for path in phantom_series:
        intake.instance_stored(spool.store_file(path), None)
    uid = str(pydicom.dcmread(phantom_series[0], stop_before_pixels=True).SeriesInstanceUID)
    assert intake.finalize(uid, trigger="test")
    assert len(queue.calls) == 1
    return queue.calls[0][0], queue.calls[0][1], uid


@pytest.fixture
def queued(
    intake: SeriesIntake, queue: Recorder, settings: Settings, phantom_series: list[Path]
) -> tuple[int, int, str]:
    """The phantom series stored through the spool, finalised and queued: (job, revision, series)."""
    return finalise_phantom(intake, queue, settings, phantom_series)


@pytest.fixture
def ct_headers() -> HeaderFactory:
    """A factory of axial CT series headers (positions along z, 1-based instance numbers)."""

    def make(
        count: int = 100,
        spacing: float = 2.0,
        thickness: float | None = 2.0,
        series_uid: str = "1.2.826.0.1.3680043.8.498.2",
        study_uid: str = "1.2.826.0.1.3680043.8.498.1",
        skip: tuple[int, ...] = (),
        **overrides: Any,
    ) -> list[InstanceHeader]:
        headers = []
        for k in range(count):
            if k in skip:
                continue
            values: dict[str, Any] = {
                "sop_instance_uid": f"{series_uid}.{k + 1}",
                "sop_class_uid": CT_IMAGE_STORAGE,
                "study_instance_uid": study_uid,
                "series_instance_uid": series_uid,
                "transfer_syntax_uid": "1.2.840.10008.1.2.1",
                "modality": "CT",
                "patient_id": "PID-1",
                "patient_name": "Doe^Jane",
                "patient_age": "054Y",
                "study_date": "20260101",
                "image_type": ("ORIGINAL", "PRIMARY", "AXIAL"),
                "image_orientation": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
                "image_position": (-150.0, -150.0, -k * spacing),
                "slice_thickness": thickness,
                "pixel_spacing": (0.7, 0.7),
                "rows": 512,
                "columns": 512,
                "instance_number": k + 1,
            }
            values.update(overrides)
            headers.append(InstanceHeader(**values))
        return headers

    return make


@pytest.fixture(scope="session")
def phantom_series(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A small synthetic chest CT series (2.5 mm slices) written as DICOM files."""
    from models.phantom import chest_phantom, write_ct_series

    phantom = chest_phantom(shape_zyx=(96, 128, 128), spacing_zyx=(2.5, 2.8, 2.8))
    return write_ct_series(
        phantom,
        phantom.geometry,
        tmp_path_factory.mktemp("phantom"),
        patient_id="PHANTOM-1",
        patient_name="Phantom^Chest",
        patient_age="050Y",
        patient_sex="O",
        slice_thickness=2.5,
    )
