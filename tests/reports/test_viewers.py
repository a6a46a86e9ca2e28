"""What viewers parse: OHIF's DICOM library (dcmjs, under Node) reads our SEGs and SR, DCMTK's dsr2html renders the SR.

dcmjs comes from the npm registry (``tests/viewers/package.json``; ``.ci/run`` runs ``npm ci`` there);
without it installed, or without Node or DCMTK, a test skips and says what to install.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import JPEG2000Lossless

from models.findings import Findings
from reports.identity import ReportContext
from reports.seg import build_segs, layer_segments, segment_label
from reports.sr import build_sr
from tests.reports.helpers import read_with_dcmjs, sr_values

DSR2HTML = "/usr/bin/dsr2html"  # DCMTK's, not a shadowing one from the venv
NOT_INSTALLED_LINE = "Model not run: CO-RADS (corads): no weights installed"


def _written(
    tmp_path: Path, headers: list[Dataset], findings: Findings, context: ReportContext
) -> tuple[dict[str, Path], Path]:
    """Each layer's SEG and the SR referencing them, as Part 10 files."""
    segs = build_segs(findings, headers, context)
    seg_paths = {layer: tmp_path / f"seg_{layer}.dcm" for layer in segs}
    for layer, seg in segs.items():
        seg.save_as(seg_paths[layer], enforce_file_format=True)
    sr_path = tmp_path / "sr.dcm"
    build_sr(findings, headers, context, segs=list(segs.values())).save_as(sr_path, enforce_file_format=True)
    return seg_paths, sr_path


def test_dcmjs_reads_the_segments_labels_and_frames_of_every_seg(
    tmp_path: Path, headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    seg_paths, _ = _written(tmp_path, headers, findings, context)
    layers = layer_segments(findings)
    assert list(seg_paths) == list(layers) == ["lungs", "lobes", "lesions"]
    for layer, path in seg_paths.items():
        seen = read_with_dcmjs("seg", path)
        seg = pydicom.dcmread(path)
        assert [s["tracking"] for s in seen["segments"]] == list(layers[layer])
        assert [s["label"] for s in seen["segments"]] == [segment_label(name) for name in layers[layer]]
        assert seen["frames"] == seen["perFrame"] == int(seg.NumberOfFrames)
        # JPEG 2000 Lossless, one fragment per frame, each smaller than the frame at 1 bit per pixel
        assert seen["transferSyntax"] == JPEG2000Lossless
        assert seen["pixelParts"] == seen["frames"]
        assert 0 < seen["pixelBytes"] < seen["frames"] * int(seg.Rows) * int(seg.Columns) // 8
        assert seen["patientId"] == headers[0].PatientID and seen["studyUid"] == headers[0].StudyInstanceUID


def test_dcmjs_reads_every_number_of_the_sr_with_its_unit(
    tmp_path: Path, headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    _, sr_path = _written(tmp_path, headers, findings, context)
    seen = read_with_dcmjs("sr", sr_path)
    ours = sr_values(pydicom.dcmread(sr_path))
    assert seen["title"] == "Imaging Measurement Report"
    assert [(n["concept"], n["value"], n["unit"]) for n in seen["numbers"]] == [
        (concept, value, unit) for _, concept, value, unit in ours
    ]


def test_dcmjs_reads_the_models_that_did_not_run_as_one_item_per_status(
    tmp_path: Path, headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    _, sr_path = _written(tmp_path, headers, findings, context)
    summaries = [s for s in read_with_dcmjs("sr", sr_path)["statements"] if s["text"].startswith("Model run status: ")]
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
