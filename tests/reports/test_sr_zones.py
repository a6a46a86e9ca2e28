"""TID 1500 SR of the weight-free zone densitometry, acquisition caveats and follow-up (issue 15).

Findings come from the pipeline on the chest phantom (weight-free lung mask, zones, bands, zone
score), built once per module; the emphysema detail is set by hand where the phantom has no
low-attenuation voxels.  Expected values are the findings' own numbers rounded to the precision
the SR promises (volumes 1 mL, percentages 0.1, HU 1, mass 1 g, ratio and D 0.01, scores whole).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from models.findings import (
    DENSITY_BANDS,
    HEADLINE_KEYS,
    ZONE_NAMES,
    ZONE_REGIONS,
    Findings,
    PriorAnalysis,
    RegionMeasurements,
    ZoneScore,
)
from models.phantom import chest_phantom
from models.pipeline import analyse
from models.qct.followup import with_followup
from models.volume import PatientContext
from reports import codes
from reports.identity import ReportContext
from reports.sr import FOLLOWUP_TRACKING_IDENTIFIER, SUMMARY_TRACKING_IDENTIFIER, build_sr
from tests.reports.helpers import Validation, algorithm_of, ct_headers, report_statements, sr_codes, sr_texts

STUDY_DATE = "20240305"
#: Expected finding site of each zone region: (anatomic location, laterality, topographical modifier).
ZONE_SITE_VALUES: dict[str, tuple[str, str | None, str | None]] = {
    "RU": ("281392002", "24028007", None),
    "RM": ("281393007", "24028007", None),
    "RL": ("281394001", "24028007", None),
    "LU": ("281392002", "7771000", None),
    "LM": ("281393007", "7771000", None),
    "LL": ("281394001", "7771000", None),
    "core": ("39607008", None, "26216008"),
    "rind": ("39607008", None, "14414005"),
}
#: (attribute of RegionMeasurements, concept, derivation, decimals) of the rounded zone measurements.
ZONE_MEASUREMENTS: tuple[tuple[str, Code, Code | None, int], ...] = (
    ("volume_ml", codes.VOLUME, None, 0),
    ("fpv_ml", codes.FUNCTIONAL_LUNG_VOLUME, None, 0),
    ("laa950_pct", codes.LOW_ATTENUATION_AREA_950, None, 1),
    ("perc15_hu", codes.PERCENTILE_15_ATTENUATION, None, 0),
    ("mean_hu", codes.ATTENUATION_COEFFICIENT, codes.MEAN, 0),
    ("haa_pct", codes.HIGH_ATTENUATION_AREA, None, 1),
)
HEADLINE_DIGITS = {
    "lung_volume_ml": 0,
    "well_aerated_pct": 1,
    "zone_score_total": 0,
    "laa950_pct": 1,
    "perc15_hu": 0,
    "lung_mass_g": 0,
}
ZONE_SCORE_CONCEPTS = {
    codes.ZONE_SCORE.value,
    codes.ZONE_SCORE_TOTAL.value,
    codes.FOLLOWUP_CHANGE_CODES["zone_score_total"].value,
}
WEIGHT_FREE_GROUPS = (*ZONE_REGIONS, SUMMARY_TRACKING_IDENTIFIER, FOLLOWUP_TRACKING_IDENTIFIER)


@dataclass(frozen=True)
class Case:
    """Pipeline findings of the phantom, its source headers, and two follow-up variants."""

    findings: Findings
    headers: list[Dataset]
    prior: PriorAnalysis
    comparable: Findings
    not_comparable: Findings


@dataclass(frozen=True)
class Built:
    """The SR of the comparable follow-up, as written to disk and read back."""

    path: Path
    sr: hd.sr.Comprehensive3DSR
    groups: dict[str, hd.sr.MeasurementsAndQualitativeEvaluations]


@contextmanager
def _strict() -> Iterator[None]:
    """pydicom's strict value validation, as the function-scoped ``strict_pydicom`` fixture sets it,
    for objects built in module-scoped fixtures (which run before that fixture)."""
    settings = pydicom.config.settings
    saved = (settings.reading_validation_mode, settings.writing_validation_mode)
    settings.reading_validation_mode = pydicom.config.RAISE
    settings.writing_validation_mode = pydicom.config.RAISE
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = saved


def _headers_for(findings: Findings) -> list[Dataset]:
    """Synthetic CT headers whose SOP Instance UIDs are the volume's slices."""
    g = findings.volume.geometry
    headers = ct_headers(g.shape, g.spacing, g.origin)
    for k, header in enumerate(reversed(headers)):  # ct_headers lists descending z; volume index k is ascending
        header.SOPInstanceUID = findings.volume.source_sop_instance_uids[k]
        header.file_meta.MediaStorageSOPInstanceUID = header.SOPInstanceUID
    return headers


