"""PDF: statements, tables, banner on every page, non-Latin names."""

from __future__ import annotations

import re

import pytest

from reports import codes
from reports.pdf import build_pdf


def _pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type /Page\b", pdf))


def test_pdf_content(headers, findings, context, extract_pdf_text) -> None:
    pdf = build_pdf(findings, headers, context, ["slice thickness 2.5 mm is within 3.0 mm"], compress=False)
    assert pdf.startswith(b"%PDF-")
    text = extract_pdf_text(pdf)
    assert codes.DECISION_SUPPORT_STATEMENT in text
    assert "weight-free lung mask" in text
    for value in ("Doe, Jane", "SYN-0001", "1960-01-02", "2024-03-05", "ACC123", "Thorax 2.5 mm (series 3)"):
        assert value in text
    assert "slice thickness 2.5 mm is within 3.0 mm" in text
    assert "synthetic test data" in text
    lungs = findings.measurements["lungs"]
    row = (
        f"lungs {lungs.volume_ml:.1f} {lungs.fpv_ml:.1f} {lungs.laa950_pct:.1f} {lungs.perc15_hu:.0f} "
        f"{lungs.mean_hu:.0f} {lungs.haa_pct:.1f}"
    )
    assert row in text
    assert "RML 0.0 n/a n/a n/a n/a n/a" in text
    assert "RML: region is empty" in text
    assert "no weights installed" in text and "not installed" in text
    assert "RuntimeError: out of memory" in text
    assert "UNVALIDATED" not in text
    assert "Left upper lobe" in text and "Lesion" in text


def test_banner_on_every_page_for_unvalidated_outputs(headers, make_findings, context, extract_pdf_text) -> None:
    findings = make_findings(headers, outputs=True, unvalidated=True)
    pdf = build_pdf(findings, headers, context, compress=False)
    text = extract_pdf_text(pdf)
    pages = _pages(pdf)
    assert pages >= 2
    assert text.count("generated weights, not for clinical use") == pages
    assert text.count("UNVALIDATED \\227 generated weights") == pages
    assert codes.UNVALIDATED_WEIGHTS_STATEMENT in text
    assert codes.UNVALIDATED_NO_PROVENANCE_STATEMENT in text
    assert "category 4" in text
    assert "ababababababababababab" in text
    assert "probability of COVID-19 0.62" in text


def test_compressed_pdf_is_smaller(headers, findings, context) -> None:
    plain = build_pdf(findings, headers, context, compress=False)
    packed = build_pdf(findings, headers, context)
    assert packed.startswith(b"%PDF-") and len(packed) < len(plain)


@pytest.mark.parametrize(
    ("name", "font"),
    [
        ("Παπαδόπουλος^Γιώργος", rb"/BaseFont /[A-Z]{6}\+\w+"),
        ("Yamada^Tarou=山田^太郎=やまだ^たろう", rb"/BaseFont /HeiseiKakuGo-W5"),
        ("김^민준", rb"/BaseFont /HYGothic-Medium"),
    ],
)
def test_non_latin_names(make_headers, make_findings, context, extract_pdf_text, name: str, font: bytes) -> None:
    headers = make_headers(patient_name=name, charset="ISO_IR 192")
    pdf = build_pdf(make_findings(headers), headers, context, compress=False)
    assert pdf.startswith(b"%PDF-")
    assert re.search(font, pdf), "the name needs a font beyond WinAnsi"
    assert "shown transliterated" not in extract_pdf_text(pdf)


def test_unprintable_characters_are_transliterated(make_headers, make_findings, context, extract_pdf_text) -> None:
    headers = make_headers(patient_name="\u1218\u1295^Test\u0301e", charset="ISO_IR 192")
    pdf = build_pdf(make_findings(headers), headers, context, ["reason with \u1218 glyph"], compress=False)
    text = extract_pdf_text(pdf)
    assert "shown transliterated" in text
    assert "reason with ? glyph" in text
    assert "??, Test" in text
