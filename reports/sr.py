"""Comprehensive 3D SR with a TID 1500 Measurement Report of one lungcds analysis.

The document (PS3.3 A.35.13, Comprehensive 3D SR IOD) is built from highdicom's templates
(PS3.16 Annex A):

* TID 1500 Measurement Report, with TID 1001 Observation Context naming the lungcds device
  (TID 1002/1004) and "Computed tomography of chest" as procedure reported; every source
  instance and every SEG instance is listed in the Current Requested Procedure Evidence Sequence
  (PS3.3 C.17.2.2).
* **One measurement group per region** (``lungs``, ``lung_left``, ``lung_right``, the lobes and
  any lesion region with measurements): TID 1411 Volumetric ROI Measurements referencing the
  region's segment in the SEG instance of its layer when there is one (:mod:`reports.seg`;
  tracking UID shared with the segment), else TID 1501; each with TID 4108 tracking identifier =
  region name, finding site (SNOMED CT), the TID 4019 algorithm that made the region's mask
  (``Findings.mask_sources``), the coded provenance of that mask and of every model output in
  the group ("Output validation status", with the UNVALIDATED statement in words when it
  applies) and TID 300 measurements in UCUM units, each with its own TID 4019 algorithm: the
  densitometry (its algorithm parameters name the mask's model and provenance, so a lobe's
  volume is never presented as weight-free), the lesion involvement and CT severity score
  (lobes; the total and its category on ``lungs``) and the I3Dr lung-function estimates (lobes;
  patient level on ``lungs``).  A value the plausibility gate withheld is not reported; its
  reason is ("Implausible value withheld").  A region that carries density bands and mass
  (``lungs``, ``lung_left``, ``lung_right``) also has the volume and percent of each band
  (private concepts with the HU range in the meaning) and its tissue mass.  Every region number
  is rounded as :data:`reports.precision.PRECISION` says (volumes to 1 mL, percentages to 0.1,
  attenuation to 1 HU, mass to 1 g), as the PDF prints it; result.json keeps full precision.
* The weight-free zone, summary and follow-up groups and the acquisition statements (issue 15):
  see :mod:`reports.sr_quantitative`.
* **One measurement group per model that ran** (tracking identifier ``"model <name>"``): TID
  4019 name, version and, as parameters, provenance, weights SHA-256 and origin; coded run status
  and coded provenance with its words; the CO-RADS category (coded) and ensemble score, or the
  STOIC2021 probabilities (with the members that did not run, see below); the reasons of withheld
  values; the reason in words.
* The report-level "Qualitative Evaluations" container (TID 1500 rows 12-14): what the software
  is, that it is decision support, the UNVALIDATED banner when any output is unvalidated, the
  lung-mask quality gate with its reasons, **the models that did not run**, pipeline warnings,
  and the acquisition.  The models that did not run are one coded "Model run status" item per
  status ("Model not installed, no result", "Model skipped, no result", "Model failed, no
  result"), each with one "Model not run" text per model below it (HAS PROPERTIES) naming the
  model in the PDF's words with its registry name and the reason of its record verbatim, e.g.
  "CO-RADS (corads): no weights installed; install with `lungcds models install`".  A PACS or
  OHIF SR viewer lists measurement groups; a group per model without a result would list a dozen
  near-empty ones on a fresh install, so such a model is stated once here, never silently absent.
  The STOIC2021 members that did not run are stated by their ensemble, as in the PDF (see
  :func:`_member_items`).

highdicom 0.28 does not model two things, which are added with highdicom's own content-item
classes: free-text qualitative evaluations inside a group (TID 1501 row 12 / TID 1411 row 15)
and the report-level "Qualitative Evaluations" container.  It also refuses a TID 1500 report
without imaging measurements, which the not-analysable report of
:func:`build_not_analysable_sr` is (TID 1500 requires at least one of the Imaging
Measurements, Derived Imaging Measurements and Qualitative Evaluations containers), so that
root is assembled from highdicom's content items the way :class:`MeasurementReport` does it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import highdicom as hd
from highdicom.sr import (
    AlgorithmIdentification,
    CodeContentItem,
    CodedConcept,
    ContainerContentItem,
    ContentItem,
    ContentSequence,
    FindingSite,
    LanguageOfContentItemAndDescendants,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    QualitativeEvaluation,
    ReferencedSegment,
    RelationshipTypeValues,
    SourceSeriesForSegmentation,
    TextContentItem,
    VolumetricROIMeasurementsAndQualitativeEvaluations,
)
from pydicom import Dataset
from pydicom.sr.codedict import codes as dcm_codes
from pydicom.sr.coding import Code
from pydicom.uid import SegmentationStorage

from models.findings import MODEL_OUTPUTS, REGION_NAMES, Findings, ModelRun
from reports import codes
from reports.identity import (
    OUTPUT_CHARACTER_SET,
    STATUS_WORDS,
    ReportContext,
    analysis_digest,
    banner_text,
    check_reasons,
    check_source_series,
    evidence_headers,
    identity_source,
    index_source_headers,
    is_stoic_member,
    model_display_name,
    model_label,
    model_statement,
    models_not_run,
    not_analysable_digest,
    validate_findings,
)
from reports.severity import severity_category
from reports.sr_content import (
    Group,
    GroupContent,
    add_texts,
    code_item,
    device_observer,
    region_densitometry,
    run_algorithm,
    text_item,
    tracking_identifier,
)
from reports.sr_key_slice import key_slice_groups
from reports.sr_quantitative import (
    FOLLOWUP_TRACKING_IDENTIFIER,
    SUMMARY_TRACKING_IDENTIFIER,
    acquisition_items,
    followup_group,
    prior_sr_reference,
    summary_group,
    zone_groups,
)

__all__ = [
    "NOT_ANALYSABLE_SERIES_DESCRIPTION",
    "SR_SERIES_DESCRIPTION",
    "SR_UNVALIDATED_SERIES_DESCRIPTION",
    "build_not_analysable_sr",
    "FOLLOWUP_TRACKING_IDENTIFIER",
    "SUMMARY_TRACKING_IDENTIFIER",
    "build_sr",
    "model_tracking_identifier",
]

#: Series Description (0008,103E) of the SR series.
SR_SERIES_DESCRIPTION = "lungcds measurements (decision support)"
#: Series Description of the SR series when any output is unvalidated (seen in the PACS series list).
SR_UNVALIDATED_SERIES_DESCRIPTION = "lungcds measurements UNVALIDATED - not for clinical use"
#: Series Description of the SR and PDF series of a series that could not be analysed.
NOT_ANALYSABLE_SERIES_DESCRIPTION = "lungcds: series not analysable, no results"
#: UID root of the SR Storage SOP classes (PS3.4 B.5), for checking predecessor documents.
_SR_CLASS_ROOT = "1.2.840.10008.5.1.4.1.1.88."
#: The statuses of a model without a result, in the order their summaries are listed.
_NOT_RUN_STATUSES = tuple(status for status in codes.MODEL_STATUS_VALUES if status != "ran")


def model_tracking_identifier(name: str) -> str:
    """Tracking Identifier (TID 4108) of the group of model ``name`` (e.g. "model corads").

    Kept apart from region names: the registry has a model called "lesions", as is a mask.
    """
    return f"model {name}"


def _check_seg(seg: Dataset, study_uid: str, series_uid: str) -> None:
    """Raise ValueError unless ``seg`` is a Segmentation of the same study derived from the source series."""
    if seg.get("SOPClassUID") != SegmentationStorage:
        raise ValueError(f"seg must be a Segmentation Storage instance, got SOP class {seg.get('SOPClassUID')}")
    if seg.get("StudyInstanceUID") != study_uid:
        raise ValueError("seg belongs to another study than the source series")
    referenced = {str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])}
    if series_uid not in referenced:
        raise ValueError("seg does not reference the source series")


def _segments(segs: Sequence[Dataset], study_uid: str, series_uid: str) -> dict[str, tuple[Dataset, int]]:
    """The SEG instance and segment number of each region, by Tracking ID (the region name; the
    Segment Label holds its words, PS3.3 C.8.20.2), after checking every SEG.

    A region is one segment of one instance (the layers of :mod:`reports.seg` do not share
    regions), so a Tracking ID found twice is refused rather than referenced at random.
    """
    found: dict[str, tuple[Dataset, int]] = {}
    for seg in segs:
        _check_seg(seg, study_uid, series_uid)
        for item in seg.SegmentSequence:
            name = str(item.TrackingID)
            if name in found:
                raise ValueError(f"region {name!r} is a segment of more than one SEG instance")
            found[name] = (seg, int(item.SegmentNumber))
    return found


def _model_measurements(run: ModelRun, values: Iterable[tuple[Code, float, Code]], content: GroupContent) -> None:
    """TID 300 measurements of one model output, each naming the model (TID 4019), with its provenance."""
    algorithm = run_algorithm(run)
    for concept, value, unit in values:
        content.measure(concept, value, unit, algorithm)
    content.provenance(model_display_name(run), run)


def _i3dr_values(values: Mapping[str, float]) -> list[tuple[Code, float, Code]]:
    return [
        (codes.I3DR_OUTPUT_CODES[key], values[key], codes.I3DR_OUTPUT_UNITS[key])
        for key in codes.I3DR_OUTPUT_CODES
        if key in values
    ]


def _region_names(findings: Findings) -> list[str]:
    """Regions that get a group: measured (or withheld), scored or estimated, in ``REGION_NAMES`` order."""
    present = set(findings.measurements) | {w.site for w in findings.withheld_values("measurements")}
    if findings.severity is not None:
        present |= set(findings.severity.lobes) | {"lungs"}
    if findings.i3dr is not None:
        present |= {lobe for lobe, values in findings.i3dr.lobes.items() if values}
        if findings.i3dr.patient:
            present.add("lungs")
    ordered = [name for name in REGION_NAMES if name in present]
    return ordered + sorted(present - set(REGION_NAMES))


def _region_group(
    name: str,
    findings: Findings,
    context: ReportContext,
    series_uid: str,
    segment: tuple[Dataset, int] | None,
) -> Group:
    """Measurement group of one region (TID 1411 referencing ``segment``, a SEG instance and segment
    number, when given; else TID 1501)."""
    version = findings.pipeline_version
    content = GroupContent()
    mask = findings.mask_run(name)
    if mask is not None:
        content.provenance(f"{model_display_name(mask)} mask", mask)
    if name in findings.measurements and mask is not None:
        region_densitometry(findings.measurements[name], mask, version, context, content)
    content.withheld(w.reason for w in findings.withheld_values("measurements", name))
    if name == "lungs":
        content.withheld(w.reason for w in findings.withheld_values("severity"))
        content.withheld(w.reason for w in findings.withheld if w.output == "i3dr" and w.site.startswith("patient"))
    if findings.severity is not None:
        if name in findings.severity.lobes:
            values = findings.severity.lobes[name]
            _model_measurements(
                findings.models["severity"],
                [
                    (codes.LOBE_INVOLVEMENT, values["involvement_pct"], codes.UCUM_PERCENT),
                    (codes.CT_SEVERITY_SCORE, values["ctss"], codes.UCUM_NO_UNITS),
                ],
                content,
            )
        if name == "lungs":
            total = findings.severity.total_ctss
            _model_measurements(
                findings.models["severity"], [(codes.CT_SEVERITY_SCORE, total, codes.UCUM_NO_UNITS)], content
            )
            category = codes.SEVERITY_CATEGORY_VALUES[severity_category(total)]
            content.coded.append(QualitativeEvaluation(codes.CT_SEVERITY_CATEGORY, category))
    if findings.i3dr is not None:
        values = findings.i3dr.patient if name == "lungs" else findings.i3dr.lobes.get(name, {})
        if values:
            _model_measurements(findings.models["i3dr"], _i3dr_values(values), content)

    tracking = tracking_identifier(context, series_uid, version, name)
    site = codes.REGION_CODES.get(name)
    category = codes.ANATOMICAL_STRUCTURE if site is not None else codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE
    finding_type = site or codes.LESION_CODES.get(name, codes.LESION)
    algorithm = run_algorithm(mask) if mask is not None else None
    group: Group
    if segment is not None:
        seg, number = segment
        group = VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_segment=ReferencedSegment(
                sop_class_uid=seg.SOPClassUID,
                sop_instance_uid=seg.SOPInstanceUID,
                segment_number=number,
                source_series=SourceSeriesForSegmentation(series_uid),
            ),
            finding_category=category,
            finding_type=finding_type,
            finding_sites=[FindingSite(site)] if site is not None else None,
            algorithm_id=algorithm,
            measurements=content.measurements or None,
            qualitative_evaluations=content.coded or None,
        )
    else:
        group = MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            finding_category=category,
            finding_type=finding_type,
            finding_sites=[FindingSite(site)] if site is not None else None,
            algorithm_id=algorithm,
            measurements=content.measurements or None,
            qualitative_evaluations=content.coded or None,
        )
    add_texts(group, content.texts)
    return group


def _probabilities(
    p_covid: float | None, p_severe: float | None, algorithm: AlgorithmIdentification
) -> list[Measurement]:
    """P(COVID-19) and P(severe) as measurements (unit "no units"), each only when it exists."""
    pairs = ((codes.PROBABILITY_COVID19, p_covid), (codes.PROBABILITY_SEVERE_OUTCOME, p_severe))
    return [
        Measurement(name=concept, value=float(value), unit=codes.UCUM_NO_UNITS, algorithm_id=algorithm)
        for concept, value in pairs
        if value is not None
    ]


def _not_run_text(run: ModelRun, *, with_status: bool = False) -> str:
    """A model without a result in words: its label (:func:`reports.identity.model_label`) and the
    reason of its record verbatim; ``with_status`` adds the status in words where no coded status
    is the parent item (a STOIC2021 member under its ensemble)."""
    status = f", {STATUS_WORDS[run.status]}" if with_status else ""
    return f"{model_label(run)}{status}: {run.reason or 'no reason given'}"


def _with_children(item: ContentItem, children: Sequence[ContentItem]) -> ContentItem:
    """``item`` with ``children`` as its content items (none: left a leaf, as the IOD wants no empty sequence)."""
    if children:
        item.ContentSequence = ContentSequence(children)
    return item


def _member_items(run: ModelRun, findings: Findings, relationship: RelationshipTypeValues) -> list[TextContentItem]:
    """The STOIC2021 members that did not run, as "Model not run" texts with their status, when ``run``
    is the ensemble (none for another model).

    They are stated by the ensemble, as the PDF does (:func:`reports.identity.is_stoic_member`: its
    not-run line leaves them out because the ensemble's line and member table cover them): below the
    ensemble's own text when it did not run (HAS PROPERTIES), else in its measurement group next to
    its probabilities (CONTAINS).  A member's status can differ from the ensemble's, so the text says it.
    """
    if run.name != "stoic":
        return []
    return [
        TextContentItem(
            name=codes.MODEL_NOT_RUN,
            value=_not_run_text(member, with_status=True),
            relationship_type=relationship,
        )
        for member in findings.models.values()
        if member.status != "ran" and is_stoic_member(findings, member.name)
    ]


def _not_run_summaries(findings: Findings) -> list[ContentItem]:
    """One coded "Model run status" per status of the models that did not run, each model below it
    as a "Model not run" text (HAS PROPERTIES; :func:`_not_run_text`), with the ensemble's members
    below the ensemble (:func:`_member_items`).

    One coded item per status, not a group per model: an SR viewer lists every measurement group,
    and a model without a result has nothing to measure.
    """
    summaries: list[ContentItem] = []
    for status in _NOT_RUN_STATUSES:
        texts = [
            _with_children(
                TextContentItem(
                    name=codes.MODEL_NOT_RUN,
                    value=_not_run_text(run),
                    relationship_type=RelationshipTypeValues.HAS_PROPERTIES,
                ),
                _member_items(run, findings, RelationshipTypeValues.HAS_PROPERTIES),
            )
            for run in models_not_run(findings)
            if run.status == status
        ]
        if texts:
            summaries.append(
                _with_children(code_item(codes.MODEL_RUN_STATUS, codes.MODEL_STATUS_VALUES[status]), texts)
            )
    return summaries


def _model_group(run: ModelRun, findings: Findings, context: ReportContext, series_uid: str) -> Group:
    """TID 1501 group of one model that ran: identity, coded status and provenance, patient-level
    outputs, the ensemble's members that did not run, and the reasons of its withheld values."""
    content = GroupContent()
    content.coded.append(QualitativeEvaluation(codes.MODEL_RUN_STATUS, codes.MODEL_STATUS_VALUES[run.status]))
    content.texts.append(text_item(codes.MODEL_RUN_STATUS, model_statement(run)))
    if run.description:
        content.texts.append(text_item(codes.MODEL_DESCRIPTION, run.description))
    algorithm = run_algorithm(run)
    if run.name == "corads" and findings.corads is not None:
        category = codes.CORADS_CATEGORY_VALUES[findings.corads.category]
        content.coded.append(QualitativeEvaluation(codes.CORADS_CATEGORY, category))
        content.measure(codes.CORADS_SCORE, findings.corads.score, codes.UCUM_NO_UNITS, algorithm)
    stoic = findings.stoic
    if run.name == "stoic" and stoic is not None:
        content.measurements += _probabilities(stoic.p_covid, stoic.p_severe, algorithm)
        content.texts += [text_item(codes.MODEL_OUTPUT_NOTE, note) for note in stoic.notes]
    elif stoic is not None and run.name in stoic.members:
        member = stoic.members[run.name]
        content.measurements += _probabilities(member.get("p_covid"), member.get("p_severe"), algorithm)
    content.texts += _member_items(run, findings, RelationshipTypeValues.CONTAINS)
    if run.name in MODEL_OUTPUTS:
        content.withheld(w.reason for w in findings.withheld_values(run.name))
    else:
        content.withheld(w.reason for w in findings.withheld_values("stoic", site=run.name))
    if run.provenance is not None:
        content.coded.append(
            QualitativeEvaluation(codes.OUTPUT_VALIDATION_STATUS, codes.VALIDATION_VALUES[run.provenance])
        )
        content.texts.append(text_item(codes.OUTPUT_VALIDATION_STATUS, run.validation or ""))
    name = model_tracking_identifier(run.name)
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking_identifier(context, series_uid, findings.pipeline_version, name),
        finding_sites=[FindingSite(codes.REGION_CODES["lungs"])],
        algorithm_id=algorithm,
        measurements=content.measurements or None,
        qualitative_evaluations=content.coded,
    )
    add_texts(group, content.texts)
    return group