def _prior(findings: Findings, *, slice_thickness_mm: float, with_sr: bool = True) -> PriorAnalysis:
    """A hand-made prior analysis of another study, 64 days earlier, with a headline that differs."""
    headline = findings.headline()
    assert headline is not None and findings.acquisition is not None
    then = {
        "lung_volume_ml": (headline["lung_volume_ml"] or 0.0) - 123.456,
        "well_aerated_pct": (headline["well_aerated_pct"] or 0.0) + 4.3456,
        "zone_score_total": (headline["zone_score_total"] or 0) + 3,
        "laa950_pct": 1.2549,
        "perc15_hu": (headline["perc15_hu"] or 0.0) - 12.6,
        "lung_mass_g": None,  # an older analysis without the mass: its change does not exist
    }
    return PriorAnalysis(
        study_instance_uid=generate_uid(),
        series_instance_uid=generate_uid(),
        study_date="20240101",
        headline=then,
        acquisition={**findings.acquisition.as_dict(), "slice_thickness_mm": slice_thickness_mm},
        sr_sop_instance_uid=generate_uid() if with_sr else None,
        sr_series_instance_uid=generate_uid() if with_sr else None,
        accession_number="ACC0001",
    )


@pytest.fixture(scope="module")
def case() -> Case:
    phantom = chest_phantom((38, 192, 192), (8.0, 2.0, 2.0), consolidation=True)
    volume = dataclasses.replace(phantom.volume(), slice_thickness_mm=8.0)
    findings = analyse(volume, PatientContext(age_years=50.0, sex=None))
    d = findings.densitometry
    assert d is not None
    emphysema = dataclasses.replace(
        d.emphysema,
        upper_lower_ratio=1.23456,
        cluster_exponent_d=1.87654,
        cluster_count=41,
        clusters_fitted=17,
        fit_range_ml=(0.064, 3.2),
    )
    findings = dataclasses.replace(findings, densitometry=dataclasses.replace(d, emphysema=emphysema))
    prior = _prior(findings, slice_thickness_mm=8.0)
    comparable = with_followup(findings, [prior], study_date=STUDY_DATE)
    assert comparable.followup is not None and comparable.followup.comparable
    other = _prior(findings, slice_thickness_mm=1.0, with_sr=False)
    not_comparable = with_followup(findings, [other], study_date=STUDY_DATE)
    assert not_comparable.followup is not None and not not_comparable.followup.comparable
    return Case(findings, _headers_for(findings), prior, comparable, not_comparable)


def _groups(sr: Dataset) -> dict[str, hd.sr.MeasurementsAndQualitativeEvaluations]:
    """The measurement groups of an SR by tracking identifier (built or read back)."""
    report = hd.sr.MeasurementReport.from_sequence([sr])
    return {str(g.tracking_identifier): g for g in report.get_image_measurement_groups()}


