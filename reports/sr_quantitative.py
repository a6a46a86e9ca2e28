"""The weight-free quantitative CT groups of the lungcds SR (issue 15), and the acquisition statements.

:mod:`reports.sr` puts these groups after the region groups and before the model groups, and the
acquisition items into its report-level "Qualitative Evaluations" container; they are made from
the building blocks of :mod:`reports.sr_content`.

* **Weight-free zone densitometry** (``Findings.densitometry``), all on the lung mask of run
  ``Densitometry.source`` whose provenance (weight-free) every item carries exactly as the region
  groups do:

  - one TID 1501 group per zone region (``RU`` ... ``LL``, ``core``, ``rind``; no SEG segment),
    tracking identifier = region name, finding site CID 6171 "Upper/Middle/Lower zone of lung"
    with CID 244 laterality, or "Lung" with the CID 2 modifier "Central"/"Peripheral"; volume,
    FPV, LAA-950, Perc15, mean HU, HAA, the density bands and the mass, and for the six zones the
    involvement (% at -700 to +100 HU) and the *weight-free density-based zone score* (0-5),
    which is never called a CT severity score;
  - the group ``"weight-free summary"``: total zone score (0-30), well-aerated share of both
    lungs with Colombi's 71 % cut-off in words (what it is and is not), upper/lower LAA ratio,
    cluster exponent D and cluster count, the caveats and the method definitions (the bands and
    mass of both lungs are region measurements, in the ``lungs`` group).

  New values are rounded to clinically meaningful precision: volumes 1 mL, percentages 0.1,
  HU 1, mass 1 g, ratio and D 0.01, scores whole; an absent value is left out and said why.
* **Follow-up** (``Findings.followup``): the group ``"follow-up"`` with the coded comparison
  status, the prior study in words (date, accession number, Study Instance UID), and when
  comparable each headline change since the prior (rounded like its value; private concepts)
  and the interval in days, else the reasons; the caveats and criteria.  The prior's SR, when
  its UIDs are known, is listed in the Pertinent Other Evidence Sequence (PS3.3 C.17.2.3) --
  never in the Predecessor Documents Sequence, which is for earlier versions of this report.
* **Acquisition** (``Findings.acquisition``): slice thickness, kernel, contrast in words, then
  each caveat it puts on the densitometry.
"""

from __future__ import annotations

from highdicom.sr import (
    AlgorithmIdentification,
    ContentItem,
    FindingSite,
    MeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
)
from pydicom import Dataset

from models.findings import (
    HEADLINE_KEYS,
    ZONE_REGIONS,
    Acquisition,
    Densitometry,
    Findings,
    FollowUp,
    ModelRun,
    PriorAnalysis,
    ZoneScore,
)
from reports import codes
from reports.identity import ReportContext, format_da, model_display_name
from reports.precision import HEADLINE_DIGITS, PRECISION
from reports.sr_content import (
    Group,
    GroupContent,
    add_texts,
    on_mask,
    region_densitometry,
    rounded,
    run_algorithm,
    text_item,
    tracking_identifier,
)

__all__ = [
    "FOLLOWUP_TRACKING_IDENTIFIER",
    "SUMMARY_TRACKING_IDENTIFIER",
    "acquisition_items",
    "followup_group",
    "prior_sr_reference",
    "summary_group",
    "zone_groups",
]

#: Tracking Identifier (TID 4108) of the group of the weight-free numbers of both lungs.
SUMMARY_TRACKING_IDENTIFIER = "weight-free summary"
#: Tracking Identifier of the group of the comparison with the patient's prior analysis.
FOLLOWUP_TRACKING_IDENTIFIER = "follow-up"
#: Densitometry methods printed in the summary group; the well-aerated reference goes with its value.
_METHOD_KEYS: tuple[str, ...] = (
    "zones",
    "rind",
    "density_bands",
    "zone_score",
    "upper_lower_ratio",
    "cluster_exponent",
    "mass",
)


def _zone_score_algorithm(mask: ModelRun, version: str, context: ReportContext) -> AlgorithmIdentification:
    """TID 4019 of the weight-free density-based zone score, naming the mask and its provenance."""
    return AlgorithmIdentification(
        name=codes.ZONE_SCORE_ALGORITHM,
        version=version,
        manufacturer=context.manufacturer,
        parameters=[
            on_mask(mask),
            "0-5 per zone from the percent of the zone at -700 to +100 HU, thresholds of Pan et al.; total 0-30",
        ],
    )


