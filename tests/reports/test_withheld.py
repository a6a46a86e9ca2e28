"""Provenance and withheld values in the SR and PDF: learned masks apart, impossible numbers only as reasons."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import Dataset

from models.findings import UNVALIDATED_STATEMENTS, Findings, RegionMeasurements
from models.plausibility import withhold_implausible
from reports import codes
from reports.identity import ReportContext
from reports.pdf import build_pdf
from reports.sr import build_sr
from tests.reports.helpers import pdf_page_text, pdf_pages, sr_texts, sr_values

GENERATED = UNVALIDATED_STATEMENTS["generated_weights"]


def _pdf(findings: Findings, headers: list[Dataset], context: ReportContext, path: Path) -> str:
    path.write_bytes(build_pdf(findings, headers, context))
    return " ".join(pdf_page_text(path, page) for page in range(1, pdf_pages(path) + 1))


@pytest.fixture()
def implausible(headers: list[Dataset], make_findings: Callable[..., Findings]) -> Findings:
    """Generated weights that give FEV1 -0.90 L, DLCO -0.2 and a 0.3 mL lobe, through the gate."""
    findings = make_findings(headers, outputs=True, unvalidated=True)
    assert findings.i3dr is not None
    patient = {**findings.i3dr.patient, "fev1_pre_l": -0.90, "dlco": -0.2}
    tiny = RegionMeasurements("RUL", 1, 0.3, 0.2, 0.0, -900.0, -880.0, 1.0)
    return withhold_implausible(
        dataclasses.replace(
            findings,
            i3dr=dataclasses.replace(findings.i3dr, patient=patient),
            measurements={**findings.measurements, "RUL": tiny},
        )
    )


def test_the_sr_says_why_and_reports_no_impossible_number(
    tmp_path: Path, headers: list[Dataset], implausible: Findings, context: ReportContext
) -> None:
    path = tmp_path / "sr.dcm"
    build_sr(implausible, headers, context).save_as(path, enforce_file_format=True)
    sr = hd.sr.srread(path)
    values = sr_values(sr)
    assert not [v for v in values if v[2] in (-0.90, -0.2, 0.3)], "no withheld number is in the SR"
    assert not [v for v in values if v[0] == "RUL" and v[1] == codes.VOLUME.value]
    withheld = codes.VALUE_WITHHELD.value
    rul = [text for concept, text in sr_texts(sr, "RUL") if concept == withheld]
    assert rul == [
        "withheld: Right upper lobe 0.3 mL is below the plausible minimum of 50 mL for a lobe (mask by model lobes)"
    ]
    lungs = [text for concept, text in sr_texts(sr, "lungs") if concept == withheld]
    assert (
        "withheld: patient (model A) FEV1 pre-bronchodilator -0.90 L is not physiological (must be above 0 L)" in lungs
    )
    assert any(text.startswith("withheld: patient (model A) DLCO -0.20 mL/min/mmHg") for text in lungs)
    assert any(text.startswith("withheld: the score needs every lobe mask") for text in lungs)
    i3dr = [text for concept, text in sr_texts(sr, "model i3dr") if concept == withheld]
    assert any(text.startswith("withheld: the lobar estimates depend on every lobe mask") for text in i3dr)


def test_the_pdf_says_why_and_shows_no_impossible_number(
    tmp_path: Path, headers: list[Dataset], implausible: Findings, context: ReportContext, poppler: None
) -> None:
    text = _pdf(implausible, headers, context, tmp_path / "report.pdf")
    for reason in (w.reason for w in implausible.withheld):
        assert " ".join(reason.split()) in text, reason
    assert "Site PV (L) FEV1 pre (L) FVC pre (L) DLCO (mL/min /mmHg) patient 5.10 withheld 3.80 withheld" in text
    assert "RUL (Right upper lobe) withheld: Right upper lobe 0.3 mL" in text


def test_learned_lobe_rows_sit_under_their_own_heading_with_unvalidated(
    tmp_path: Path,
    headers: list[Dataset],
    make_findings: Callable[..., Findings],
    context: ReportContext,
    poppler: None,
) -> None:
    text = _pdf(make_findings(headers, unvalidated=True), headers, context, tmp_path / "report.pdf")
    weight_free, learned = text.split("Measurements (weight-free lung mask)")[1].split(
        "Measurements on learned masks: "
    )
    assert "Lungs " in weight_free and not any(f" {lobe} " in weight_free for lobe in ("LUL", "LLL", "RUL", "RLL"))
    assert learned.startswith(f"model lobes (version 2.0), generated demonstration weights {GENERATED} Region")
    for lobe in ("LUL", "LLL", "RUL", "RML", "RLL"):
        assert f" {lobe} " in learned.split("Model outputs")[0].split("Models ")[0], lobe
    validated = _pdf(make_findings(headers), headers, context, tmp_path / "validated.pdf")
    heading = validated.split("Measurements on learned masks: ")[1]
    assert heading.startswith("model lobes (version 2.0), installed weights with a validation statement Region")
    assert "UNVALIDATED" not in validated