@pytest.fixture(scope="module")
def built(case: Case, tmp_path_factory: pytest.TempPathFactory) -> Built:
    path = tmp_path_factory.mktemp("zones") / "sr.dcm"
    with _strict():
        context = ReportContext(software_version="0.1.0", institution_name="Test Hospital")
        build_sr(case.comparable, case.headers, context).save_as(path, enforce_file_format=True)
        sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    return Built(path, sr, _groups(sr))


def _value(group: hd.sr.MeasurementsAndQualitativeEvaluations, concept: Code, derivation: Code | None = None) -> float:
    matches = [m for m in group.get_measurements(name=concept) if m.derivation == derivation]
    assert len(matches) == 1, (concept, [m.name.meaning for m in group.get_measurements()])
    return float(matches[0].value)


def _unit(group: hd.sr.MeasurementsAndQualitativeEvaluations, concept: Code) -> str:
    (measurement,) = group.get_measurements(name=concept)
    return str(measurement.unit.value)


def _items(items: Iterator[Dataset] | list[Dataset]) -> Iterator[Dataset]:
    """Every content item below ``items``, depth first."""
    for item in items:
        yield item
        if "ContentSequence" in item:
            yield from _items(item.ContentSequence)


def _build(findings: Findings, headers: list[Dataset]) -> hd.sr.Comprehensive3DSR:
    return build_sr(findings, headers, ReportContext(software_version="0.1.0", institution_name="Test Hospital"))


def test_every_zone_region_has_its_group(case: Case, built: Built) -> None:
    d = case.comparable.densitometry
    assert d is not None
    names = list(built.groups)
    assert names.index("lung_right") < names.index("RU")
    assert [n for n in names if n in ZONE_REGIONS] == list(ZONE_REGIONS)
    assert names.index("rind") < names.index(SUMMARY_TRACKING_IDENTIFIER) < names.index(FOLLOWUP_TRACKING_IDENTIFIER)
    context = ReportContext(software_version="0.1.0", institution_name="Test Hospital")
    series_uid = str(case.headers[0].SeriesInstanceUID)
    on_mask = f"on the mask of model {d.source} (weight-free method (no trained weights))"
    for name in ZONE_REGIONS:
        group, m = built.groups[name], d.regions[name]
        assert group.tracking_uid == context.tracking_uid(series_uid, case.findings.pipeline_version, name)
        (site,) = group.finding_sites
        location, laterality, modifier = ZONE_SITE_VALUES[name]
        assert site.value.value == location, name
        assert (site.laterality.value if site.laterality else None) == laterality, name
        assert (site.topographical_modifier.value if site.topographical_modifier else None) == modifier, name
        assert algorithm_of(group[0])["name"] == [d.source]
        assert ("VALIDATION", "WEIGHTFREE") in sr_codes(built.sr, name)
        for attribute, concept, derivation, digits in ZONE_MEASUREMENTS:
            value = getattr(m, attribute)
            assert value is not None
            assert _value(group, concept, derivation) == round(value, digits), (name, attribute)
        for band in DENSITY_BANDS:
            share = m.density_bands[band]
            assert share.pct is not None
            assert _value(group, codes.DENSITY_BAND_VOLUME_CODES[band]) == round(share.volume_ml), (name, band)
            assert _value(group, codes.DENSITY_BAND_PERCENT_CODES[band]) == round(share.pct, 1), (name, band)
            assert _unit(group, codes.DENSITY_BAND_VOLUME_CODES[band]) == "ml"
            assert _unit(group, codes.DENSITY_BAND_PERCENT_CODES[band]) == "%"
        assert m.mass_g is not None
        assert _value(group, codes.TISSUE_MASS) == round(m.mass_g)
        assert _unit(group, codes.TISSUE_MASS) == "g"
        (volume,) = group.get_measurements(name=codes.VOLUME)
        assert on_mask in algorithm_of(volume[0])["parameters"]
        if name in ZONE_NAMES:
            score = d.zone_scores[name]
            assert score.score is not None and score.involvement_pct is not None
            assert _value(group, codes.ZONE_SCORE) == score.score
            assert _value(group, codes.ZONE_INVOLVEMENT) == round(score.involvement_pct, 1)
            (item,) = group.get_measurements(name=codes.ZONE_SCORE)
            assert algorithm_of(item[0])["name"] == [codes.ZONE_SCORE_ALGORITHM]
            assert on_mask in algorithm_of(item[0])["parameters"]
        else:
            assert not group.get_measurements(name=codes.ZONE_SCORE)
            assert not group.get_measurements(name=codes.ZONE_INVOLVEMENT)