def _zone_score(
    score: ZoneScore, why: str, mask: ModelRun, version: str, context: ReportContext, content: GroupContent
) -> None:
    """Involvement (%) and weight-free density-based zone score (0-5) of one zone, or why they are absent."""
    algorithm = _zone_score_algorithm(mask, version, context)
    if score.involvement_pct is None:
        content.texts.append(text_item(codes.MEASUREMENT_NOT_AVAILABLE, f"{codes.ZONE_INVOLVEMENT.meaning}: {why}"))
    else:
        content.measure(
            codes.ZONE_INVOLVEMENT, score.involvement_pct, codes.UCUM_PERCENT, algorithm, PRECISION["percent"]
        )
    if score.score is None:
        content.texts.append(text_item(codes.MEASUREMENT_NOT_AVAILABLE, f"{codes.ZONE_SCORE.meaning}: {why}"))
    else:
        content.measure(codes.ZONE_SCORE, score.score, codes.UCUM_NO_UNITS, algorithm)


def _zone_group(name: str, findings: Findings, d: Densitometry, context: ReportContext, series_uid: str) -> Group:
    """TID 1501 group of one weight-free zone region (no SEG segment): its densitometry, density bands
    and mass and, for the six zones, involvement and weight-free density-based zone score; everything
    on the lung mask of run ``d.source``, with that run's provenance."""
    version = findings.pipeline_version
    run = findings.models[d.source]
    content = GroupContent()
    content.provenance(f"{model_display_name(run)} mask", run)
    m = d.regions.get(name)
    if m is not None:
        region_densitometry(m, run, version, context, content)
    if name in d.zone_scores:
        why = m.note if m is not None and m.note else "the zone is empty"
        _zone_score(d.zone_scores[name], why, run, version, context, content)
    site = codes.ZONE_SITES[name]
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking_identifier(context, series_uid, version, name),
        finding_category=codes.ANATOMICAL_STRUCTURE,
        finding_type=site.location,
        finding_sites=[FindingSite(site.location, laterality=site.laterality, topographical_modifier=site.modifier)],
        algorithm_id=run_algorithm(run),
        measurements=content.measurements or None,
        qualitative_evaluations=content.coded or None,
    )
    add_texts(group, content.texts)
    return group


def zone_groups(findings: Findings, d: Densitometry, context: ReportContext, series_uid: str) -> list[Group]:
    """The groups of the zone regions that ``d`` measured or scored, in ``ZONE_REGIONS`` order."""
    zones = [name for name in ZONE_REGIONS if name in d.regions or name in d.zone_scores]
    return [_zone_group(name, findings, d, context, series_uid) for name in zones]


def _well_aerated_words(d: Densitometry, pct: float) -> str:
    """The well-aerated share beside Colombi's cut-off, and what that cut-off is and is not."""
    where = "below" if d.below_well_aerated_cutoff else "at or above"
    reference = d.methods.get("well_aerated_reference") or codes.WELL_AERATED_CUTOFF_STATEMENT
    return (
        f"Well-aerated lung (-950 to -700 HU) is {pct:.1f} % of both lungs, {where} the published cut-off of "
        f"{d.well_aerated_cutoff_pct:g} % (Colombi et al., Radiology 2020). {reference}"
    )


