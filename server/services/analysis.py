"""One analysis, from stored files to result.json and report objects on disk.

Shared by the Celery task and the offline ``lungcds analyze`` command so that both produce
exactly the same outputs.  The output folder receives ``result.json``, ``sr.dcm``, ``seg.dcm``
(the SEG of the lung masks, when a mask exists), ``seg_lobes.dcm`` and ``seg_lesions.dcm`` (the
SEGs of the lobes and the lesions, when the models made any; one SEG series, see
:mod:`reports.seg`), ``report.pdf``, ``report_pdf.dcm`` (architecture spec, contracts), the
key-image Secondary Capture ``key_images_sc.dcm`` and, for an analysis, the Key Object Selection
``key_objects.dcm``.  result.json ``outputs`` names each DICOM object by its key (``sr``, ``seg``,
``seg_lobes``, ``seg_lesions``, ``pdf``, ``sc``, ``kos``); destinations select them by kind, all
SEGs being ``seg`` (:class:`DicomOutput`).

When the folder already holds an earlier analysis of the same series whose objects have other
UIDs (the content changed: more slices, another pipeline version, other weights; see
:mod:`reports.identity`), the new objects replace them: the new SR lists the earlier SR in its
Predecessor Documents Sequence and result.json names each replaced object under ``replaces``
(``{key: earlier SOP Instance UID}``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from dicom_node.header import InstanceHeader
from models import PIPELINE_VERSION
from models.findings import Findings, ModelRun, PriorAnalysis
from models.pipeline import analyse
from models.qct.followup import with_followup
from models.registry import MODEL_SPECS
from models.runtime import ModelProvider
from models.volume import VolumeError, load_series, patient_context
from reports.bundle import SR_FILE, ReportSet, build_not_analysable, build_reports
from reports.identity import ReportContext
from server.routing.rules import Eligibility
from server.services.stage_clock import Stage, StageClock

__all__ = [
    "AnalysisOutput",
    "DicomOutput",
    "report_context",
    "run_analysis",
    "write_not_analysed_notice",
    "write_result_json",
]

logger = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class DicomOutput:
    """One DICOM report object on disk, as the outbox sends it.

    ``key`` names it in result.json ``outputs`` and ``replaces`` (``"seg_lobes"``); ``kind`` is
    what a destination's outputs select (``"seg"`` for every SEG instance,
    :data:`server.core.config.OUTPUT_KINDS`) and what its delivery records.
    """

    key: str
    kind: str
    path: Path
    sop_instance_uid: str
    series_instance_uid: str


@dataclass
class AnalysisOutput:
    """What one analysis produced, and how long each stage took (seconds).

    ``findings`` is None when the series could not be analysed at all (``analysable`` False,
    with ``reasons``); its reports then say so, so PACS shows that the scan was seen.
    """

    findings: Findings | None
    reports: ReportSet
    result: dict[str, Any]
    out_dir: Path
    dicom_outputs: list[DicomOutput]
    timings: dict[str, float] = field(default_factory=dict)
    analysable: bool = True
    reasons: tuple[str, ...] = ()
    stages: list[Stage] = field(default_factory=list)


def report_context(ae_title: str) -> ReportContext:
    """The device identity our reports carry (same for every object of this installation)."""
    return ReportContext(software_version=PIPELINE_VERSION, station_name=ae_title)


def _dicom_outputs(reports: ReportSet, written: dict[str, Path]) -> list[DicomOutput]:
    """The written DICOM objects of ``reports``, in delivery order."""
    return [
        DicomOutput(o.key, o.kind, written[o.file], str(o.dataset.SOPInstanceUID), str(o.dataset.SeriesInstanceUID))
        for o in reports.dicom_objects()
        if o.dataset is not None and o.file in written
    ]


@dataclass(frozen=True)
class _Previous:
    """The objects of an earlier analysis of the same series in the output folder."""

    uids: dict[str, str]
    sr: pydicom.Dataset | None

    def replaced(self, outputs: list[DicomOutput]) -> dict[str, str]:
        """``{key: earlier SOP Instance UID}`` of every earlier object that ``outputs`` do not repeat."""
        current = {o.sop_instance_uid for o in outputs}
        return {key: uid for key, uid in sorted(self.uids.items()) if uid not in current}

    def predecessors(self) -> list[pydicom.Dataset]:
        """The earlier SR, for the Predecessor Documents Sequence of the new one."""
        return [self.sr] if self.sr is not None else []


def _previous_outputs(out_dir: Path, series_uid: str) -> _Previous:
    """Read what an earlier analysis of ``series_uid`` left in ``out_dir``, before it is overwritten.

    Its ``result.json`` gives the SOP Instance UID of each object (``outputs``); its ``sr.dcm``
    the SR to reference.  Anything unreadable, or of another series or study, is ignored: a
    folder reused for another series replaces nothing.
    """
    uids: dict[str, str] = {}
    study_uid = None
    try:
        earlier = json.loads((out_dir / "result.json").read_text(encoding="utf-8"))
        if earlier.get("series_instance_uid") == series_uid:
            study_uid = earlier.get("study_instance_uid")
            uids = {key: str(o["sop_instance_uid"]) for key, o in earlier.get("outputs", {}).items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        logger.debug("no readable earlier result.json in %s", out_dir)
    sr = None
    try:
        candidate = pydicom.dcmread(out_dir / SR_FILE, stop_before_pixels=True)
        evidence = {
            str(series.SeriesInstanceUID)
            for study in candidate.get("CurrentRequestedProcedureEvidenceSequence", [])
            for series in study.get("ReferencedSeriesSequence", [])
        }
        if series_uid in evidence and (study_uid is None or candidate.StudyInstanceUID == study_uid):
            sr = candidate
            uids.setdefault("sr", str(candidate.SOPInstanceUID))
    except (OSError, pydicom.errors.InvalidDicomError, AttributeError):
        logger.debug("no readable earlier SR in %s", out_dir)
    return _Previous(uids, sr)


def write_result_json(out_dir: Path, result: dict[str, Any]) -> Path:
    """Write result.json atomically (a reader never sees half a file)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "result.json"
    tmp = out_dir / ".result.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True, allow_nan=False), encoding="utf-8")
    os.replace(tmp, path)
    return path