def test_summary_and_both_lungs(case: Case, built: Built) -> None:
    d = case.comparable.densitometry
    assert d is not None and d.well_aerated_pct is not None and d.zone_score_total is not None
    summary = built.groups[SUMMARY_TRACKING_IDENTIFIER]
    assert (
        _value(summary, codes.ZONE_SCORE_TOTAL)
        == d.zone_score_total
        == sum(int(s.score or 0) for s in d.zone_scores.values())
    )
    assert _value(summary, codes.WELL_AERATED_SHARE) == round(d.well_aerated_pct, 1)
    assert _value(summary, codes.LAA_UPPER_LOWER_RATIO) == 1.23
    assert _value(summary, codes.LAA_CLUSTER_EXPONENT) == 1.88
    assert _value(summary, codes.LAA_CLUSTER_COUNT) == 41
    (exponent,) = summary.get_measurements(name=codes.LAA_CLUSTER_EXPONENT)
    assert "fitted on 17 clusters of 0.064 to 3.2 mL" in algorithm_of(exponent[0])["parameters"]
    assert algorithm_of(summary[0])["name"] == [d.source]
    texts = sr_texts(built.sr, SUMMARY_TRACKING_IDENTIFIER)
    (reference,) = [text for concept, text in texts if concept == "WELLAERATEDREF"]
    assert f"is {round(d.well_aerated_pct, 1):.1f} % of both lungs, at or above the published cut-off of 71 %" in (
        reference
    )
    for words in ("Colombi", "ICU admission or death", "odds ratio 3.8", "not a diagnosis", "one COVID-19 cohort"):
        assert words in reference, words
    assert ("METHOD", d.methods["zone_score"]) in texts
    lungs_group, lungs = built.groups["lungs"], case.comparable.measurements["lungs"]
    for band in DENSITY_BANDS:
        share = lungs.density_bands[band]
        assert share.pct is not None
        assert _value(lungs_group, codes.DENSITY_BAND_VOLUME_CODES[band]) == round(share.volume_ml)
        assert _value(lungs_group, codes.DENSITY_BAND_PERCENT_CODES[band]) == round(share.pct, 1)
    assert lungs.mass_g is not None and _value(lungs_group, codes.TISSUE_MASS) == round(lungs.mass_g)
    assert _value(lungs_group, codes.VOLUME) == round(lungs.volume_ml)  # every value at its clinical precision


def test_zone_score_is_never_called_ct_severity_score(built: Built) -> None:
    assert codes.ZONE_SCORE.meaning == "Weight-free density-based zone score"
    seen = set()
    for item in _items(built.sr.ContentSequence):
        concept = item.ConceptNameCodeSequence[0]
        assert concept.CodeValue != codes.CT_SEVERITY_SCORE.value or concept.CodingSchemeDesignator != "99LUNGCDS"
        if concept.CodeValue in ZONE_SCORE_CONCEPTS:
            seen.add(concept.CodeValue)
            assert "severity" not in concept.CodeMeaning.lower()
            assert "zone score" in concept.CodeMeaning
    assert seen == ZONE_SCORE_CONCEPTS
    for name in WEIGHT_FREE_GROUPS:
        for _, text in sr_texts(built.sr, name):
            assert "CT severity score" not in text.replace("not the lobar CT severity score", ""), text