def summary_group(findings: Findings, d: Densitometry, context: ReportContext, series_uid: str) -> Group:
    """TID 1501 group "weight-free summary": the densitometry of both lungs that is not a region's --
    total zone score, well-aerated share with Colombi's cut-off, upper/lower LAA ratio, cluster
    exponent D -- with the definitions and caveats in words (the bands and mass of both lungs are
    region measurements, in the ``lungs`` group)."""
    version = findings.pipeline_version
    run = findings.models[d.source]
    content = GroupContent()
    content.provenance(f"{model_display_name(run)} mask", run)
    densitometry = AlgorithmIdentification(
        name=codes.DENSITOMETRY_ALGORITHM,
        version=version,
        manufacturer=context.manufacturer,
        parameters=[on_mask(run)],
    )
    if d.zone_score_total is None:
        content.texts.append(
            text_item(
                codes.MEASUREMENT_NOT_AVAILABLE, f"{codes.ZONE_SCORE_TOTAL.meaning}: not computed, a zone is empty"
            )
        )
    else:
        total_algorithm = _zone_score_algorithm(run, version, context)
        content.measure(codes.ZONE_SCORE_TOTAL, d.zone_score_total, codes.UCUM_NO_UNITS, total_algorithm)
    if d.well_aerated_pct is None:
        content.texts.append(
            text_item(codes.MEASUREMENT_NOT_AVAILABLE, f"{codes.WELL_AERATED_SHARE.meaning}: not computed")
        )
    else:
        pct = rounded(d.well_aerated_pct, PRECISION["percent"])
        content.measure(codes.WELL_AERATED_SHARE, pct, codes.UCUM_PERCENT, densitometry)
        content.texts.append(text_item(codes.WELL_AERATED_REFERENCE, _well_aerated_words(d, pct)))
    e = d.emphysema
    d_algorithm = densitometry
    if e.fit_range_ml is not None:
        low, high = e.fit_range_ml
        d_algorithm = AlgorithmIdentification(
            name=codes.DENSITOMETRY_ALGORITHM,
            version=version,
            manufacturer=context.manufacturer,
            parameters=[on_mask(run), f"fitted on {e.clusters_fitted} clusters of {low:.3g} to {high:.3g} mL"],
        )
    for concept, value, algorithm in (
        (codes.LAA_UPPER_LOWER_RATIO, e.upper_lower_ratio, densitometry),
        (codes.LAA_CLUSTER_EXPONENT, e.cluster_exponent_d, d_algorithm),
    ):
        if value is None:
            content.texts.append(text_item(codes.MEASUREMENT_NOT_AVAILABLE, f"{concept.meaning}: not computed"))
            continue
        content.measure(concept, value, codes.UCUM_NO_UNITS, algorithm, PRECISION["ratio"])
    content.measure(codes.LAA_CLUSTER_COUNT, e.cluster_count, codes.UCUM_NO_UNITS, densitometry)
    content.texts += [text_item(codes.DENSITOMETRY_NOTE, note) for note in (*e.notes, *d.notes)]
    content.texts += [text_item(codes.METHOD_DEFINITION, d.methods[key]) for key in _METHOD_KEYS if d.methods.get(key)]
    lung = codes.REGION_CODES["lungs"]
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking_identifier(context, series_uid, version, SUMMARY_TRACKING_IDENTIFIER),
        finding_category=codes.ANATOMICAL_STRUCTURE,
        finding_type=lung,
        finding_sites=[FindingSite(lung)],
        algorithm_id=run_algorithm(run),
        measurements=content.measurements,
        qualitative_evaluations=content.coded or None,
    )
    add_texts(group, content.texts)
    return group


def _prior_words(prior: PriorAnalysis, referenced: bool) -> str:
    """The prior analysis in words: study date, accession number, Study Instance UID, series, and its SR."""
    date = format_da(prior.study_date)
    parts = [f"Prior study of {date}" if date else "Prior study (study date unknown)"]
    if prior.accession_number:
        parts.append(f"accession number {prior.accession_number}")
    parts += [f"Study Instance UID {prior.study_instance_uid}", f"series {prior.series_instance_uid}"]
    if referenced:
        parts.append(
            f"its lungcds SR {prior.sr_sop_instance_uid} (series {prior.sr_series_instance_uid}) is referenced in "
            "the Pertinent Other Evidence Sequence"
        )
    elif prior.sr_sop_instance_uid:
        parts.append(f"its lungcds SR {prior.sr_sop_instance_uid} is not referenced: the series of that SR is unknown")
    else:
        parts.append("no lungcds SR of it is known")
    return "; ".join(parts)


def prior_sr_reference(followup: FollowUp | None) -> Dataset | None:
    """What the SR of the prior analysis is known as (not read from disk), for the Pertinent Other
    Evidence Sequence (PS3.3 C.17.2.3); None when its SOP Instance or Series Instance UID is unknown.
    Our SRs are Comprehensive 3D SR (:data:`reports.codes.PRIOR_SR_STORAGE`)."""
    prior = followup.prior if followup is not None else None
    if prior is None or not prior.sr_sop_instance_uid or not prior.sr_series_instance_uid:
        return None
    reference = Dataset()
    reference.SOPClassUID = codes.PRIOR_SR_STORAGE
    reference.SOPInstanceUID = prior.sr_sop_instance_uid
    reference.StudyInstanceUID = prior.study_instance_uid
    reference.SeriesInstanceUID = prior.sr_series_instance_uid
    return reference