def _qualitative_container(items: Sequence[ContentItem]) -> ContainerContentItem:
    """TID 1500 row 12 "Qualitative Evaluations" holding ``items`` (rows 13-14)."""
    container = ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS, relationship_type=RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = ContentSequence(items)
    return container


def _report_statements(findings: Findings) -> ContainerContentItem:
    """The report-level statements: what this is, the UNVALIDATED banner, quality gate, the models that
    did not run (:func:`_not_run_summaries`), warnings, acquisition."""
    items: list[ContentItem] = [
        text_item(codes.DECISION_SUPPORT, codes.DECISION_SUPPORT_STATEMENT),
        text_item(codes.DECISION_SUPPORT, codes.SOFTWARE_STATEMENT),
        text_item(codes.DECISION_SUPPORT, codes.WEIGHT_FREE_STATEMENT),
    ]
    banner = banner_text(findings)
    if banner is not None:
        unvalidated = {run.provenance for run in findings.models.values() if run.unvalidated_statement}
        items += [
            code_item(codes.OUTPUT_VALIDATION_STATUS, codes.VALIDATION_VALUES[key])
            for key in codes.VALIDATION_VALUES
            if key in unvalidated
        ]
        items.append(text_item(codes.OUTPUT_VALIDATION_STATUS, banner))
    quality = findings.quality
    if quality is not None:
        verdict = codes.QUALITY_PLAUSIBLE if quality.plausible else codes.QUALITY_IMPLAUSIBLE
        items.append(code_item(codes.LUNG_MASK_QUALITY, verdict))
        items += [text_item(codes.QUALITY_FINDING, reason) for reason in quality.reasons]
    items += _not_run_summaries(findings)
    items += [text_item(codes.PIPELINE_WARNING, warning) for warning in findings.warnings]
    if findings.acquisition is not None:
        items += acquisition_items(findings.acquisition)
    return _qualitative_container(items)


