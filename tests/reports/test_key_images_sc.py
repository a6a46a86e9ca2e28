"""The key-image Secondary Capture and the Key Object Selection flagging it (issue 17, part 4)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.uid import SecondaryCaptureImageStorage

from models.findings import Findings
from reports.bundle import KOS_FILE, SC_FILE, build_not_analysable, build_reports
from reports.identity import ReportContext, banner_text
from reports.key_image_sc import (
    SC_SERIES_DESCRIPTION,
    SC_UNVALIDATED_SERIES_DESCRIPTION,
    key_image_lines,
    not_analysed_lines,
)
from reports.keyimages import render_key_images
from tests.reports.helpers import Validation

RED_TEXT = (255, 90, 90)


def _texts(findings: Findings) -> list[str]:
    return [line.text for line in key_image_lines(findings)]


def _has_colour(pixels: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool(np.all(pixels == np.array(colour, dtype=np.uint8), axis=-1).any())


def test_the_picture_states_the_headline_numbers_at_report_precision(
    headers: list[Dataset], make_findings: Callable[..., Findings]
) -> None:
    findings = make_findings(headers)
    lungs = findings.measurements["lungs"]
    texts = _texts(findings)
    assert texts[0] == "lungcds chest CT analysis: decision support, not a diagnosis"
    assert f"Lung volume: {lungs.volume_ml:.0f} mL" in texts
    assert lungs.laa950_pct is not None and lungs.perc15_hu is not None
    assert f"Low attenuation below -950 HU (LAA-950): {lungs.laa950_pct:.1f} %" in texts
    assert f"15th percentile of attenuation (Perc15): {lungs.perc15_hu:.0f} HU" in texts
    run = findings.mask_run("lungs")
    assert run is not None and any(run.provenance_words in text for text in texts)


def test_an_unvalidated_analysis_says_so_in_red_in_the_pixels_and_the_series_description(
    headers: list[Dataset], make_findings: Callable[..., Findings], context: ReportContext
) -> None:
    unvalidated = make_findings(headers, outputs=True, unvalidated=True)
    validated = make_findings(headers, outputs=True)
    banner = banner_text(unvalidated)
    assert banner is not None and banner_text(validated) is None
    assert banner in _texts(unvalidated)
    red = build_reports(unvalidated, headers, context).sc
    plain = build_reports(validated, headers, context).sc
    assert red.SeriesDescription == SC_UNVALIDATED_SERIES_DESCRIPTION
    assert plain.SeriesDescription == SC_SERIES_DESCRIPTION
    assert _has_colour(red.pixel_array, RED_TEXT) and not _has_colour(plain.pixel_array, RED_TEXT)


def test_the_picture_holds_every_key_image_of_the_pdf_with_its_colour_key(
    headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    sc = build_reports(findings, headers, context).sc
    pixels = sc.pixel_array
    assert sc.SOPClassUID == SecondaryCaptureImageStorage
    assert sc.PhotometricInterpretation == "RGB" and pixels.shape == (sc.Rows, sc.Columns, 3)
    assert sc.BurnedInAnnotation == "YES" and sc.ImageType[:2] == ["DERIVED", "SECONDARY"]
    key_images = render_key_images(findings)
    assert key_images
    for key in key_images:
        for label, colour in key.legend:
            assert _has_colour(pixels, colour), f"the swatch of {label}"
    axial = {findings.volume.source_sop_instance_uids[k.index] for k in key_images if k.plane == "axial"}
    assert axial and {ref.ReferencedSOPInstanceUID for ref in sc.SourceImageSequence} == axial


def test_the_key_object_selection_flags_the_picture_and_the_slices_it_shows(
    tmp_path: Path,
    headers: list[Dataset],
    make_findings: Callable[..., Findings],
    context: ReportContext,
    dciodvfy: Callable[[Path], Validation],
) -> None:
    findings = make_findings(headers, outputs=True, unvalidated=True)
    reports = build_reports(findings, headers, context)
    reports.write(tmp_path)
    kos = pydicom.dcmread(tmp_path / KOS_FILE)
    sc = pydicom.dcmread(tmp_path / SC_FILE)
    assert kos.Modality == "KO"
    title = kos.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator) == ("113000", "DCM")
    images = [item for item in kos.ContentSequence if item.ValueType == "IMAGE"]
    referenced = {item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for item in images}
    slices = {ref.ReferencedSOPInstanceUID for ref in sc.SourceImageSequence}
    assert referenced == {sc.SOPInstanceUID} | slices
    texts = [item.TextValue for item in kos.ContentSequence if item.ValueType == "TEXT"]
    banner = banner_text(findings)
    assert banner is not None and any(banner in text for text in texts)
    evidence = {s.SeriesInstanceUID for s in kos.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence}
    assert evidence == {sc.SeriesInstanceUID, headers[0].SeriesInstanceUID}
    for name in (SC_FILE, KOS_FILE):
        result = dciodvfy(tmp_path / name)
        assert not result.errors, "\n".join(result.errors)


def test_a_series_not_analysed_gets_a_picture_of_its_reasons_and_no_selection(
    headers: list[Dataset], context: ReportContext
) -> None:
    reasons = ["slice thickness 5.0 mm is above the 3.0 mm limit", "only 10 slices; at least 40 are needed"]
    texts = [line.text for line in not_analysed_lines(reasons)]
    assert texts[0].startswith("NOT ANALYSED")
    assert [f"- {reason}" for reason in reasons] == [t for t in texts if t.startswith("- ")]
    reports = build_not_analysable(headers, context, reasons, "0.1.0")
    assert reports.kos is None
    assert reports.sc.StudyInstanceUID == headers[0].StudyInstanceUID
    assert reports.sc.pixel_array.shape[1] == 1024


def test_learned_results_carry_their_model_and_provenance_and_unvalidated_ones_are_red(
    headers: list[Dataset], make_findings: Callable[..., Findings]
) -> None:
    validated = {line.text: line.colour for line in key_image_lines(make_findings(headers, outputs=True))}
    unvalidated = {
        line.text: line.colour for line in key_image_lines(make_findings(headers, outputs=True, unvalidated=True))
    }
    corads = next(text for text in validated if text.startswith("CO-RADS: category"))
    assert "(corads 1.0; validated weights)" in corads and validated[corads] != RED_TEXT
    red = next(text for text in unvalidated if text.startswith("CO-RADS: category"))
    assert "UNVALIDATED, generated weights" in red and unvalidated[red] == RED_TEXT
    assert any(text.startswith("CT severity score: ") for text in validated)
    assert any(text.startswith("Lung function (I3Dr): FEV1") for text in validated)
    assert not any(text.startswith("Not run") for text in validated)


def test_models_that_did_not_run_are_named_so_silence_is_not_read_as_nothing_found(
    headers: list[Dataset], make_findings: Callable[..., Findings]
) -> None:
    findings = make_findings(headers)
    not_run = [run.name for run in findings.models.values() if run.status != "ran"]
    assert not_run == ["corads", "stoic", "i3dr"]
    texts = _texts(findings)
    assert "Not run at this site or for this series: CO-RADS, STOIC2021, I3Dr." in texts
    assert not any(text.startswith(("CO-RADS:", "Probability of")) for text in texts)
