"""PDF: statements, results summary, tables, chart, banner on every page, fonts, not-analysable page."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import Dataset

from models.findings import UNVALIDATED_STATEMENTS, Findings, QualityAssessment
from reports import codes
from reports.identity import ReportContext
from reports.pdf import build_not_analysable_pdf, build_pdf
from tests.reports.helpers import SHA_VALID, pdf_page_text, pdf_pages, pdf_text, render_page


def _pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type /Page\b", pdf))


def _write(pdf: bytes, path: Path) -> Path:
    path.write_bytes(pdf)
    return path


def test_pdf_content(headers: list[Dataset], findings: Findings, context: ReportContext) -> None:
    pdf = build_pdf(findings, headers, context, ["slice thickness 2.5 mm is within 3.0 mm"], compress=False)
    assert pdf.startswith(b"%PDF-")
    text = pdf_text(pdf)
    assert codes.DECISION_SUPPORT_STATEMENT in text
    assert codes.SOFTWARE_STATEMENT in text
    assert "weight-free lung mask" in text
    for value in ("Doe, Jane", "SYN-0001", "1960-01-02", "2024-03-05", "ACC123", "Thorax 2.5 mm (series 3)"):
        assert value in text
    assert "slice thickness 2.5 mm is within 3.0 mm" in text
    assert "synthetic test data" in text
    lungs = findings.measurements["lungs"]
    assert lungs.fpv_ml is not None and lungs.laa950_pct is not None and lungs.perc15_hu is not None
    assert lungs.mean_hu is not None and lungs.haa_pct is not None
    row = (
        f"Lungs {lungs.volume_ml:.1f} {lungs.fpv_ml:.1f} {lungs.laa950_pct:.1f} {lungs.perc15_hu:.0f} "
        f"{lungs.mean_hu:.0f} {lungs.haa_pct:.1f}"
    )
    assert row in text
    assert "RML (Right middle lobe) 0.0 n/a n/a n/a n/a n/a" in text
    assert "RML (Right middle lobe): region is empty" in text
    not_run = (
        "Not run: CO-RADS: not installed at this site (no weights installed); STOIC2021: skipped (slices are 5 mm "
        "thick; STOIC2021 needs at most 3 mm); I3Dr: failed (RuntimeError: out of memory); CT severity score: not "
        "computed (needs lobe and lesion segmentations)."
    )
    assert not_run in text
    assert "not available" not in text, "a model that did not run has no row of its own"
    assert "UNVALIDATED" not in text
    assert "Left upper lobe" in text and "Lesion" in text


def test_outputs_versions_chart_and_banner_on_every_page(
    tmp_path: Path,
    headers: list[Dataset],
    make_findings: Callable[..., Findings],
    context: ReportContext,
    poppler: None,
) -> None:
    findings = make_findings(headers, outputs=True, unvalidated=True)
    path = _write(build_pdf(findings, headers, context), tmp_path / "report.pdf")
    pages = pdf_pages(path)
    assert pages >= 2
    texts = [pdf_page_text(path, page) for page in range(1, pages + 1)]
    for number, page in enumerate(texts, start=1):
        assert codes.UNVALIDATED_BANNER in page, f"no banner on page {number}"
    text = " ".join(texts)
    assert "category 4 (score 0.71)" in text
    assert "Model: corads, version 1.0, generated demonstration weights" in text
    stoic = f"Model: stoic, version 1.0, installed weights with a validation statement, weights SHA-256 {SHA_VALID}"
    assert stoic in text
    assert UNVALIDATED_STATEMENTS["generated_weights"] in text
    assert "method" not in text.replace("weight-free method", ""), "generated weights are never called a method"
    assert "probability of COVID-19 0.62" in text
    assert "2 / 25 (mild)" in text
    assert "Volumes and spirometry (L)" in text and "DLCO (mL/min/mmHg)" in text
    assert "Patient-level estimate" in text
    assert "UNVALIDATED (generated weights)" in texts[0]
    png = render_page(path, 1, tmp_path)
    assert png.stat().st_size > 10_000


def test_compressed_pdf_is_smaller(headers: list[Dataset], findings: Findings, context: ReportContext) -> None:
    plain = build_pdf(findings, headers, context, compress=False)
    packed = build_pdf(findings, headers, context)
    assert packed.startswith(b"%PDF-") and len(packed) < len(plain)


def test_quality_gate_box(headers: list[Dataset], findings: Findings, context: ReportContext) -> None:
    failed = dataclasses.replace(findings, quality=QualityAssessment(False, ("lung volume 0.4 L is outside 1-10 L",)))
    text = pdf_text(build_pdf(failed, headers, context, compress=False))
    assert "Lung mask quality check failed" in text
    assert "lung volume 0.4 L is outside 1-10 L" in text
    assert "quality check failed" not in pdf_text(build_pdf(findings, headers, context, compress=False))


@pytest.mark.parametrize(
    ("name", "font"),
    [
        ("Παπαδόπουλος^Γιώργος", rb"/BaseFont /[A-Z]{6}\+\w+"),
        ("Yamada^Tarou=山田^太郎=やまだ^たろう", rb"/BaseFont /HeiseiKakuGo-W5"),
        ("김^민준", rb"/BaseFont /HYGothic-Medium"),
    ],
)
def test_non_latin_names(
    make_headers: Callable[..., list[Dataset]],
    make_findings: Callable[..., Findings],
    context: ReportContext,
    name: str,
    font: bytes,
) -> None:
    headers = make_headers(patient_name=name, charset="ISO_IR 192")
    pdf = build_pdf(make_findings(headers), headers, context, compress=False)
    assert pdf.startswith(b"%PDF-")
    assert re.search(font, pdf), "the name needs a font beyond WinAnsi"
    assert "shown transliterated" not in pdf_text(pdf)


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("Müller^Jürgen", "Müller, Jürgen"),
        ("Łukasiewicz^Zoë", "Łukasiewicz, Zoë"),
        ("Þórsdóttir^Ása", "Þórsdóttir, Ása"),
    ],
)
def test_accented_names_read_back(
    tmp_path: Path,
    make_headers: Callable[..., list[Dataset]],
    make_findings: Callable[..., Findings],
    context: ReportContext,
    poppler: None,
    name: str,
    shown: str,
) -> None:
    headers = make_headers(patient_name=name, charset="ISO_IR 192")
    path = _write(build_pdf(make_findings(headers, lobes=False, lesion=False), headers, context), tmp_path / "r.pdf")
    assert shown in pdf_page_text(path, 1)


def test_unprintable_characters_are_transliterated(
    make_headers: Callable[..., list[Dataset]], make_findings: Callable[..., Findings], context: ReportContext
) -> None:
    headers = make_headers(patient_name="\u1218\u1295^Test\u0301e", charset="ISO_IR 192")
    pdf = build_pdf(make_findings(headers), headers, context, ["reason with \u1218 glyph"], compress=False)
    text = pdf_text(pdf)
    assert "shown transliterated" in text
    assert "reason with ? glyph" in text
    assert "??, Test" in text


def test_not_analysable_pdf(tmp_path: Path, headers: list[Dataset], context: ReportContext, poppler: None) -> None:
    reasons = ["only 12 slices; at least 40 are needed", "lungs not covered: the apex is missing"]
    path = _write(build_not_analysable_pdf(headers, context, reasons, "0.1.0"), tmp_path / "na.pdf")
    assert pdf_pages(path) == 1
    text = pdf_page_text(path, 1)
    assert "Series not analysable: no results" in text
    for reason in reasons:
        assert reason in text
    assert "Doe, Jane" in text and "SYN-0001" in text
    assert "pipeline 0.1.0" in text
    assert f"{len(headers)} image(s) of this series were received" in text
    assert "UNVALIDATED" not in text
    with pytest.raises(ValueError, match="blank"):
        build_not_analysable_pdf(headers, context, [" "], "0.1.0")
