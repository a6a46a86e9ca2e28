"""Comprehensive 3D SR with a TID 1500 Measurement Report of one lungcds analysis.

The document (PS3.3 A.35.13, Comprehensive 3D SR IOD) is built only from highdicom's
templates (PS3.16 Annex A):

* TID 1500 Measurement Report, with TID 1001 Observation Context naming the lungcds device
  (TID 1002/1004) and "Computed tomography of chest" as procedure reported;
* one measurement group per region of ``Findings.measurements``: TID 1411 Volumetric ROI
  Measurements referencing the region's segment when a SEG is given (tracking UID shared with
  the segment), else TID 1501; each with TID 4108 tracking identifier = region name, finding
  site (SNOMED CT), TID 4019 algorithm identification and TID 300 measurements in UCUM units;
* one TID 1501 group per model output (CO-RADS, STOIC2021, I3Dr per patient and lobe, CT
  severity per lobe), each naming its model and, if unvalidated, saying so.

Two rows that highdicom 0.28 does not model are added with highdicom's own content-item
classes: free-text qualitative evaluations inside a group (TID 1501 row 12 and the matching
TID 1411 row), used for measurements that could not be computed and for UNVALIDATED
statements; and the report-level "Qualitative Evaluations" container (TID 1500 rows 12-14),
which holds the decision-support statement, every model's status and pipeline warnings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import highdicom as hd
from highdicom.sr import (
    AlgorithmIdentification,
    ContainerContentItem,
    ContentSequence,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    QualitativeEvaluation,
    ReferencedSegment,
    RelationshipTypeValues,
    SourceSeriesForSegmentation,
    TextContentItem,
    TrackingIdentifier,
    VolumetricROIMeasurementsAndQualitativeEvaluations,
)
from pydicom import Dataset
from pydicom.sr.codedict import codes as dcm_codes
from pydicom.sr.coding import Code
from pydicom.uid import SegmentationStorage

from models.findings import LOBE_NAMES, REGION_NAMES, Findings, RegionMeasurements
from reports import codes
from reports.identity import (
    OUTPUT_CHARACTER_SET,
    ProvenanceRecord,
    ReportContext,
    evidence_headers,
    index_source_headers,
    model_statement,
    output_provenance,
    unvalidated_statement,
    validate_findings,
)

__all__ = ["SR_SERIES_DESCRIPTION", "build_sr"]

#: Series Description (0008,103E) of the SR series.
SR_SERIES_DESCRIPTION = "lungcds measurements (decision support)"

_Group = VolumetricROIMeasurementsAndQualitativeEvaluations | MeasurementsAndQualitativeEvaluations


class _RegionMeasurement(NamedTuple):
    """How one field of :class:`RegionMeasurements` becomes a TID 300 measurement."""

    attribute: str
    label: str
    concept: Code
    unit: Code
    method: Code | None
    derivation: Code | None


_REGION_MEASUREMENTS: tuple[_RegionMeasurement, ...] = (
    _RegionMeasurement("volume_ml", "Volume", codes.VOLUME, codes.UCUM_MILLILITER, codes.SUM_OF_SEGMENTED_VOXELS, None),
    _RegionMeasurement(
        "fpv_ml",
        "Functional volume (-950 to -500 HU)",
        codes.FUNCTIONAL_LUNG_VOLUME,
        codes.UCUM_MILLILITER,
        codes.SUM_OF_SEGMENTED_VOXELS,
        None,
    ),
    _RegionMeasurement(
        "laa950_pct", "Volume fraction below -950 HU", codes.LOW_ATTENUATION_AREA_950, codes.UCUM_PERCENT, None, None
    ),
    _RegionMeasurement(
        "perc15_hu",
        "15th percentile of attenuation",
        codes.PERCENTILE_15_ATTENUATION,
        codes.UCUM_HOUNSFIELD_UNIT,
        None,
        None,
    ),
    _RegionMeasurement(
        "mean_hu", "Mean attenuation", codes.ATTENUATION_COEFFICIENT, codes.UCUM_HOUNSFIELD_UNIT, None, codes.MEAN
    ),
    _RegionMeasurement(
        "haa_pct", "High attenuation area fraction", codes.HIGH_ATTENUATION_AREA, codes.UCUM_PERCENT, None, None
    ),
)


def _text(name: Code, value: str) -> TextContentItem:
    """A free-text qualitative evaluation (TID 1501 row 12, TID 1500 row 14)."""
    return TextContentItem(name=name, value=value, relationship_type=RelationshipTypeValues.CONTAINS)


def _add_texts(group: _Group, items: Sequence[TextContentItem]) -> None:
    """Append free-text qualitative evaluations to the container of a measurement group."""
    if items:
        group[0].ContentSequence.extend(items)


def _segment_numbers(seg: Dataset, study_uid: str, series_uid: str) -> dict[str, int]:
    """Segment numbers of ``seg`` by Segment Label (PS3.3 C.8.20.2), after checking that the
    SEG is a Segmentation of the same study derived from the source series."""
    if seg.get("SOPClassUID") != SegmentationStorage:
        raise ValueError(f"seg must be a Segmentation Storage instance, got SOP class {seg.get('SOPClassUID')}")
    if seg.get("StudyInstanceUID") != study_uid:
        raise ValueError("seg belongs to another study than the source series")
    referenced = {str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])}
    if series_uid not in referenced:
        raise ValueError("seg does not reference the source series")
    return {str(item.SegmentLabel): int(item.SegmentNumber) for item in seg.SegmentSequence}


def _mask_algorithm(region: str, version: str, context: ReportContext) -> AlgorithmIdentification:
    """TID 4019 for the mask that defines a region."""
    if region in LOBE_NAMES:
        name = codes.LOBE_MASK_ALGORITHM
    elif region in REGION_NAMES:
        name = codes.LUNG_MASK_ALGORITHM
    else:
        name = codes.LESION_MASK_ALGORITHM
    return AlgorithmIdentification(name=name, version=version, manufacturer=context.manufacturer)


def _region_group(
    m: RegionMeasurements,
    findings: Findings,
    context: ReportContext,
    series_uid: str,
    seg: Dataset | None,
    segment_numbers: dict[str, int],
) -> _Group:
    """Measurement group of one region (TID 1411 with a segment reference, else TID 1501)."""
    version = findings.pipeline_version
    densitometry = AlgorithmIdentification(
        name=codes.DENSITOMETRY_ALGORITHM, version=version, manufacturer=context.manufacturer
    )
    fpv_algorithm = AlgorithmIdentification(
        name=codes.DENSITOMETRY_ALGORITHM,
        version=version,
        manufacturer=context.manufacturer,
        parameters=[f"attenuation range {codes.FPV_RANGE_HU[0]} to {codes.FPV_RANGE_HU[1]} HU inclusive"],
    )
    measurements: list[Measurement] = []
    missing: list[TextContentItem] = []
    for spec in _REGION_MEASUREMENTS:
        value = getattr(m, spec.attribute)
        if value is None:
            reason = m.note or "not computed"
            missing.append(_text(codes.MEASUREMENT_NOT_AVAILABLE, f"{spec.label}: {reason}"))
            continue
        measurements.append(
            Measurement(
                name=spec.concept,
                value=float(value),
                unit=spec.unit,
                method=spec.method,
                derivation=spec.derivation,
                algorithm_id=fpv_algorithm if spec.attribute == "fpv_ml" else densitometry,
            )
        )
    tracking = TrackingIdentifier(uid=context.tracking_uid(series_uid, version, m.region), identifier=m.region)
    site = codes.REGION_CODES.get(m.region)
    category = codes.ANATOMICAL_STRUCTURE if site is not None else codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE
    sites = [FindingSite(site)] if site is not None else None
    group: _Group
    if seg is not None and m.region in segment_numbers:
        group = VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_segment=ReferencedSegment(
                sop_class_uid=seg.SOPClassUID,
                sop_instance_uid=seg.SOPInstanceUID,
                segment_number=segment_numbers[m.region],
                source_series=SourceSeriesForSegmentation(series_uid),
            ),
            finding_category=category,
            finding_type=site or codes.LESION,
            finding_sites=sites,
            algorithm_id=_mask_algorithm(m.region, version, context),
            measurements=measurements,
        )
    else:
        group = MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            finding_category=category,
            finding_type=site or codes.LESION,
            finding_sites=sites,
            algorithm_id=_mask_algorithm(m.region, version, context),
            measurements=measurements,
        )
    _add_texts(group, missing)
    return group


def _model_group(
    record: ProvenanceRecord,
    tracking_name: str,
    context: ReportContext,
    series_uid: str,
    pipeline_version: str,
    site: Code,
    measurements: Sequence[tuple[Code, float, Code]],
    evaluations: Sequence[QualitativeEvaluation] = (),
) -> MeasurementsAndQualitativeEvaluations:
    """TID 1501 group carrying the outputs of one model at one site, with its provenance."""
    sha = record.run.weights_sha256 if record.run is not None else None
    algorithm = AlgorithmIdentification(
        name=record.algorithm_name,
        version=record.algorithm_version,
        parameters=[f"weights SHA-256 {sha}"] if sha else None,
        family=codes.ARTIFICIAL_INTELLIGENCE,
    )
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=context.tracking_uid(series_uid, pipeline_version, tracking_name), identifier=tracking_name
        ),
        finding_sites=[FindingSite(site)],
        algorithm_id=algorithm,
        measurements=[
            Measurement(name=concept, value=float(value), unit=unit, algorithm_id=algorithm)
            for concept, value, unit in measurements
        ],
        qualitative_evaluations=list(evaluations) or None,
    )
    statement = record.statement
    if statement is not None:
        _add_texts(group, [_text(codes.OUTPUT_VALIDATION_STATUS, statement)])
    return group


def _output_groups(
    findings: Findings, context: ReportContext, series_uid: str
) -> list[MeasurementsAndQualitativeEvaluations]:
    """Groups for CO-RADS, STOIC2021, I3Dr and CT severity outputs that are present."""
    provenance = output_provenance(findings)
    version = findings.pipeline_version
    lungs = codes.REGION_CODES["lungs"]
    groups: list[MeasurementsAndQualitativeEvaluations] = []
    if findings.corads is not None:
        groups.append(
            _model_group(
                provenance["corads"],
                "corads",
                context,
                series_uid,
                version,
                lungs,
                [(codes.CORADS_SCORE, findings.corads.score, codes.UCUM_NO_UNITS)],
                [QualitativeEvaluation(codes.CORADS_CATEGORY, codes.CORADS_CATEGORY_VALUES[findings.corads.category])],
            )
        )
    if findings.stoic is not None:
        groups.append(
            _model_group(
                provenance["stoic"],
                "stoic",
                context,
                series_uid,
                version,
                lungs,
                [
                    (codes.PROBABILITY_COVID19, findings.stoic.p_covid, codes.UCUM_NO_UNITS),
                    (codes.PROBABILITY_SEVERE_OUTCOME, findings.stoic.p_severe, codes.UCUM_NO_UNITS),
                ],
            )
        )
    if findings.i3dr is not None:
        sites = [("patient", lungs, findings.i3dr.patient)] + [
            (lobe, codes.REGION_CODES[lobe], findings.i3dr.lobes[lobe])
            for lobe in LOBE_NAMES
            if lobe in findings.i3dr.lobes
        ]
        for name, site, values in sites:
            if not values:
                continue
            groups.append(
                _model_group(
                    provenance["i3dr"],
                    f"i3dr {name}",
                    context,
                    series_uid,
                    version,
                    site,
                    [
                        (codes.I3DR_OUTPUT_CODES[key], values[key], codes.I3DR_OUTPUT_UNITS[key])
                        for key in codes.I3DR_OUTPUT_CODES
                        if key in values
                    ],
                )
            )
    if findings.severity is not None:
        for lobe in LOBE_NAMES:
            if lobe not in findings.severity.lobes:
                continue
            values = findings.severity.lobes[lobe]
            groups.append(
                _model_group(
                    provenance["severity"],
                    f"severity {lobe}",
                    context,
                    series_uid,
                    version,
                    codes.REGION_CODES[lobe],
                    [
                        (codes.LOBE_INVOLVEMENT, values["involvement_pct"], codes.UCUM_PERCENT),
                        (codes.CT_SEVERITY_SCORE, values["ctss"], codes.UCUM_NO_UNITS),
                    ],
                )
            )
        groups.append(
            _model_group(
                provenance["severity"],
                "severity total",
                context,
                series_uid,
                version,
                lungs,
                [(codes.CT_SEVERITY_SCORE, findings.severity.total_ctss, codes.UCUM_NO_UNITS)],
            )
        )
    return groups


def _report_statements(findings: Findings) -> ContainerContentItem:
    """TID 1500 row 12 "Qualitative Evaluations" with the statements about the whole report."""
    items = [
        _text(codes.DECISION_SUPPORT, codes.DECISION_SUPPORT_STATEMENT),
        _text(codes.DECISION_SUPPORT, codes.WEIGHT_FREE_STATEMENT),
    ]
    for run in findings.models.values():
        items.append(_text(codes.MODEL_RUN_STATUS, model_statement(run)))
        caveat = unvalidated_statement(run)
        if caveat is not None:
            items.append(_text(codes.OUTPUT_VALIDATION_STATUS, f"{run.name}: {caveat}"))
    for record in output_provenance(findings).values():
        if record.run is None and record.statement is not None:
            items.append(_text(codes.OUTPUT_VALIDATION_STATUS, f"{record.output}: {record.statement}"))
    items.extend(_text(codes.PIPELINE_WARNING, warning) for warning in findings.warnings)
    container = ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS, relationship_type=RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = ContentSequence(items)
    return container


def build_sr(
    findings: Findings,
    source_headers: Sequence[Dataset],
    context: ReportContext,
    seg: Dataset | None = None,
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
    seg : pydicom.Dataset or None
        The SEG built by :func:`reports.seg.build_seg` from the same findings; when given,
        region groups become TID 1411 groups referencing its segments by label.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        A new series of the source study with deterministic Series and SOP Instance UIDs.

    Raises
    ------
    ValueError
        When the findings or headers are inconsistent (see
        :func:`reports.identity.validate_findings` and
        :func:`reports.identity.index_source_headers`), ``seg`` belongs to another study or
        series, or there is nothing to report (no measurement and no model output).
    """
    validate_findings(findings)
    by_uid = index_source_headers(findings, source_headers)
    first = by_uid[findings.volume.source_sop_instance_uids[0]]
    study_uid, series_uid = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    segment_numbers = _segment_numbers(seg, study_uid, series_uid) if seg is not None else {}

    ordered = [name for name in REGION_NAMES if name in findings.measurements]
    ordered += sorted(name for name in findings.measurements if name not in REGION_NAMES)
    groups: list[_Group] = [
        _region_group(findings.measurements[name], findings, context, series_uid, seg, segment_numbers)
        for name in ordered
    ]
    groups += _output_groups(findings, context, series_uid)
    if not groups:
        raise ValueError("findings hold no measurement and no model output: nothing to report")

    observer = ObserverContext(
        observer_type=dcm_codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=context.device_observer_uid,
            name=context.station_name,
            manufacturer_name=context.manufacturer,
            model_name=context.manufacturer_model_name,
            serial_number=context.device_serial_number,
        ),
    )
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=codes.CT_OF_CHEST,
        imaging_measurements=groups,
    )
    report[0].ContentSequence.append(_report_statements(findings))

    evidence = evidence_headers([first] + [ds for uid, ds in by_uid.items() if uid != first.SOPInstanceUID])
    if seg is not None:
        evidence.append(seg)
    version = findings.pipeline_version
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=context.output_uid(series_uid, version, "sr", "series"),
        series_number=context.sr_series_number,
        sop_instance_uid=context.output_uid(series_uid, version, "sr", "instance"),
        instance_number=1,
        manufacturer=context.manufacturer,
        is_complete=True,
        institution_name=context.institution_name,
        series_description=SR_SERIES_DESCRIPTION,
        manufacturer_model_name=context.manufacturer_model_name,
        software_versions=context.software_version,
        device_serial_number=context.device_serial_number,
        coding_schemes=[codes.PRIVATE_CODING_SCHEME],
        specific_character_set=OUTPUT_CHARACTER_SET,
    )
