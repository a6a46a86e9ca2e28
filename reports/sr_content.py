"""Building blocks of the measurement groups of the lungcds SR (TID 1500).

:mod:`reports.sr` builds the region and model groups and assembles the document;
:mod:`reports.sr_quantitative` builds the weight-free zone, summary and follow-up groups.  Both
make their groups from the pieces here, so that every group states provenance, rounding, missing
values and its algorithm the same way: free-text and coded content items, the TID 4019 of a model
run, the collected content of one group (:class:`GroupContent`, which adds the coded provenance and
the UNVALIDATED statement of each contribution), the TID 4108 tracking identifier, and the TID 300
densitometry of one region.  Imports flow one way: ``sr`` -> ``sr_quantitative`` -> ``sr_content``.

highdicom 0.28 does not model free-text qualitative evaluations inside a group (TID 1501 row 12 /
TID 1411 row 15); :func:`add_texts` appends them with highdicom's own content-item classes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from highdicom.sr import (
    AlgorithmIdentification,
    CodeContentItem,
    DeviceObserverIdentifyingAttributes,
    Measurement,
    MeasurementsAndQualitativeEvaluations,
    ObserverContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    RelationshipTypeValues,
    TextContentItem,
    TrackingIdentifier,
    VolumetricROIMeasurementsAndQualitativeEvaluations,
)
from pydicom.sr.codedict import codes as dcm_codes
from pydicom.sr.coding import Code

from models.findings import DENSITY_BAND_LABELS, DENSITY_BANDS, UNVALIDATED_STATEMENTS, ModelRun, RegionMeasurements
from reports import codes
from reports.identity import ReportContext
from reports.precision import PRECISION

__all__ = [
    "REGION_MEASUREMENTS",
    "Group",
    "GroupContent",
    "RegionMeasurement",
    "add_texts",
    "code_item",
    "device_observer",
    "on_mask",
    "region_densitometry",
    "rounded",
    "run_algorithm",
    "text_item",
    "tracking_identifier",
]


def device_observer(context: ReportContext) -> ObserverContext:
    """The lungcds device as observer (TID 1002 with TID 1004), the same in the SR and the KOS."""
    return ObserverContext(
        observer_type=dcm_codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=context.device_observer_uid,
            name=context.station_name,
            manufacturer_name=context.manufacturer,
            model_name=context.manufacturer_model_name,
            serial_number=context.device_serial_number,
        ),
    )


#: A measurement group of the report: TID 1411 (referencing a SEG segment) or TID 1501.
Group = (
    VolumetricROIMeasurementsAndQualitativeEvaluations
    | PlanarROIMeasurementsAndQualitativeEvaluations
    | MeasurementsAndQualitativeEvaluations
)


class RegionMeasurement(NamedTuple):
    """How one field of :class:`RegionMeasurements` becomes a TID 300 measurement (``digits``: the
    decimals it is rounded to where a group rounds, :data:`reports.precision.PRECISION`)."""

    attribute: str
    label: str
    concept: Code
    unit: Code
    method: Code | None
    derivation: Code | None
    digits: int


REGION_MEASUREMENTS: tuple[RegionMeasurement, ...] = (
    RegionMeasurement(
        "volume_ml", "Volume", codes.VOLUME, codes.UCUM_MILLILITER, codes.SUM_OF_SEGMENTED_VOXELS, None, 0
    ),
    RegionMeasurement(
        "fpv_ml",
        "Functional volume (-950 to -500 HU)",
        codes.FUNCTIONAL_LUNG_VOLUME,
        codes.UCUM_MILLILITER,
        codes.SUM_OF_SEGMENTED_VOXELS,
        None,
        0,
    ),
    RegionMeasurement(
        "laa950_pct", "Volume fraction below -950 HU", codes.LOW_ATTENUATION_AREA_950, codes.UCUM_PERCENT, None, None, 1
    ),
    RegionMeasurement(
        "perc15_hu",
        "15th percentile of attenuation",
        codes.PERCENTILE_15_ATTENUATION,
        codes.UCUM_HOUNSFIELD_UNIT,
        None,
        None,
        0,
    ),
    RegionMeasurement(
        "mean_hu", "Mean attenuation", codes.ATTENUATION_COEFFICIENT, codes.UCUM_HOUNSFIELD_UNIT, None, codes.MEAN, 0
    ),
    RegionMeasurement(
        "haa_pct", "High attenuation area fraction", codes.HIGH_ATTENUATION_AREA, codes.UCUM_PERCENT, None, None, 1
    ),
)


def text_item(name: Code, value: str) -> TextContentItem:
    """A free-text qualitative evaluation (TID 1501 row 12, TID 1500 row 14)."""
    return TextContentItem(name=name, value=value, relationship_type=RelationshipTypeValues.CONTAINS)


def code_item(name: Code, value: Code) -> CodeContentItem:
    """A coded qualitative evaluation (TID 1500 row 13)."""
    return CodeContentItem(name=name, value=value, relationship_type=RelationshipTypeValues.CONTAINS)


def add_texts(group: Group, items: Sequence[TextContentItem]) -> None:
    """Append free-text qualitative evaluations to the container of a measurement group."""
    if items:
        group[0].ContentSequence.extend(items)


def run_algorithm(run: ModelRun) -> AlgorithmIdentification:
    """TID 4019 of a model run: name, version and, as parameters, its provenance in words, the weights
    SHA-256 and origin when installed, the runs it combines; family Artificial Intelligence when learned."""
    parameters = []
    if run.provenance is not None:
        parameters.append(f"provenance: {run.provenance_words}")
    if run.weights_sha256:
        parameters.append(f"weights SHA-256 {run.weights_sha256}")
    if run.weights_origin:
        parameters.append(f"weights {run.weights_origin}")
    if run.inputs:
        parameters.append(f"computed from {', '.join(run.inputs)}")
    learned = run.provenance is not None and run.provenance != "weight_free"
    return AlgorithmIdentification(
        name=run.name,
        version=run.version,
        parameters=parameters or None,
        family=codes.ARTIFICIAL_INTELLIGENCE if learned else None,
    )


def rounded(value: float, digits: int | None) -> float:
    """``value`` rounded to ``digits`` decimals (``reports.precision.PRECISION``); unchanged for None."""
    return float(value) if digits is None else float(round(float(value), digits))


@dataclass
class GroupContent:
    """Measurements and evaluations collected for one measurement group."""

    measurements: list[Measurement] = field(default_factory=list)
    coded: list[QualitativeEvaluation] = field(default_factory=list)
    texts: list[TextContentItem] = field(default_factory=list)
    provenances: set[str] = field(default_factory=set)
    caveats: set[str] = field(default_factory=set)

    def measure(
        self,
        concept: Code,
        value: float,
        unit: Code,
        algorithm: AlgorithmIdentification,
        digits: int | None = None,
        *,
        method: Code | None = None,
        derivation: Code | None = None,
    ) -> None:
        """A TID 300 measurement of ``value`` in ``unit``, rounded to ``digits`` decimals (:func:`rounded`),
        made by ``algorithm``."""
        self.measurements.append(
            Measurement(
                name=concept,
                value=rounded(value, digits),
                unit=unit,
                method=method,
                derivation=derivation,
                algorithm_id=algorithm,
            )
        )

    def provenance(self, who: str, run: ModelRun) -> None:
        """The coded provenance of a contribution of ``run`` (once per provenance) and, when it is
        unvalidated, the worded UNVALIDATED statement (once per contributor)."""
        key = run.provenance
        if key is None:
            return
        if key not in self.provenances:
            self.provenances.add(key)
            self.coded.append(QualitativeEvaluation(codes.OUTPUT_VALIDATION_STATUS, codes.VALIDATION_VALUES[key]))
        statement = UNVALIDATED_STATEMENTS.get(key)
        sentence = f"{who}: {statement}"
        if statement is not None and sentence not in self.caveats:
            self.caveats.add(sentence)
            self.texts.append(text_item(codes.OUTPUT_VALIDATION_STATUS, sentence))

    def withheld(self, reasons: Iterable[str]) -> None:
        """The reasons of withheld values, as text (the values themselves are not reported)."""
        self.texts += [text_item(codes.VALUE_WITHHELD, reason) for reason in reasons]


def on_mask(mask: ModelRun) -> str:
    """The algorithm parameter that names the mask a measurement was made on, with its provenance."""
    return f"on the mask of model {mask.name} ({mask.provenance_words})"


def tracking_identifier(context: ReportContext, series_uid: str, version: str, name: str) -> TrackingIdentifier:
    """TID 4108 of a group: identifier ``name`` and the UID derived from it (:mod:`reports.identity`)."""
    return TrackingIdentifier(uid=context.tracking_uid(series_uid, version, name), identifier=name)


def region_densitometry(
    m: RegionMeasurements,
    mask: ModelRun,
    version: str,
    context: ReportContext,
    content: GroupContent,
) -> None:
    """TID 300 measurements of one region's densitometry, whose algorithm names the mask's model
    and provenance (a lobe's numbers are no more validated than its learned mask).

    Every value is rounded to its clinically meaningful precision (:data:`reports.precision.PRECISION`:
    volumes to 1 mL, percentages to 0.1, attenuation to 1 HU, mass to 1 g), as the PDF prints it.
    They are reported when the region carries them (``density_bands`` not empty); a missing value is stated in words.
    """
    mask_parameters = [on_mask(mask)]
    densitometry = AlgorithmIdentification(
        name=codes.DENSITOMETRY_ALGORITHM,
        version=version,
        manufacturer=context.manufacturer,
        parameters=mask_parameters,
    )
    fpv_algorithm = AlgorithmIdentification(
        name=codes.DENSITOMETRY_ALGORITHM,
        version=version,
        manufacturer=context.manufacturer,
        parameters=[
            *mask_parameters,
            f"attenuation range {codes.FPV_RANGE_HU[0]} to {codes.FPV_RANGE_HU[1]} HU inclusive",
        ],
    )
    why = m.note or "not computed"
    for spec in REGION_MEASUREMENTS:
        value = getattr(m, spec.attribute)
        if value is None:
            content.texts.append(text_item(codes.MEASUREMENT_NOT_AVAILABLE, f"{spec.label}: {why}"))
            continue
        content.measure(
            spec.concept,
            value,
            spec.unit,
            fpv_algorithm if spec.attribute == "fpv_ml" else densitometry,
            spec.digits,
            method=spec.method,
            derivation=spec.derivation,
        )
    for band in DENSITY_BANDS:
        share = m.density_bands.get(band)
        if share is None:
            continue
        label = DENSITY_BAND_LABELS[band]
        content.measure(
            codes.DENSITY_BAND_VOLUME_CODES[band],
            share.volume_ml,
            codes.UCUM_MILLILITER,
            densitometry,
            PRECISION["volume"],
            method=codes.SUM_OF_SEGMENTED_VOXELS,
        )
        if share.pct is None:
            content.texts.append(text_item(codes.MEASUREMENT_NOT_AVAILABLE, f"Percent of region, {label}: {why}"))
            continue
        content.measure(
            codes.DENSITY_BAND_PERCENT_CODES[band], share.pct, codes.UCUM_PERCENT, densitometry, PRECISION["percent"]
        )
    if m.mass_g is not None:
        content.measure(codes.TISSUE_MASS, m.mass_g, codes.UCUM_GRAM, densitometry, PRECISION["mass"])
    elif m.density_bands:
        content.texts.append(text_item(codes.MEASUREMENT_NOT_AVAILABLE, f"{codes.TISSUE_MASS.meaning}: {why}"))