def run_analysis(
    *,
    paths: Sequence[Path],
    out_dir: Path,
    eligibility: Eligibility,
    headers: Sequence[InstanceHeader],
    models: ModelProvider,
    ae_title: str,
    progress: Progress | None = None,
    priors: Sequence[PriorAnalysis] | None = None,
    eligibility_override: Mapping[str, Any] | None = None,
) -> AnalysisOutput:
    """Load the series, run the pipeline, build and write every report object.

    ``priors`` are the patient's earlier analyses (:func:`server.services.followup.prior_analyses`)
    for the follow-up comparison; None when there is no patient history to look in (offline).
    ``eligibility_override`` is the admin's override (``reason``, ``by``, ``at``) under which a
    series that fails the rules is analysed (:mod:`server.services.reevaluation`): result.json
    carries it, and the PDF's eligibility notes say so next to the reasons it overrode.
    """
    timings: dict[str, float] = {}
    stages = StageClock()

    def stage(name: str, fraction: float) -> None:
        stages.enter(name)
        if progress is not None:
            progress(name, fraction)

    try:
        start = time.perf_counter()
        stage("loading", 0.0)
        try:
            volume = load_series(list(paths))
        except VolumeError as exc:
            output = _not_analysable(paths, out_dir, eligibility, headers, ae_title, (str(exc),), eligibility_override)
            output.stages = stages.close()
            return output
        timings["load_s"] = time.perf_counter() - start

        first = pydicom.dcmread(paths[0], stop_before_pixels=True)
        t0 = time.perf_counter()
        findings = analyse(
            volume,
            patient_context(first),
            weights=models.weights,
            demo_weights=models.demo_weights,
            provider=models,
            progress=lambda name, frac: stage(name, 0.1 + 0.7 * frac),
        )
        findings = with_followup(findings, priors, study_date=str(first.get("StudyDate", "") or "") or None)
        timings["analyse_s"] = time.perf_counter() - t0

        stage("reports", 0.8)
        t0 = time.perf_counter()
        source_headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
        previous = _previous_outputs(out_dir, str(source_headers[0].SeriesInstanceUID))
        notes = eligibility.reasons
        if eligibility_override is not None:
            notes += (
                f"analysed although not eligible, on an administrator's override: {eligibility_override['reason']}",
            )
        reports = build_reports(
            findings, source_headers, report_context(ae_title), notes, predecessors=previous.predecessors()
        )
        dicom_outputs = _dicom_outputs(reports, reports.write(out_dir))
        timings["reports_s"] = time.perf_counter() - t0
        done = stages.close()

        result = {
            **_result_header(eligibility, headers, dicom_outputs, eligibility_override),
            "replaces": previous.replaced(dicom_outputs),
            "analysable": True,
            **findings.as_dict(),
            "timings": timings,
            "stages": [step.as_dict() for step in done],
        }
        write_result_json(out_dir, result)
        timings["total_s"] = time.perf_counter() - start
        if progress is not None:
            progress("done", 1.0)
        logger.info("analysis written", extra={"out_dir": str(out_dir), "timings": timings})
        return AnalysisOutput(
            findings=findings,
            reports=reports,
            result=result,
            out_dir=out_dir,
            dicom_outputs=dicom_outputs,
            timings=timings,
            stages=done,
        )
    finally:
        stages.close()  # removes its torch hooks also when the analysis raises


