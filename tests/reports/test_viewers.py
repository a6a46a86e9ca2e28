"""What viewers parse: OHIF's DICOM library (dcmjs, under Node) reads our SEG and SR, DCMTK's dsr2html renders the SR.

dcmjs comes from the npm registry (``tests/viewers/package.json``; ``.ci/run`` runs ``npm ci`` there);
without it installed, or without Node or DCMTK, a test skips and says what to install.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom import Dataset

from models.findings import Findings
from reports.identity import ReportContext
from reports.seg import build_seg, segment_label, segment_order
from reports.sr import build_sr
from tests.reports.helpers import sr_values

VIEWERS = Path(__file__).resolve().parents[1] / "viewers"
DSR2HTML = "/usr/bin/dsr2html"  # DCMTK's, not a shadowing one from the venv
NOT_INSTALLED_LINE = "Model not run: CO-RADS (corads): no weights installed"


def _dcmjs(kind: str, path: Path) -> dict[str, Any]:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed")
    if not (VIEWERS / "node_modules" / "dcmjs").is_dir():
        pytest.skip(f"dcmjs is not installed: run `npm ci --prefix {VIEWERS}`")
    completed = subprocess.run(
        ["node", str(VIEWERS / "read_dicom.js"), kind, str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    parsed: dict[str, Any] = json.loads(completed.stdout)
    return parsed


def _written(tmp_path: Path, headers: list[Dataset], findings: Findings, context: ReportContext) -> tuple[Path, Path]:
    seg = build_seg(findings, headers, context)
    assert seg is not None
    seg_path, sr_path = tmp_path / "seg.dcm", tmp_path / "sr.dcm"
    seg.save_as(seg_path, enforce_file_format=True)
    build_sr(findings, headers, context, seg=seg).save_as(sr_path, enforce_file_format=True)
    return seg_path, sr_path


def test_dcmjs_reads_the_segments_labels_and_frames(
    tmp_path: Path, headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    seg_path, _ = _written(tmp_path, headers, findings, context)
    seen = _dcmjs("seg", seg_path)
    seg = pydicom.dcmread(seg_path)
    names = segment_order(findings)
    assert [s["tracking"] for s in seen["segments"]] == names
    assert [s["label"] for s in seen["segments"]] == [segment_label(name) for name in names]
    assert seen["frames"] == seen["perFrame"] == int(seg.NumberOfFrames)
    rows, columns = int(seg.Rows), int(seg.Columns)
    assert seen["pixelBytes"] >= (seen["frames"] * rows * columns + 7) // 8  # 1 bit per pixel, padded
    assert seen["patientId"] == headers[0].PatientID and seen["studyUid"] == headers[0].StudyInstanceUID


def test_dcmjs_reads_every_number_of_the_sr_with_its_unit(
    tmp_path: Path, headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    _, sr_path = _written(tmp_path, headers, findings, context)
    seen = _dcmjs("sr", sr_path)
    ours = sr_values(pydicom.dcmread(sr_path))
    assert seen["title"] == "Imaging Measurement Report"
    assert [(n["concept"], n["value"], n["unit"]) for n in seen["numbers"]] == [
        (concept, value, unit) for _, concept, value, unit in ours
    ]


def test_dcmjs_reads_the_models_that_did_not_run_as_one_item_per_status(
    tmp_path: Path, headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    _, sr_path = _written(tmp_path, headers, findings, context)
    summaries = [s for s in _dcmjs("sr", sr_path)["statements"] if s["text"].startswith("Model run status: ")]
    assert [(s["text"], [(c["relationship"], c["text"]) for c in s["children"]]) for s in summaries] == [
        ("Model run status: Model not installed, no result", [("HAS PROPERTIES", NOT_INSTALLED_LINE)]),
        (
            "Model run status: Model skipped, no result",
            [
                (
                    "HAS PROPERTIES",
                    "Model not run: STOIC2021 (stoic): slices are 5 mm thick; STOIC2021 needs at most 3 mm",
                )
            ],
        ),
        (
            "Model run status: Model failed, no result",
            [("HAS PROPERTIES", "Model not run: I3Dr (i3dr): RuntimeError: out of memory")],
        ),
    ]


def test_dsr2html_renders_the_sr(
    tmp_path: Path, headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    if not Path(DSR2HTML).is_file():
        pytest.skip("DCMTK's dsr2html is not installed (apt install dcmtk)")
    _, sr_path = _written(tmp_path, headers, findings, context)
    completed = subprocess.run([DSR2HTML, str(sr_path)], check=False, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    html = completed.stdout
    assert "Imaging Measurement Report" in html and str(headers[0].PatientID) in html
    assert "Volume" in html and "ml" in html
    assert "Model not installed, no result" in html and "CO-RADS (corads): no weights installed" in html
