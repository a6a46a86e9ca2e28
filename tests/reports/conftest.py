"""Fixtures of the report tests (factories live in ``tests.reports.helpers``)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset

from models.findings import Findings
from reports.identity import ReportContext
from tests.reports.helpers import (
    DCIODVFY,
    REAL_SERIES,
    RealSeries,
    Validation,
    ct_headers,
    have_poppler,
    real_series,
    run_dciodvfy,
    synthetic_findings,
)


@pytest.fixture(scope="session")
def real() -> RealSeries:
    """The shared Lung-PET-CT-Dx series with full-featured Findings; skipped without the data."""
    if not REAL_SERIES.is_dir():
        pytest.skip(f"real CT series not present at {REAL_SERIES}")
    return real_series()


@pytest.fixture()
def context() -> ReportContext:
    return ReportContext(software_version="0.1.0", institution_name="Test Hospital")


@pytest.fixture()
def make_headers() -> Callable[..., list[Dataset]]:
    return ct_headers


@pytest.fixture()
def make_findings() -> Callable[..., Findings]:
    return synthetic_findings


@pytest.fixture()
def headers() -> list[Dataset]:
    return ct_headers()


@pytest.fixture()
def findings(headers: list[Dataset]) -> Findings:
    return synthetic_findings(headers)


@pytest.fixture()
def dciodvfy() -> Callable[[Path], Validation]:
    """Run dicom3tools' dciodvfy on a file (skips when the tool is absent)."""
    if shutil.which(DCIODVFY) is None:
        pytest.skip(f"{DCIODVFY} not installed")
    return run_dciodvfy


@pytest.fixture()
def poppler() -> None:
    """Skip unless poppler-utils (pdftotext, pdftoppm, pdfinfo) are installed."""
    if not have_poppler():
        pytest.skip("poppler-utils (pdftotext, pdftoppm, pdfinfo) not installed")


@pytest.fixture(autouse=True)
def strict_pydicom() -> Iterator[None]:
    """Write and read our objects with pydicom's strict value validation (house rule 15)."""
    settings = pydicom.config.settings
    saved = (settings.reading_validation_mode, settings.writing_validation_mode)
    settings.reading_validation_mode = pydicom.config.RAISE
    settings.writing_validation_mode = pydicom.config.RAISE
    yield
    settings.reading_validation_mode, settings.writing_validation_mode = saved