def _observation_context(context: ReportContext) -> ObservationContext:
    """TID 1001 with the lungcds device as observer (TID 1004)."""
    return ObservationContext(observer_device_context=device_observer(context))


def _document(
    evidence: Sequence[Dataset],
    content: Dataset | ContentSequence,
    context: ReportContext,
    content_digest: str,
    series_description: str,
    predecessors: Sequence[Dataset],
) -> hd.sr.Comprehensive3DSR:
    """The Comprehensive 3D SR document in the SR series of the source study.

    ``predecessors`` other than the document itself (same SOP Instance UID: a re-run of the
    same content) go into the Predecessor Documents Sequence (PS3.3 C.17.2.3).
    """
    sop_instance_uid = context.output_uid(content_digest, "sr", "instance")
    previous = [ds for ds in predecessors if str(ds.SOPInstanceUID) != sop_instance_uid]
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=content,
        series_instance_uid=context.output_uid(content_digest, "sr", "series"),
        series_number=context.sr_series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=context.manufacturer,
        is_complete=True,
        institution_name=context.institution_name,
        series_description=series_description,
        manufacturer_model_name=context.manufacturer_model_name,
        software_versions=context.software_version,
        device_serial_number=context.device_serial_number,
        previous_versions=previous or None,
        coding_schemes=[codes.PRIVATE_CODING_SCHEME],
        specific_character_set=OUTPUT_CHARACTER_SET,
    )


