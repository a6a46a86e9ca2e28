"""PDF pages a records office and a radiologist can rely on (issue 17): every page names the patient,
the study and "page x of y"; fonts embedded; models that did not run in one line; words, not identifiers."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import Dataset

from models.findings import LUNG_REGIONS, Findings, ModelRun
from reports import pdf_layout
from reports.identity import ReportContext
from reports.pdf import build_not_analysable_pdf, build_pdf
from tests.reports.helpers import LUNG_MASK_MODEL, pdf_page_text, pdf_pages, render_page

PDFFONTS = "pdffonts"
#: The reason the model registry gives a model without weights, command hint included.
NO_WEIGHTS = "no weights installed; install with `lungcds models install`"
STOIC_MEMBERS = ("stoic_code1055", "stoic_flyingbird")


def _write(pdf: bytes, path: Path) -> Path:
    path.write_bytes(pdf)
    return path


def _texts(path: Path) -> list[str]:
    return [pdf_page_text(path, page) for page in range(1, pdf_pages(path) + 1)]


def _site_without_weights(findings: Findings) -> Findings:
    """The models of a fresh install, as the registry records them: only the weight-free lung mask ran."""
    stoic_reason = f"no weights installed for any member of stoic_top3 ({', '.join(STOIC_MEMBERS)}); " + NO_WEIGHTS[22:]
    runs = [
        ModelRun(LUNG_MASK_MODEL, "ran", "classical, weight-free image processing", "0.1.0", "weight_free"),
        ModelRun("lobes", "not_installed", NO_WEIGHTS, "1.0.0"),
        ModelRun("lesions", "not_installed", NO_WEIGHTS, "1.0.0"),
        ModelRun("severity", "skipped", "not computed: no lobe and no lesion masks", "1.0.0"),
        ModelRun("corads", "not_installed", NO_WEIGHTS, "1.0.0"),
        ModelRun("stoic", "not_installed", stoic_reason, "1.0.0"),
        *(ModelRun(member, "not_installed", NO_WEIGHTS, "1.0.0") for member in STOIC_MEMBERS),
        ModelRun("i3dr", "not_installed", NO_WEIGHTS, "1.0.0"),
    ]
    return dataclasses.replace(findings, models={run.name: run for run in runs})


@pytest.fixture()
def fresh_site(
    tmp_path: Path, headers: list[Dataset], make_findings: Callable[..., Findings], context: ReportContext
) -> tuple[Path, Findings]:
    findings = _site_without_weights(make_findings(headers, lobes=False, lesion=False))
    return _write(build_pdf(findings, headers, context), tmp_path / "fresh.pdf"), findings


@pytest.mark.parametrize("variant", ["default", "all outputs, unvalidated", "not analysable"])
def test_every_page_names_patient_study_and_page_of_total(
    tmp_path: Path,
    headers: list[Dataset],
    make_findings: Callable[..., Findings],
    context: ReportContext,
    poppler: None,
    variant: str,
) -> None:
    if variant == "not analysable":
        pdf = build_not_analysable_pdf(headers, context, ["only 12 slices; at least 40 are needed"], "0.1.0")
    else:
        unvalidated = variant != "default"
        pdf = build_pdf(make_findings(headers, outputs=unvalidated, unvalidated=unvalidated), headers, context)
    path = _write(pdf, tmp_path / "report.pdf")
    texts = _texts(path)
    total = len(texts)
    assert total >= (1 if variant == "not analysable" else 3)
    for number, text in enumerate(texts, start=1):
        for value in ("Doe, Jane", "Patient ID SYN-0001", "study date 2024-03-05"):
            assert value in text, f"page {number} lacks {value!r}"
        assert re.findall(r"page (\d+) of (\d+)", text) == [(str(number), str(total))], f"page {number}"
        png = render_page(path, number, tmp_path)
        assert png.stat().st_size > 5_000, f"page {number} did not render"


def test_every_font_is_embedded_dejavu(
    tmp_path: Path,
    headers: list[Dataset],
    findings: Findings,
    make_findings: Callable[..., Findings],
    context: ReportContext,
) -> None:
    if shutil.which(PDFFONTS) is None:
        pytest.skip("pdffonts (poppler-utils) not installed")
    with_outputs = make_findings(headers, outputs=True)
    assert with_outputs.i3dr is not None  # its chart is a drawing with text of its own
    for name, pdf in (
        ("report.pdf", build_pdf(findings, headers, context)),
        ("outputs.pdf", build_pdf(with_outputs, headers, context)),
        ("na.pdf", build_not_analysable_pdf(headers, context, ["lungs not covered"], "0.1.0")),
    ):
        listing = subprocess.run(
            [PDFFONTS, str(_write(pdf, tmp_path / name))], check=True, capture_output=True, text=True, timeout=60
        ).stdout.splitlines()
        emb = listing[0].index("emb")
        fonts = {line.split()[0]: line[emb : emb + 3] for line in listing[2:]}
        assert fonts, listing
        assert all(embedded == "yes" for embedded in fonts.values()), listing
        assert all(re.fullmatch(r"[A-Z]{6}\+DejaVuSans(-Bold|Mono)?", font) for font in fonts), listing


def test_missing_dejavu_fails_naming_the_package(
    monkeypatch: pytest.MonkeyPatch, headers: list[Dataset], findings: Findings, context: ReportContext, tmp_path: Path
) -> None:
    monkeypatch.setattr(pdf_layout, "FONT_DIR", tmp_path)
    pdf_layout._fonts.cache_clear()
    try:
        with pytest.raises(pdf_layout.FontsMissing, match=r"install the package fonts-dejavu-core"):
            build_pdf(findings, headers, context)
    finally:
        pdf_layout._fonts.cache_clear()


def test_models_that_did_not_run_are_one_line_on_page_one(fresh_site: tuple[Path, Findings], poppler: None) -> None:
    path, _ = fresh_site
    texts = _texts(path)
    line = (
        "Not run: lobe segmentation, lesion segmentation, CO-RADS, STOIC2021, I3Dr: not installed at this site "
        "(no weights installed); CT severity score: skipped (not computed: no lobe and no lesion masks)."
    )
    assert line in texts[0]
    everything = " ".join(texts)
    assert everything.count("Not run") == 1
    assert "not available" not in everything, "no row of its own for a model that did not run"
    assert "`" not in everything and "lungcds models install" not in everything, "no command syntax"
    technical = texts[-1]
    assert "Technical details" in technical
    assert "model installation command of the lungcds command-line tool" in technical
    assert "Weights SHA-256" in technical and not any("Weights SHA-256" in text for text in texts[:-1])


def test_the_technical_page_keeps_model_identifiers_whole(fresh_site: tuple[Path, Findings], poppler: None) -> None:
    path, findings = fresh_site
    technical = _texts(path)[-1]
    for name in findings.models:
        assert re.search(rf"(^|[ (]){name}($|[ )])", technical), f"{name} is broken or missing"
    assert "stoic_top3 (stoic_code1055, stoic_flyingbird)" in technical, "the detailed reason stays here"


@pytest.mark.parametrize("variant", ["default", "fresh site"])
def test_regions_are_words_on_the_pages_a_radiologist_reads(
    tmp_path: Path,
    headers: list[Dataset],
    make_findings: Callable[..., Findings],
    context: ReportContext,
    poppler: None,
    variant: str,
) -> None:
    findings = make_findings(headers)
    if variant == "fresh site":
        findings = _site_without_weights(make_findings(headers, lobes=False, lesion=False))
    text = " ".join(_texts(_write(build_pdf(findings, headers, context), tmp_path / "report.pdf"))[:2])
    for words in ("Lungs", "Left lung", "Right lung"):
        assert f"{words} " in text, words
    if variant == "default":
        assert "LUL (Left upper lobe)" in text and "RML (Right middle lobe)" in text
    for region in (name for name in LUNG_REGIONS if "_" in name):  # "lungs" is also an English word
        assert region not in text, region
    identifiers = set(re.findall(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b", text))
    assert identifiers <= set(findings.models), f"identifiers a radiologist reads: {identifiers - set(findings.models)}"