def test_followup_comparable_changes_and_prior_reference(case: Case, built: Built) -> None:
    followup = case.comparable.followup
    assert followup is not None
    group = built.groups[FOLLOWUP_TRACKING_IDENTIFIER]
    assert ("FOLLOWUP", "COMPARED") in sr_codes(built.sr, FOLLOWUP_TRACKING_IDENTIFIER)
    for key in HEADLINE_KEYS:
        concept, delta = codes.FOLLOWUP_CHANGE_CODES[key], followup.changes[key].delta
        if delta is None:
            assert not group.get_measurements(name=concept), key
            continue
        assert _value(group, concept) == round(delta, HEADLINE_DIGITS[key]), key
        assert _unit(group, concept) == codes.HEADLINE_UNITS[key].value
    assert followup.changes["lung_mass_g"].delta is None
    assert _value(group, codes.FOLLOWUP_CHANGE_CODES["lung_volume_ml"]) == round(
        followup.changes["lung_volume_ml"].delta or 0
    )
    assert _value(group, codes.INTERVAL_SINCE_PRIOR) == 64 and _unit(group, codes.INTERVAL_SINCE_PRIOR) == "d"
    texts = sr_texts(built.sr, FOLLOWUP_TRACKING_IDENTIFIER)
    assert ("MEASNA", "Change of lung mass since prior: the prior value does not exist") in texts
    (prior_words,) = [text for concept, text in texts if concept == "PRIORSTUDY"]
    prior = case.prior
    for words in ("2024-01-01", "ACC0001", prior.study_instance_uid, str(prior.sr_sop_instance_uid)):
        assert words in prior_words, words
    assert ("FUCRITERIA", followup.criteria) in texts
    assert [text for concept, text in texts if concept == "FUCAVEAT"] == list(followup.caveats)
    assert not [text for concept, text in texts if concept == "FUREASON"]
    sr = built.sr
    (study,) = sr.PertinentOtherEvidenceSequence
    assert study.StudyInstanceUID == prior.study_instance_uid
    (series,) = study.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == prior.sr_series_instance_uid
    (instance,) = series.ReferencedSOPSequence
    assert instance.ReferencedSOPInstanceUID == prior.sr_sop_instance_uid
    assert instance.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    assert "PredecessorDocumentsSequence" not in sr
    current = {e[2] for e in sr.get_evidence(current_procedure_only=True)}
    assert prior.sr_sop_instance_uid not in current
    assert current == {str(h.SOPInstanceUID) for h in case.headers}


def test_followup_not_comparable_says_why(case: Case) -> None:
    followup = case.not_comparable.followup
    assert followup is not None and followup.reasons
    sr = _build(case.not_comparable, case.headers)
    group = _groups(sr)[FOLLOWUP_TRACKING_IDENTIFIER]
    assert ("FOLLOWUP", "NOTCOMPARED") in sr_codes(sr, FOLLOWUP_TRACKING_IDENTIFIER)
    texts = sr_texts(sr, FOLLOWUP_TRACKING_IDENTIFIER)
    assert [text for concept, text in texts if concept == "FUREASON"] == list(followup.reasons)
    assert any("slice thickness 8 mm then" in text or "slice thickness 1 mm then" in text for _, text in texts)
    change_codes = {code.value for code in codes.FOLLOWUP_CHANGE_CODES.values()}
    assert not [m for m in group.get_measurements() if m.name.value in change_codes]
    (prior_words,) = [text for concept, text in texts if concept == "PRIORSTUDY"]
    assert "no lungcds SR of it is known" in prior_words
    assert "PertinentOtherEvidenceSequence" not in sr