def _check_prior_study(findings: Findings, study_uid: str) -> None:
    """Raise ValueError when the follow-up's prior is of this study (a prior is an earlier study)."""
    prior = findings.followup.prior if findings.followup is not None else None
    if prior is not None and prior.study_instance_uid == study_uid:
        raise ValueError("the prior analysis of the follow-up belongs to this study; a prior is of an earlier study")


def _check_predecessors(predecessors: Sequence[Dataset], study_uid: str) -> None:
    """Raise ValueError unless every predecessor is an SR document (PS3.4 B.5, SR storage classes
    ``1.2.840.10008.5.1.4.1.1.88.*``) of the source study."""
    for ds in predecessors:
        uid = ds.get("SOPInstanceUID")
        if not str(ds.get("SOPClassUID", "")).startswith(_SR_CLASS_ROOT):
            raise ValueError(f"predecessor {uid} is not an SR document (SOP class {ds.get('SOPClassUID')})")
        if str(ds.get("StudyInstanceUID", "")) != study_uid:
            raise ValueError(f"predecessor SR {uid} belongs to another study than the source series")


def build_sr(
    findings: Findings,
    source_headers: Sequence[Dataset],
    context: ReportContext,
    segs: Sequence[Dataset] = (),
    *,
    predecessors: Sequence[Dataset] = (),
) -> hd.sr.Comprehensive3DSR:
    """Build the Comprehensive 3D SR (PS3.3 A.35.13) with a TID 1500 Measurement Report.

    Parameters
    ----------
    findings : Findings
        The analysis to report.
    source_headers : sequence of pydicom.Dataset
        Headers of the analysed CT series (Pixel Data not needed); patient and study data
        come from them and every instance is listed in the Current Requested Procedure
        Evidence Sequence (PS3.3 C.17.2).
    context : ReportContext
        Device identity and output numbering.
    segs : sequence of pydicom.Dataset
        The SEG instances built by :func:`reports.seg.build_segs` from the same findings; a
        region that is a segment of one of them gets a TID 1411 group referencing that instance
        and segment (found by Tracking ID), and every one is listed as evidence.
    predecessors : sequence of pydicom.Dataset
        Earlier SR documents of this series that the new one replaces (keyword-only); those
        with another SOP Instance UID are listed in the Predecessor Documents Sequence.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        A new series of the source study with Series and SOP Instance UIDs derived from
        :func:`reports.identity.analysis_digest` (see :mod:`reports.identity`).

    Raises
    ------
    ValueError
        When the findings or headers are inconsistent (see
        :func:`reports.identity.validate_findings` and
        :func:`reports.identity.index_source_headers`), a densitometry or follow-up number is
        not finite or a zone score out of range, the follow-up's prior is of the source study,
        a SEG belongs to another study or series or two SEGs have a segment of the same region,
        a predecessor is not an SR of the source study, or there is nothing to report (no region
        and no model that ran).
    """
    validate_findings(findings)
    by_uid = index_source_headers(findings, source_headers)
    first = identity_source(findings, by_uid)
    study_uid, series_uid = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    segments = _segments(segs, study_uid, series_uid)
    _check_predecessors(predecessors, study_uid)
    _check_prior_study(findings, study_uid)

    groups: list[Group] = [
        _region_group(name, findings, context, series_uid, segments.get(name)) for name in _region_names(findings)
    ]
    groups += key_slice_groups(findings, by_uid, context, series_uid)
    d = findings.densitometry
    if d is not None:
        groups += zone_groups(findings, d, context, series_uid)
        groups.append(summary_group(findings, d, context, series_uid))
    if findings.followup is not None:
        groups.append(followup_group(findings, findings.followup, context, series_uid))
    groups += [
        _model_group(run, findings, context, series_uid) for run in findings.models.values() if run.status == "ran"
    ]
    if not groups:
        raise ValueError("findings hold no measurement and no model that ran: nothing to report")

    report = MeasurementReport(
        observation_context=_observation_context(context),
        procedure_reported=codes.CT_OF_CHEST,
        imaging_measurements=groups,
    )
    report[0].ContentSequence.append(_report_statements(findings))

    evidence = evidence_headers([first] + [ds for uid, ds in by_uid.items() if uid != first.SOPInstanceUID])
    evidence.extend(segs)
    prior_sr = prior_sr_reference(findings.followup)
    if prior_sr is not None:
        evidence.append(prior_sr)  # another study: highdicom files it under Pertinent Other Evidence
    description = SR_UNVALIDATED_SERIES_DESCRIPTION if banner_text(findings) else SR_SERIES_DESCRIPTION
    return _document(evidence, report, context, analysis_digest(findings, first), description, predecessors)


