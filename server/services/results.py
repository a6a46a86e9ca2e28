"""A series, its latest job and the files its analysis wrote, whoever asks (REST API, HTML console).

Both front ends refuse the same way: an unknown series or report is :class:`NotFound`, results
that the retention policy removed are :class:`Gone` (they existed; send the series again).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from server.db_models import Job, Series
from server.services.admin import Gone, NotFound

__all__ = [
    "REPORT_FILES",
    "ReportFile",
    "get_series",
    "key_image_file",
    "latest_job",
    "produced_reports",
    "report_file",
    "result_dir",
    "result_document",
]

#: Report downloads: URL name → (file name in the result folder, media type).
REPORT_FILES: dict[str, tuple[str, str]] = {
    "pdf": ("report.pdf", "application/pdf"),
    "sr": ("sr.dcm", "application/dicom"),
    "seg": ("seg.dcm", "application/dicom"),
    "seg-lobes": ("seg_lobes.dcm", "application/dicom"),
    "seg-lesions": ("seg_lesions.dcm", "application/dicom"),
    "pdf-dicom": ("report_pdf.dcm", "application/dicom"),
}


@dataclass(frozen=True)
class ReportFile:
    """One report object to download: where it is, its media type and the name it is saved under."""

    path: Path
    media_type: str
    filename: str


def get_series(session: Session, series_uid: str) -> Series:
    """The series; :class:`NotFound` when there is none."""
    series = session.get(Series, series_uid)
    if series is None:
        raise NotFound("Series not found", f"no series with Series Instance UID {series_uid}")
    return series


def latest_job(session: Session, series_uid: str) -> Job | None:
    """The series' job of the newest pipeline version, if it ever had one."""
    return session.exec(select(Job).where(Job.series_instance_uid == series_uid).order_by(col(Job.id).desc())).first()


def result_dir(session: Session, series_uid: str) -> Path:
    """The folder the series' latest analysis wrote.

    Raises
    ------
    NotFound
        No such series, or no completed analysis.
    Gone
        The retention policy removed its files.
    """
    series = get_series(session, series_uid)
    if series.purged_at is not None:
        raise Gone(
            "Results removed",
            f"the files of series {series_uid} were removed on {series.purged_at:%Y-%m-%d} by the retention policy",
        )
    job = latest_job(session, series_uid)
    if job is None or job.result_dir is None:
        raise NotFound("No results", f"series {series_uid} has no completed analysis")
    return Path(job.result_dir)


def result_document(session: Session, series_uid: str) -> dict[str, Any]:
    """The series' result.json (:class:`NotFound` when it is missing, :class:`Gone` when removed)."""
    path = result_dir(session, series_uid) / "result.json"
    if not path.is_file():
        raise NotFound("No results", f"result.json of series {series_uid} is missing")
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def report_file(session: Session, series_uid: str, kind: str) -> ReportFile:
    """The report object ``kind`` (a key of :data:`REPORT_FILES`) of the series' latest analysis.

    Raises
    ------
    NotFound
        An unknown kind, no such series, no completed analysis, or the analysis did not write it.
    Gone
        The retention policy removed its files.
    """
    if kind not in REPORT_FILES:
        raise NotFound("Unknown report", f"report kind must be one of {', '.join(REPORT_FILES)}")
    name, media_type = REPORT_FILES[kind]
    path = result_dir(session, series_uid) / name
    if not path.is_file():
        raise NotFound("Report not produced", f"the analysis of {series_uid} produced no {name}")
    return ReportFile(path, media_type, name)


def produced_reports(session: Session, series_uid: str) -> list[str]:
    """The kinds of :data:`REPORT_FILES` the series' latest analysis wrote (none without results)."""
    try:
        folder = result_dir(session, series_uid)
    except (NotFound, Gone):
        return []
    return [kind for kind, (name, _media) in REPORT_FILES.items() if (folder / name).is_file()]


def key_image_file(session: Session, series_uid: str) -> Path:
    """The key-image Secondary Capture of the series' latest analysis (:class:`NotFound`, :class:`Gone`)."""
    from reports.bundle import SC_FILE  # here: the report builders take seconds to import, the API needs none

    path = result_dir(session, series_uid) / SC_FILE
    if not path.is_file():
        raise NotFound("No key image", f"the analysis of {series_uid} produced no key-image picture")
    return path