def _result_header(
    eligibility: Eligibility,
    headers: Sequence[InstanceHeader],
    dicom_outputs: list[DicomOutput],
    eligibility_override: Mapping[str, Any] | None,
) -> dict[str, Any]:
    return {
        "eligibility": eligibility.as_dict(),
        "eligibility_override": dict(eligibility_override) if eligibility_override is not None else None,
        "series_instance_uid": headers[0].series_instance_uid if headers else None,
        "study_instance_uid": headers[0].study_instance_uid if headers else None,
        "outputs": {
            o.key: {
                "file": o.path.name,
                "sop_instance_uid": o.sop_instance_uid,
                "series_instance_uid": o.series_instance_uid,
            }
            for o in dicom_outputs
        },
    }


def write_not_analysed_notice(
    paths: Sequence[Path],
    out_dir: Path,
    eligibility: Eligibility,
    headers: Sequence[InstanceHeader],
    ae_title: str,
) -> AnalysisOutput:
    """The notice of a chest CT that the eligibility rules turned away: seen, not analysed, and why.

    The same report objects as a series whose pixels could not be read, with the rules' reasons,
    so that PACS shows the reader that the software did not run (server.routing.notice).
    """
    return _not_analysable(paths, out_dir, eligibility, headers, ae_title, eligibility.reasons)


def _not_analysable(
    paths: Sequence[Path],
    out_dir: Path,
    eligibility: Eligibility,
    headers: Sequence[InstanceHeader],
    ae_title: str,
    reasons: tuple[str, ...],
    eligibility_override: Mapping[str, Any] | None = None,
) -> AnalysisOutput:
    """Reports saying the series was seen but could not be analysed, and why."""
    logger.warning("series not analysable", extra={"out_dir": str(out_dir), "reasons": list(reasons)})
    source_headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    previous = _previous_outputs(out_dir, str(source_headers[0].SeriesInstanceUID))
    reports = build_not_analysable(
        source_headers, report_context(ae_title), reasons, PIPELINE_VERSION, predecessors=previous.predecessors()
    )
    dicom_outputs = _dicom_outputs(reports, reports.write(out_dir))
    why = "series not analysable: " + "; ".join(reasons)
    runs = {
        spec.name: ModelRun(
            name=spec.name, status="skipped", reason=why, version=spec.version, description=spec.description
        )
        for spec in MODEL_SPECS
    }
    result = {
        **_result_header(eligibility, headers, dicom_outputs, eligibility_override),
        "replaces": previous.replaced(dicom_outputs),
        "analysable": False,
        "reasons": list(reasons),
        "pipeline_version": PIPELINE_VERSION,
        "measurements": {},
        "models": {name: run.as_dict() for name, run in runs.items()},
    }
    write_result_json(out_dir, result)
    return AnalysisOutput(
        findings=None,
        reports=reports,
        result=result,
        out_dir=out_dir,
        dicom_outputs=dicom_outputs,
        analysable=False,
        reasons=reasons,
    )
