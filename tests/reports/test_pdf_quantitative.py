"""The weight-free quantitative CT in the PDF, read back with poppler as a person would read it.

Page 1 must carry the headline numbers of both lungs with their reference points (Colombi's
cut-off, the zone-score range), the follow-up (prior value and change, or why none) and the
acquisition caveats; a later page the zone table.  Values are checked against the findings the
PDF was built from, formatted at the precision the report promises.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset

from models.findings import LOBE_NAMES, REGION_LABELS, ZONE_NAMES, ZONE_REGIONS, Findings, ModelRun, PriorAnalysis
from models.phantom import chest_phantom, write_ct_series
from models.pipeline import analyse
from models.qct.followup import with_followup
from models.qct.measurements import measure_region
from models.volume import PatientContext, load_series
from reports.identity import ReportContext
from reports.pdf import build_pdf
from tests.reports.helpers import have_poppler, pdf_page_text, pdf_pages

pytestmark = pytest.mark.skipif(not have_poppler(), reason="poppler-utils (pdftotext, pdfinfo) not installed")


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Findings, list[Dataset]]:
    phantom = chest_phantom((96, 128, 128), (2.5, 2.8, 2.8), consolidation=True)
    files = write_ct_series(
        phantom,
        None,
        tmp_path_factory.mktemp("series"),
        patient_id="P-QCT",
        patient_name="Quant^Pat",
        patient_age="050Y",
        patient_sex="O",
        slice_thickness=2.5,
    )
    findings = analyse(load_series(files), PatientContext(age_years=50.0, sex=None))
    return findings, [pydicom.dcmread(p, stop_before_pixels=True) for p in files]


def _pdf(tmp_path: Path, findings: Findings, headers: list[Dataset]) -> Path:
    path = tmp_path / "report.pdf"
    path.write_bytes(build_pdf(findings, headers, ReportContext(software_version="1.0", station_name="LUNGCDS")))
    return path


def _prior(findings: Findings, **changed: float) -> PriorAnalysis:
    headline = findings.headline()
    assert headline is not None and findings.acquisition is not None
    return PriorAnalysis(
        study_instance_uid="1.2.826.0.1.3680043.8.498.900",
        series_instance_uid="1.2.826.0.1.3680043.8.498.901",
        study_date="20250101",
        headline={**headline, **changed},
        acquisition=findings.acquisition.as_dict(),
        accession_number="ACC-PRIOR",
    )


def test_page_one_has_the_headline_with_its_reference_points(
    tmp_path: Path, analysed: tuple[Findings, list[Dataset]]
) -> None:
    findings, headers = analysed
    findings = with_followup(findings, None, study_date=None)
    d, lungs = findings.densitometry, findings.measurements["lungs"]
    assert d is not None and d.well_aerated_pct is not None and lungs.mass_g is not None
    page = pdf_page_text(_pdf(tmp_path, findings, headers), 1)
    assert f"Lung volume {lungs.volume_ml:.0f} mL" in page
    assert f"Well-aerated lung (-950 to -700 HU) {d.well_aerated_pct:.1f} %" in page
    side = "below" if d.well_aerated_pct < 71 else "not below"
    assert f"{side} the 71 % cut-off of Colombi et al. 2020" in page
    assert "odds ratio 3.8" in page and "not a diagnosis or a prognosis for this patient" in page
    assert f"Weight-free density-based zone score {d.zone_score_total} / 30" in page
    assert "not the CT severity score" in page
    for zone in ZONE_NAMES:
        assert f"{REGION_LABELS[zone]} {d.zone_scores[zone].score}" in page, zone
    assert f"Lung mass {lungs.mass_g:.0f} g" in page
    assert "weight-free method" in page
    assert findings.acquisition is not None and findings.acquisition.caveats
    for caveat in findings.acquisition.caveats:
        assert " ".join(caveat.split()[:8]) in page, caveat
    assert "no comparison: offline analysis: no history of this patient to compare with" in page


def test_a_comparable_prior_gives_prior_values_and_changes_on_page_one(
    tmp_path: Path, analysed: tuple[Findings, list[Dataset]]
) -> None:
    findings, headers = analysed
    d = findings.densitometry
    assert d is not None and d.well_aerated_pct is not None
    prior = _prior(findings, well_aerated_pct=d.well_aerated_pct + 12.34, lung_volume_ml=4000.0)
    followup = with_followup(findings, [prior], study_date="20250301")
    assert followup.followup is not None and followup.followup.comparable
    page = pdf_page_text(_pdf(tmp_path, followup, headers), 1)
    assert "Prior" in page and "(2025-01-01)" in page and "Change" in page
    lungs = findings.measurements["lungs"]
    delta = lungs.volume_ml - 4000.0
    assert f"Lung volume {lungs.volume_ml:.0f} mL 4000 mL {delta:+.0f} mL" in page
    assert f"{d.well_aerated_pct:.1f} % {d.well_aerated_pct + 12.34:.1f} % -12.3" in page
    assert "-12.3 %-points" in page
    assert "59 days earlier, accession ACC-PRIOR" in page
    assert "Caveat: lung volume changed by" in page  # > 10 %: the inspiration caveat


def test_an_incomparable_prior_is_named_with_the_reason(
    tmp_path: Path, analysed: tuple[Findings, list[Dataset]]
) -> None:
    findings, headers = analysed
    prior = dataclasses.replace(_prior(findings), acquisition={"slice_thickness_mm": 5.0, "sharp_kernel": None})
    page = pdf_page_text(_pdf(tmp_path, with_followup(findings, [prior], study_date="20250301"), headers), 1)
    assert "Follow-up: no comparison (latest prior: study of 2025-01-01)" in page
    assert "slice thickness 5 mm then and 2.5 mm now differ by more than 1 mm" in page
    assert "Prior (" not in page


def test_the_zone_table_lists_every_zone_region_with_its_bands(
    tmp_path: Path, analysed: tuple[Findings, list[Dataset]]
) -> None:
    findings, headers = analysed
    path = _pdf(tmp_path, findings, headers)
    text = " ".join(pdf_page_text(path, page) for page in range(2, pdf_pages(path) + 1))
    d = findings.densitometry
    assert d is not None
    assert "Zones, core and rind" in text
    for name in ZONE_REGIONS:
        m = d.regions[name]
        bands = " ".join(f"{m.density_bands[b].pct:.1f}" for b in ("emphysema", "well_aerated", "poorly_aerated"))
        assert f"{m.volume_ml:.0f} {bands}" in text, name
        assert REGION_LABELS[name].split(" (")[0] in text, name
    assert f"Zone score, total {d.zone_score_total} / 30" in text
    assert d.methods["zones"][:60] in text


def test_lobes_of_a_learned_mask_get_their_bands_under_its_provenance(
    tmp_path: Path, analysed: tuple[Findings, list[Dataset]]
) -> None:
    findings, headers = analysed
    phantom = chest_phantom((96, 128, 128), (2.5, 2.8, 2.8), consolidation=True)
    lobes = {name: phantom.lobes[name] for name in LOBE_NAMES}
    run = ModelRun("lobes", "ran", "generated weights", "2.0", "generated_weights")
    with_lobes = dataclasses.replace(
        findings,
        masks={**findings.masks, **lobes},
        mask_sources={**findings.mask_sources, **dict.fromkeys(lobes, "lobes")},
        models={**findings.models, "lobes": run},
        measurements={
            **findings.measurements,
            **{n: measure_region(findings.volume.hu, m, findings.volume.geometry, n) for n, m in lobes.items()},
        },
    )
    path = _pdf(tmp_path, with_lobes, headers)
    text = " ".join(pdf_page_text(path, page) for page in range(1, pdf_pages(path) + 1))
    assert f"Density bands per lobe (learned lobe mask: model lobes, version 2.0, {run.provenance_words})" in text
    assert run.unvalidated_statement is not None and run.unvalidated_statement[:40] in text
    for name in LOBE_NAMES:
        m = with_lobes.measurements[name]
        bands = " ".join(f"{m.density_bands[b].pct:.1f}" for b in ("emphysema", "well_aerated", "poorly_aerated"))
        assert f"{m.volume_ml:.0f} {bands}" in text, name