def test_absent_values_are_left_out_and_stated(case: Case) -> None:
    d = case.findings.densitometry
    assert d is not None
    empty = RegionMeasurements(
        "LL", 0, 0.0, None, None, None, None, None, note="region 'LL' is empty", density_bands={}, mass_g=None
    )
    empty = dataclasses.replace(
        empty,
        density_bands={
            band: dataclasses.replace(d.regions["LL"].density_bands[band], volume_ml=0.0, pct=None)
            for band in DENSITY_BANDS
        },
    )
    emphysema = dataclasses.replace(d.emphysema, upper_lower_ratio=None, cluster_exponent_d=None, fit_range_ml=None)
    absent = dataclasses.replace(
        d,
        regions={**d.regions, "LL": empty},
        zone_scores={**d.zone_scores, "LL": ZoneScore(0.0, None, None)},
        zone_score_total=None,
        emphysema=emphysema,
    )
    sr = _build(dataclasses.replace(case.findings, densitometry=absent), case.headers)
    groups = _groups(sr)
    ll, summary = groups["LL"], groups[SUMMARY_TRACKING_IDENTIFIER]
    assert _value(ll, codes.VOLUME) == 0.0
    for concept in (codes.LOW_ATTENUATION_AREA_950, codes.ZONE_SCORE, codes.ZONE_INVOLVEMENT, codes.TISSUE_MASS):
        assert not ll.get_measurements(name=concept), concept
    assert not [m for m in ll.get_measurements() if m.name in codes.DENSITY_BAND_PERCENT_CODES.values()]
    ll_texts = [text for concept, text in sr_texts(sr, "LL") if concept == "MEASNA"]
    assert "Volume fraction below -950 HU: region 'LL' is empty" in ll_texts
    assert "Weight-free density-based zone score: region 'LL' is empty" in ll_texts
    assert "Tissue mass from CT attenuation: region 'LL' is empty" in ll_texts
    assert len([t for t in ll_texts if t.startswith("Percent of region")]) == len(DENSITY_BANDS)
    for concept in (codes.ZONE_SCORE_TOTAL, codes.LAA_UPPER_LOWER_RATIO, codes.LAA_CLUSTER_EXPONENT):
        assert not summary.get_measurements(name=concept), concept
    summary_texts = [text for concept, text in sr_texts(sr, SUMMARY_TRACKING_IDENTIFIER) if concept == "MEASNA"]
    assert "Upper to lower zone LAA-950 ratio: not computed" in summary_texts
    assert "LAA-950 cluster size exponent D: not computed" in summary_texts
    assert any(text.startswith(codes.ZONE_SCORE_TOTAL.meaning) for text in summary_texts)
    assert FOLLOWUP_TRACKING_IDENTIFIER not in groups  # no follow-up asked for: no group


def test_acquisition_caveats_in_report_container(case: Case, built: Built) -> None:
    acquisition = case.comparable.acquisition
    assert acquisition is not None and acquisition.caveats
    statements = report_statements(built.sr)
    caveats = [text for concept, text in statements if concept == "ACQCAVEAT"]
    assert caveats == list(acquisition.caveats)
    parameters = [text for concept, text in statements if concept == "ACQPARAM"]
    assert parameters[0] == "Slice thickness 8 mm (slices 8 mm apart)"
    assert parameters[1].startswith("Reconstruction kernel unknown")
    assert parameters[2] == "Contrast medium unknown: no DICOM header"


def test_rejects_non_finite_values_and_a_prior_of_this_study(case: Case) -> None:
    d = case.findings.densitometry
    assert d is not None
    broken = dataclasses.replace(case.findings, densitometry=dataclasses.replace(d, well_aerated_pct=math.nan))
    with pytest.raises(ValueError, match="well_aerated_pct"):
        _build(broken, case.headers)
    same_study = dataclasses.replace(case.prior, study_instance_uid=str(case.headers[0].StudyInstanceUID))
    followup = case.comparable.followup
    assert followup is not None
    mixed = dataclasses.replace(case.comparable, followup=dataclasses.replace(followup, prior=same_study))
    with pytest.raises(ValueError, match="belongs to this study"):
        _build(mixed, case.headers)


def test_dciodvfy_accepts_the_sr(built: Built, dciodvfy: Callable[[Path], Validation]) -> None:
    result = dciodvfy(built.path)
    assert not result.errors, "\n".join(result.errors)
    reread = pydicom.dcmread(built.path)
    assert reread.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