def followup_group(findings: Findings, followup: FollowUp, context: ReportContext, series_uid: str) -> Group:
    """TID 1501 group "follow-up": coded whether the headline was compared with a prior analysis, the
    prior in words, and when comparable each headline change (current minus prior, rounded like its
    value) and the interval in days; else the reasons; the caveats and the criteria in words."""
    version = findings.pipeline_version
    d = findings.densitometry
    run = findings.mask_run("lungs") or (findings.models.get(d.source) if d is not None else None)
    content = GroupContent()
    if run is not None:
        content.provenance(f"{model_display_name(run)} mask", run)
    status = codes.FOLLOWUP_COMPARED if followup.comparable else codes.FOLLOWUP_NOT_COMPARED
    content.coded.append(QualitativeEvaluation(codes.FOLLOWUP_STATUS, status))
    if followup.prior is not None:
        referenced = prior_sr_reference(followup) is not None
        content.texts.append(text_item(codes.PRIOR_STUDY, _prior_words(followup.prior, referenced)))
    parameters = ["current minus prior, the weight-free headline numbers of both lungs"]
    if run is not None:
        parameters.append(on_mask(run))
    algorithm = AlgorithmIdentification(
        name=codes.FOLLOWUP_ALGORITHM, version=version, manufacturer=context.manufacturer, parameters=parameters
    )
    if followup.comparable:
        for key in HEADLINE_KEYS:
            concept, change = codes.FOLLOWUP_CHANGE_CODES[key], followup.changes[key]
            delta = change.delta
            if delta is None:
                missing = "prior" if change.prior is None else "current"
                content.texts.append(
                    text_item(codes.MEASUREMENT_NOT_AVAILABLE, f"{concept.meaning}: the {missing} value does not exist")
                )
                continue
            content.measure(concept, delta, codes.HEADLINE_UNITS[key], algorithm, HEADLINE_DIGITS[key])
    else:
        content.texts += [text_item(codes.FOLLOWUP_REASON, reason) for reason in followup.reasons]
    if followup.interval_days is not None:
        content.measure(codes.INTERVAL_SINCE_PRIOR, followup.interval_days, codes.UCUM_DAY, algorithm)
    content.texts += [text_item(codes.FOLLOWUP_CAVEAT, caveat) for caveat in followup.caveats]
    content.texts.append(text_item(codes.FOLLOWUP_CRITERIA, followup.criteria))
    lung = codes.REGION_CODES["lungs"]
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking_identifier(context, series_uid, version, FOLLOWUP_TRACKING_IDENTIFIER),
        finding_sites=[FindingSite(lung)],
        algorithm_id=run_algorithm(run) if run is not None else None,
        measurements=content.measurements or None,
        qualitative_evaluations=content.coded,
    )
    add_texts(group, content.texts)
    return group


def acquisition_items(a: Acquisition) -> list[ContentItem]:
    """Slice thickness, kernel and contrast in words, then each caveat of the acquisition for densitometry."""
    if a.slice_thickness_mm is None:
        thickness = f"Slice thickness not recorded in the header (slices {a.slice_spacing_mm:g} mm apart)"
    else:
        thickness = f"Slice thickness {a.slice_thickness_mm:g} mm (slices {a.slice_spacing_mm:g} mm apart)"
    sharpness = {True: "sharp", False: "soft", None: "not classified"}[a.sharp_kernel]
    rule = f"; {a.kernel_rule}" if a.kernel_rule else ""
    if a.kernel:
        kernel = f"Reconstruction kernel {a.kernel}: {sharpness}{rule}"
    else:
        kernel = f"Reconstruction kernel unknown{rule}"
    if a.contrast is None:
        contrast = "Contrast medium unknown: no DICOM header"
    elif a.contrast:
        contrast = f"Contrast agent recorded in the header: {a.contrast_agent or 'unnamed'}"
    else:
        contrast = "No contrast agent recorded in the header"
    items: list[ContentItem] = [
        text_item(codes.ACQUISITION_PARAMETER, words) for words in (thickness, kernel, contrast)
    ]
    items += [text_item(codes.ACQUISITION_CAVEAT, caveat) for caveat in a.caveats]
    return items
