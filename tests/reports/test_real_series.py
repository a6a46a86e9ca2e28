"""The shared 64-slice chest CT end to end: full-featured SR, SEG and PDF, and the not-analysable set.

Findings carry lobes, lesions (with ground-glass and consolidation), severity, CO-RADS,
STOIC2021 and I3Dr filled by hand, with the lobe, lesion, CO-RADS and I3Dr models on generated
(demo) weights.  Objects are built once per module; the page-1 render of the PDF goes to
``$LUNGCDS_RENDER_DIR`` when set (for a human to look at), else to a temporary folder.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset

from models.findings import REGION_NAMES
from reports import codes
from reports.bundle import (
    KOS_FILE,
    PDF_DICOM_FILE,
    PDF_FILE,
    SC_FILE,
    SEG_FILE,
    SEG_FILES,
    SEG_LESIONS_FILE,
    SEG_LOBES_FILE,
    SR_FILE,
    ReportSet,
    build_not_analysable,
    build_reports,
)
from reports.identity import ReportContext
from reports.pdf_layout import region_label
from reports.seg import layer_segments, segment_label
from tests.reports.helpers import (
    MEASUREMENT_CONCEPTS,
    RealSeries,
    Validation,
    expected_values,
    pdf_page_text,
    pdf_pages,
    render_dir,
    render_page,
    sr_codes,
    sr_values,
)

DICOM_FILES = (SR_FILE, SEG_FILE, SEG_LOBES_FILE, SEG_LESIONS_FILE, PDF_DICOM_FILE, SC_FILE, KOS_FILE)
#: Bytes of the one uncompressed SEG with all 9 segments (269 frames) that this series had before
#: the layers and JPEG 2000 (issue 17 part 3): the SEGs must stay far below it.
UNCOMPRESSED_SEG_BYTES = 8_959_144


@dataclass(frozen=True)
class Built:
    """The report set of the real series, where it was written and how long it took."""

    reports: ReportSet
    out_dir: Path
    seconds: float


@pytest.fixture(scope="module")
def built(real: RealSeries, tmp_path_factory: pytest.TempPathFactory) -> Built:
    context = ReportContext(software_version="0.1.0", institution_name="Test Hospital")
    start = time.perf_counter()
    reports = build_reports(real.findings, real.headers, context, ["slice thickness 5.0 mm accepted by a relaxed rule"])
    seconds = time.perf_counter() - start
    out_dir = tmp_path_factory.mktemp("real")
    reports.write(out_dir)
    return Built(reports, out_dir, seconds)


def test_dciodvfy_accepts_every_object(built: Built, dciodvfy: Callable[[Path], Validation]) -> None:
    sizes = {name: (built.out_dir / name).stat().st_size for name in (*DICOM_FILES, PDF_FILE)}
    print(f"\nreal series: built in {built.seconds:.2f} s; sizes {sizes}")
    assert built.seconds < 60
    for name in DICOM_FILES:
        result = dciodvfy(built.out_dir / name)
        print(f"dciodvfy {name}: {len(result.errors)} error(s), {len(result.warnings)} warning(s)")
        print("\n".join(f"  {line}" for line in sorted(set(result.warnings))))
        assert not result.errors, "\n".join(result.errors)


def test_sr_carries_every_number_of_result_json(built: Built, real: RealSeries) -> None:
    sr = hd.sr.srread(built.out_dir / SR_FILE)
    assert isinstance(sr.content, hd.sr.MeasurementReport)
    report = hd.sr.MeasurementReport.from_sequence([pydicom.dcmread(built.out_dir / SR_FILE)])
    volumetric = {str(g.tracking_identifier) for g in report.get_volumetric_roi_measurement_groups()}
    assert volumetric == set(REGION_NAMES) - {"lungs"}  # both lungs measured without a segment of their own
    others = {str(g.tracking_identifier) for g in report.get_image_measurement_groups()}
    ran = {f"model {name}" for name, run in real.findings.models.items() if run.status == "ran"}
    assert others == ran | {"model severity", "lungs"}
    found = sr_values(sr)
    expected = expected_values(real.findings.as_dict())
    assert len(expected) == 8 * len(MEASUREMENT_CONCEPTS) + 6 * 7 + 5 * 2 + 1 + 1 + 2
    for region, concept, value, unit in expected:
        matches = [f for f in found if f[:2] == (region, concept)]
        assert len(matches) == 1, (region, concept, matches)
        assert matches[0][2] == pytest.approx(value, rel=1e-12, abs=1e-12), (region, concept)
        assert matches[0][3] == unit, (region, concept)
    assert len(found) == len(expected)
    assert ("CORADSCAT", "CORADS5") in sr_codes(sr, "model corads")
    assert ("CTSSCATEGORY", codes.SEVERITY_CATEGORY_VALUES["mild"].value) in sr_codes(sr, "lungs")
    assert len(sr.get_evidence(current_procedure_only=True)) == len(real.headers) + len(SEG_FILES)
    assert "ReferencedStudySequence" not in sr


def test_segs_one_per_layer_without_overlap_and_small(built: Built, real: RealSeries) -> None:
    layers = layer_segments(real.findings)
    assert layers == {
        "lungs": ("lung_left", "lung_right"),  # "lungs" is their union: painted once, not twice
        "lobes": ("LUL", "LLL", "RUL", "RML", "RLL"),
        "lesions": ("ggo", "consolidation"),  # "lesions" is their union
    }
    masks = real.findings.masks
    index = {uid: k for k, uid in enumerate(real.findings.volume.source_sop_instance_uids)}
    sizes = {}
    for layer, names in layers.items():
        path = built.out_dir / SEG_FILES[layer]
        seg = pydicom.dcmread(path)
        assert [str(item.TrackingID) for item in seg.SegmentSequence] == list(names)
        assert [str(item.SegmentLabel) for item in seg.SegmentSequence] == [segment_label(name) for name in names]
        expected_frames = sum(int(masks[name].any(axis=(1, 2)).sum()) for name in names)
        assert int(seg.NumberOfFrames) == expected_frames < len(names) * len(real.headers)
        pixels = seg.pixel_array.reshape((int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns)))
        owners = np.zeros(masks["lungs"].shape, dtype=int)
        for frame, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
            number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            k = index[str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)]
            assert np.array_equal(pixels[frame].astype(bool), masks[names[number - 1]][k])
            owners[k] += pixels[frame]
        assert int(owners.max()) == 1, f"a voxel in two segments of the {layer} SEG"
        sizes[path.name] = path.stat().st_size
        print(f"\nSEG {path.name}: {len(names)} segments, {expected_frames} frames, {sizes[path.name]} bytes")
    print(f"SEGs together: {sum(sizes.values())} bytes; one uncompressed SEG before: {UNCOMPRESSED_SEG_BYTES} bytes")
    assert sum(sizes.values()) < UNCOMPRESSED_SEG_BYTES / 10


def test_pdf_shows_measurements_and_banner_on_every_page(built: Built, real: RealSeries, poppler: None) -> None:
    path = built.out_dir / PDF_FILE
    pages = pdf_pages(path)
    texts = [pdf_page_text(path, page) for page in range(1, pages + 1)]
    for number, text in enumerate(texts, start=1):
        assert codes.UNVALIDATED_BANNER in text, f"page {number} lacks the banner"
    text = " ".join(texts)
    for name in REGION_NAMES:
        m = real.findings.measurements[name]
        assert m.fpv_ml is not None and m.laa950_pct is not None and m.perc15_hu is not None
        assert m.mean_hu is not None and m.haa_pct is not None
        values = (m.volume_ml, m.fpv_ml, m.laa950_pct, m.perc15_hu, m.mean_hu, m.haa_pct)
        row = " ".join([region_label(name)] + [f"{v:.{d}f}" for v, d in zip(values, (1, 1, 1, 0, 0, 1), strict=True)])
        assert row in text, row
    i3dr = real.findings.i3dr
    assert i3dr is not None
    assert "patient 5.60 4.40 2.71 2.86 3.92 4.05 21.4" in text
    assert "category 5 (score 0.93)" in text
    assert "Volumes and spirometry (L)" in text and "Patient-level estimate" in text
    assert "Lung_Dx-A0001" in texts[0] and "Quantitative CT of both lungs" in texts[0] and "Results" in texts[0]
    assert "Key images" in texts[0] + texts[1]
    png = render_page(path, 1, render_dir(built.out_dir))
    print(f"\npage 1 of {pages} rendered to {png}")
    assert png.stat().st_size > 50_000


def test_same_job_same_uids_new_version_new_uids(built: Built, real: RealSeries) -> None:
    context = ReportContext(software_version="9.9", institution_name="Elsewhere")
    notes = ["slice thickness 5.0 mm accepted by a relaxed rule"]
    again = build_reports(real.findings, list(reversed(real.headers)), context, notes)
    newer = build_reports(dataclasses.replace(real.findings, pipeline_version="0.2.0"), real.headers, context)
    first = built.reports
    assert list(first.segs) == list(again.segs) == list(newer.segs) == ["lungs", "lobes", "lesions"]
    pairs: list[tuple[Dataset, Dataset, Dataset]] = [
        (first.sr, again.sr, newer.sr),
        *((first.segs[layer], again.segs[layer], newer.segs[layer]) for layer in first.segs),
        (first.pdf_dicom, again.pdf_dicom, newer.pdf_dicom),
    ]
    for ours, repeat, other in pairs:
        assert ours.SOPInstanceUID == repeat.SOPInstanceUID and ours.SeriesInstanceUID == repeat.SeriesInstanceUID
        assert ours.SOPInstanceUID != other.SOPInstanceUID and ours.SeriesInstanceUID != other.SeriesInstanceUID
        assert ours.StudyInstanceUID == real.headers[0].StudyInstanceUID


def test_not_analysable_objects(
    tmp_path: Path, built: Built, real: RealSeries, dciodvfy: Callable[[Path], Validation], poppler: None
) -> None:
    context = ReportContext(software_version="0.1.0", institution_name="Test Hospital")
    reasons = ["the lungs are not covered: 20 mm of the apex are missing", "unreadable pixel data in 2 instances"]
    reports = build_not_analysable(real.headers, context, reasons, "0.1.0")
    reports.write(tmp_path)
    for name in (SR_FILE, PDF_DICOM_FILE):
        result = dciodvfy(tmp_path / name)
        print(f"\ndciodvfy not-analysable {name}: {len(result.errors)} error(s), {len(result.warnings)} warning(s)")
        assert not result.errors, "\n".join(result.errors)
    assert not any((tmp_path / name).exists() for name in SEG_FILES.values())
    assert pdf_pages(tmp_path / PDF_FILE) == 1
    text = pdf_page_text(tmp_path / PDF_FILE, 1)
    assert all(reason in text for reason in reasons)
    for kind in ("sr", "pdf_dicom"):
        ours, analysed = getattr(reports, kind), getattr(built.reports, kind)
        assert ours.SeriesInstanceUID != analysed.SeriesInstanceUID, "a different content has its own UIDs"
        assert ours.SOPInstanceUID != analysed.SOPInstanceUID, "a different content has its own UIDs"