def build_not_analysable_sr(
    source_headers: Sequence[Dataset],
    context: ReportContext,
    reasons: Sequence[str],
    pipeline_version: str,
    *,
    predecessors: Sequence[Dataset] = (),
) -> hd.sr.Comprehensive3DSR:
    """Build the SR saying that a series routed for analysis could not be analysed, and why.

    The TID 1500 report holds no measurement group, only the "Qualitative Evaluations"
    container: the coded statement "Analysis status" = "Series not analysable, no results",
    each reason as text, what the software is and the pipeline version.  Every source
    instance is listed as evidence, so PACS shows that the scan was seen.

    Parameters
    ----------
    source_headers : sequence of pydicom.Dataset
        Headers of the series (Pixel Data not needed, and may be unreadable).
    context : ReportContext
        Device identity and output numbering.
    reasons : sequence of str
        Why the series could not be analysed, in words (at least one).
    pipeline_version : str
        Pipeline version of the job; with the source instances and the reasons it fixes the
        UIDs (:func:`reports.identity.not_analysable_digest`).
    predecessors : sequence of pydicom.Dataset
        Earlier SR documents of this series that the new one replaces (keyword-only).

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        The SR in a new series of the source study.

    Raises
    ------
    TypeError, ValueError
        When the headers are not one series of one patient and study, there is no reason or a
        blank one, the pipeline version is empty, or a predecessor is not an SR of the study.
    """
    checked = check_reasons(reasons)
    if not pipeline_version:
        raise ValueError("pipeline_version must not be empty")
    by_uid = check_source_series(source_headers)
    first = source_headers[0]
    _check_predecessors(predecessors, str(first.StudyInstanceUID))

    items: list[ContentItem] = [
        code_item(codes.ANALYSIS_STATUS, codes.NOT_ANALYSABLE),
        text_item(codes.DECISION_SUPPORT, codes.NOT_ANALYSABLE_STATEMENT),
        *(text_item(codes.NOT_ANALYSABLE_REASON, reason) for reason in checked),
        text_item(codes.DECISION_SUPPORT, codes.SOFTWARE_STATEMENT),
        text_item(codes.DECISION_SUPPORT, f"lungcds pipeline version {pipeline_version}"),
    ]
    root = ContainerContentItem(name=dcm_codes.cid7021.ImagingMeasurementReport, template_id="1500")
    root.ContentSequence = ContentSequence()
    root.ContentSequence.extend(LanguageOfContentItemAndDescendants(CodedConcept.from_code(codes.LANGUAGE_EN_US)))
    root.ContentSequence.extend(_observation_context(context))
    root.ContentSequence.append(
        CodeContentItem(
            name=dcm_codes.DCM.ProcedureReported,
            value=codes.CT_OF_CHEST,
            relationship_type=RelationshipTypeValues.HAS_CONCEPT_MOD,
        )
    )
    root.ContentSequence.append(_qualitative_container(items))
    evidence = evidence_headers([first] + [ds for uid, ds in by_uid.items() if uid != first.SOPInstanceUID])
    return _document(
        evidence,
        ContentSequence([root], is_root=True),
        context,
        not_analysable_digest(source_headers, checked, pipeline_version),
        NOT_ANALYSABLE_SERIES_DESCRIPTION,
        predecessors,
    )
