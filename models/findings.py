"""The contract between compute (``models``) and the report writers (``reports``).

Everything here is a frozen dataclass of numpy arrays, plain numbers and strings: no pydicom,
no torch.  ``reports`` imports only this module, so whatever a report shows must be carried
here, with enough provenance (model name, version, weight hash, validation status) that a
report can never present an unvalidated number as a clinical result.

Array convention: every volume and mask is indexed ``[slice, row, column]`` (z, y, x) in the
order of the source series after sorting slices along the slice normal, so that index ``k``
corresponds to ``Volume.source_sop_instance_uids[k]``.

Provenance: every :class:`ModelRun` that ran names exactly one :data:`Provenance` -- a
weight-free method, generated (demonstration) weights, installed weights with a validation
statement, or installed weights without one -- set where the run happened (the pipeline) and
carried unchanged to result.json, SR, SEG and PDF.  Nothing downstream infers it (for example
from whether a weights hash is present).  A learned number that the plausibility gate
(:mod:`models.plausibility`) withheld is absent from its result and listed in
:attr:`Findings.withheld` with the reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Literal, get_args

import numpy as np

__all__ = [
    "DENSITY_BANDS",
    "DENSITY_BAND_LABELS",
    "DENSITY_BAND_RANGES_HU",
    "HEADLINE_KEYS",
    "LOBE_NAMES",
    "LUNG_REGIONS",
    "REGION_NAMES",
    "LESION_NAMES",
    "MODEL_OUTPUTS",
    "PROVENANCE_WORDS",
    "REGION_LABELS",
    "RIND_THICKNESS_MM",
    "SHELL_NAMES",
    "UNVALIDATED_STATEMENTS",
    "ZONE_NAMES",
    "ZONE_REGIONS",
    "Acquisition",
    "AcquisitionHeader",
    "BandVolume",
    "Change",
    "FollowUp",
    "PriorAnalysis",
    "Densitometry",
    "EmphysemaDetail",
    "Provenance",
    "QualityAssessment",
    "CoradsResult",
    "Findings",
    "Geometry",
    "I3drResult",
    "ModelRun",
    "ModelStatus",
    "RegionMeasurements",
    "SeverityResult",
    "StoicResult",
    "Volume",
    "Withheld",
    "WithheldOutput",
    "ZoneMap",
    "ZoneScore",
    "least_trusted",
]

#: Whole-lung regions, always present when a lung mask exists.
LUNG_REGIONS: tuple[str, ...] = ("lungs", "lung_left", "lung_right")
#: The five lobes (left upper/lower, right upper/middle/lower).
LOBE_NAMES: tuple[str, ...] = ("LUL", "LLL", "RUL", "RML", "RLL")
#: Region names used everywhere: result.json, SR tracking identifiers, PDF tables.
REGION_NAMES: tuple[str, ...] = LUNG_REGIONS + LOBE_NAMES
#: Weight-free zones: the upper, middle and lower third of the right (R) and left (L) lung, each
#: lung cut at equal thirds of its own cranio-caudal extent (:mod:`models.qct.zones`).
ZONE_NAMES: tuple[str, ...] = ("RU", "RM", "RL", "LU", "LM", "LL")
#: The peripheral rind (the outer :data:`RIND_THICKNESS_MM` of both lungs together) and the core inside it.
SHELL_NAMES: tuple[str, ...] = ("core", "rind")
#: Every weight-free zone region, measured like a lung (``Densitometry.regions``), in this order.
ZONE_REGIONS: tuple[str, ...] = ZONE_NAMES + SHELL_NAMES
#: Thickness of the peripheral rind, mm: "subpleural" in the usual sense of within about 1 cm of the
#: pleura (a convention, not a measured standard; :mod:`models.qct.zones` says how it is measured).
RIND_THICKNESS_MM = 10.0
#: Lesion masks: all infectious opacities, and the two kinds when a model separates them.
LESION_NAMES: tuple[str, ...] = ("lesions", "ggo", "consolidation")
#: Words for the region names, for everything a person reads (PDF, reasons, SEG labels).
REGION_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "lungs": "Lungs",
        "lung_left": "Left lung",
        "lung_right": "Right lung",
        "LUL": "Left upper lobe",
        "LLL": "Left lower lobe",
        "RUL": "Right upper lobe",
        "RML": "Right middle lobe",
        "RLL": "Right lower lobe",
        "RU": "Right upper zone",
        "RM": "Right middle zone",
        "RL": "Right lower zone",
        "LU": "Left upper zone",
        "LM": "Left middle zone",
        "LL": "Left lower zone",
        "core": f"Central core (deeper than {RIND_THICKNESS_MM:g} mm)",
        "rind": f"Peripheral rind (outer {RIND_THICKNESS_MM:g} mm)",
    }
)
#: Density bands of lung parenchyma, in HU order; every voxel of a region is in exactly one.
DENSITY_BANDS: tuple[str, ...] = ("emphysema", "well_aerated", "poorly_aerated", "non_aerated", "other")
#: Each band's HU range ``[low, high)`` (None: unbounded; a voxel at an edge belongs to the band
#: above it).  The scheme is this project's, assembled from published edges, not one paper's:
#: -950 HU, the usual low-attenuation (emphysema) threshold, the same as ``laa950_pct``;
#: -950 to -700 HU, well-aerated lung as quantified by Colombi et al., Radiology 2020;296:E86-E96;
#: -250 HU, the upper end of the high-attenuation area (-600 to -250 HU) of ``haa_pct``;
#: +100 HU, the upper end of non-aerated ("non-inflated", -100 to +100 HU) tissue in the CT lung
#: compartments of Gattinoni's group (e.g. Cressoni et al., "Limits of normality of quantitative
#: thoracic CT analysis", Crit Care 2013).
DENSITY_BAND_RANGES_HU: Mapping[str, tuple[float | None, float | None]] = MappingProxyType(
    {
        "emphysema": (None, -950.0),
        "well_aerated": (-950.0, -700.0),
        "poorly_aerated": (-700.0, -250.0),
        "non_aerated": (-250.0, 100.0),
        "other": (100.0, None),
    }
)
#: Words for the density bands (what a person reads).
DENSITY_BAND_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "emphysema": "Low attenuation, emphysema-like (below -950 HU)",
        "well_aerated": "Well aerated (-950 to -700 HU)",
        "poorly_aerated": "Poorly aerated, ground-glass density (-700 to -250 HU)",
        "non_aerated": "Non-aerated, consolidation density (-250 to +100 HU)",
        "other": "Above +100 HU (contrast-enhanced blood, calcification; not parenchyma)",
    }
)
#: The weight-free numbers of both lungs that page 1 of the report and the follow-up comparison use
#: (result.json ``headline``, :meth:`Findings.headline`).
HEADLINE_KEYS: tuple[str, ...] = (
    "lung_volume_ml",
    "well_aerated_pct",
    "zone_score_total",
    "laa950_pct",
    "perc15_hu",
    "lung_mass_g",
)
#: Outputs of :class:`Findings` that come from a model; each one's run is ``Findings.models[output]``.
MODEL_OUTPUTS: tuple[str, ...] = ("corads", "stoic", "i3dr", "severity")

#: Where the numbers of a model run come from, from the least to the most trusted:
#: generated (demonstration) weights, installed weights without a validation statement,
#: installed weights with one, a weight-free method.
Provenance = Literal["generated_weights", "installed_unvalidated", "installed_validated", "weight_free"]
_TRUST_ORDER: tuple[Provenance, ...] = get_args(Provenance)
#: Provenances whose outputs are not marked UNVALIDATED.
_VALIDATED: frozenset[str] = frozenset({"installed_validated", "weight_free"})
#: Each provenance in words.
PROVENANCE_WORDS: Mapping[str, str] = MappingProxyType(
    {
        "weight_free": "weight-free method (no trained weights)",
        "generated_weights": "generated demonstration weights",
        "installed_validated": "installed weights with a validation statement",
        "installed_unvalidated": "installed weights without a validation statement",
    }
)
#: The statement every output of an unvalidated provenance carries, verbatim, wherever it is shown.
UNVALIDATED_STATEMENTS: Mapping[str, str] = MappingProxyType(
    {
        "generated_weights": "UNVALIDATED: generated demonstration weights, not a clinical result",
        "installed_unvalidated": (
            "UNVALIDATED: installed weights without a validation statement, not a clinical result"
        ),
    }
)


def least_trusted(provenances: Iterable[Provenance]) -> Provenance:
    """The least trusted of ``provenances``: what an output derived from all of them is.

    Raises
    ------
    ValueError
        If ``provenances`` is empty.
    """
    given = set(provenances)
    if not given:
        raise ValueError("an output derived from nothing has no provenance")
    return next(p for p in _TRUST_ORDER if p in given)


@dataclass(frozen=True)
class Geometry:
    """Patient-space geometry of a ``[z, y, x]`` voxel grid (DICOM LPS coordinates, mm).

    ``origin`` is the centre of voxel ``[0, 0, 0]`` (ImagePositionPatient of the first slice);
    ``spacing`` is ``(z, y, x)`` in mm (slice spacing, row spacing, column spacing);
    ``direction`` is a 3x3 matrix whose *columns* are the patient-space unit vectors of the
    x (along a row), y (down a column) and z (slice normal) array axes.
    """

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    direction: tuple[tuple[float, float, float], ...]
    shape: tuple[int, int, int]

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 mL = 1000 mm^3)."""
        sz, sy, sx = self.spacing
        return float(sz * sy * sx) / 1000.0

    def index_to_patient(self, index_zyx: tuple[float, float, float]) -> tuple[float, float, float]:
        """Map a (possibly fractional) ``[z, y, x]`` index to patient coordinates in mm."""
        z, y, x = index_zyx
        sz, sy, sx = self.spacing
        d = np.asarray(self.direction, dtype=float)
        offset = d @ np.array([x * sx, y * sy, z * sz])
        return tuple(float(v) for v in np.asarray(self.origin) + offset)  # type: ignore[return-value]


@dataclass(frozen=True)
class AcquisitionHeader:
    """Header attributes of a series that bias densitometry, as the first instance gives them.

    Attributes
    ----------
    manufacturer : str or None
        Manufacturer (0008,0070).
    convolution_kernel : str or None
        Convolution Kernel (0018,1210), several values joined with a backslash (an Enhanced CT
        carries it in the CT Reconstruction functional group); None when absent or empty.
    contrast_agent : str or None
        Contrast/Bolus Agent (0018,0010), or for an Enhanced CT the code meanings of the
        Contrast/Bolus Agent Sequence (0018,0012); None when absent or empty.
    """

    manufacturer: str | None = None
    convolution_kernel: str | None = None
    contrast_agent: str | None = None


@dataclass(frozen=True)
class Volume:
    """A CT series as Hounsfield units on its own grid, with the instances it came from.

    ``hu`` is float32 ``[z, y, x]``; ``source_sop_instance_uids[k]`` is the SOP Instance UID of
    slice ``k`` (for a multi-frame Enhanced CT, the same UID repeated, with
    ``source_frame_numbers[k]`` giving the 1-based frame).  ``header`` holds what the DICOM header
    says about reconstruction and contrast; None for a volume that was not read from DICOM (a
    phantom in memory), whose kernel and contrast are then unknown.
    """

    hu: np.ndarray
    geometry: Geometry
    source_sop_instance_uids: tuple[str, ...]
    source_frame_numbers: tuple[int, ...] | None = None
    slice_thickness_mm: float | None = None
    header: AcquisitionHeader | None = None

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise ValueError(f"a volume must be 3-D [z, y, x], got shape {self.hu.shape}")
        if tuple(self.hu.shape) != tuple(self.geometry.shape):
            raise ValueError(f"array shape {self.hu.shape} differs from geometry shape {self.geometry.shape}")
        if len(self.source_sop_instance_uids) != self.hu.shape[0]:
            raise ValueError(f"{len(self.source_sop_instance_uids)} source UIDs for {self.hu.shape[0]} slices")

    @cached_property
    def content_sha256(self) -> str:
        """Hex SHA-256 of the HU values with their dtype, shape and geometry (computed once).

        Two volumes with this digest hold the same numbers on the same grid, so whatever is
        computed from them is the same (part of the report UIDs, :mod:`reports.identity`).
        """
        digest = hashlib.sha256(repr((self.hu.dtype.str, self.hu.shape, self.geometry)).encode())
        digest.update(np.ascontiguousarray(self.hu).data)
        return digest.hexdigest()


@dataclass(frozen=True)
class BandVolume:
    """The voxels of a region in one density band (:data:`DENSITY_BANDS`): their volume and share.

    ``pct`` is the band's share of the region's volume in percent, None for an empty region.
    """

    volume_ml: float
    pct: float | None

    def as_dict(self) -> dict[str, float | None]:
        """A ``density_bands[band]`` entry of result.json."""
        return {"volume_ml": self.volume_ml, "pct": self.pct}


@dataclass(frozen=True)
class RegionMeasurements:
    """Attenuation measurements of one region (thesis section 2.4.3 for FPV), computed without weights
    on its mask; their provenance is that of the mask's model (``Findings.mask_run``).

    ``None`` for a value means it could not be computed (empty region) and says why in
    ``note``; it never means zero.  ``density_bands`` maps every band of :data:`DENSITY_BANDS`
    to its volume and share (empty when not computed); ``mass_g`` is the tissue mass from the
    density of every voxel (:mod:`models.qct.bands`), None when not computed.
    """

    region: str
    voxel_count: int
    volume_ml: float
    fpv_ml: float | None
    laa950_pct: float | None
    perc15_hu: float | None
    mean_hu: float | None
    haa_pct: float | None
    note: str = ""
    density_bands: Mapping[str, BandVolume] = field(default_factory=dict)
    mass_g: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The ``measurements[region]`` entry of result.json."""
        return {
            "voxel_count": self.voxel_count,
            "volume_ml": self.volume_ml,
            "fpv_ml": self.fpv_ml,
            "laa950_pct": self.laa950_pct,
            "perc15_hu": self.perc15_hu,
            "mean_hu": self.mean_hu,
            "haa_pct": self.haa_pct,
            "note": self.note,
            "density_bands": {band: value.as_dict() for band, value in self.density_bands.items()},
            "mass_g": self.mass_g,
        }


ModelStatus = Literal["ran", "not_installed", "skipped", "failed"]


@dataclass(frozen=True)
class ModelRun:
    """What happened to one model on this series, in words a report can print verbatim.

    Attributes
    ----------
    name : str
        Registered model name (key of ``Findings.models``).
    status : {"ran", "not_installed", "skipped", "failed"}
        Whether it produced output.
    reason : str
        What happened, in words.
    version : str
        Version of the model's implementation.
    provenance : Provenance or None
        Where its numbers come from; set exactly when ``status`` is "ran".  A run that combines
        other runs (``inputs``) takes the least trusted of their provenances.
    weights_sha256 : str or None
        SHA-256 of the installed weights file (installed provenances, unless ``inputs``).
    weights_origin : str or None
        Where the installed weights came from (file name, installation time).
    validation_statement : str or None
        The site's validation statement of the installed weights (``installed_validated``).
    inputs : tuple of str
        Runs whose outputs this one combines (the CT severity score: lobes and lesions; the
        STOIC2021 ensemble: the members it averaged); it has no weights of its own.
    description : str
        One sentence on the model.
    """

    name: str
    status: ModelStatus
    reason: str
    version: str
    provenance: Provenance | None = None
    weights_sha256: str | None = None
    weights_origin: str | None = None
    validation_statement: str | None = None
    inputs: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        where = f"model run {self.name!r}"
        if (self.status == "ran") != (self.provenance is not None):
            raise ValueError(f"{where}: a provenance is given exactly when the model ran (status {self.status!r})")
        if self.provenance is not None and self.provenance not in _TRUST_ORDER:
            raise ValueError(f"{where}: unknown provenance {self.provenance!r}; expected one of {_TRUST_ORDER}")
        installed = self.provenance in ("installed_validated", "installed_unvalidated")
        if self.inputs and self.weights_sha256 is not None:
            raise ValueError(f"{where}: a run that combines {self.inputs} has no weights of its own")
        if installed and not self.inputs and not (self.weights_sha256 and self.weights_origin):
            raise ValueError(f"{where}: installed weights need their SHA-256 and origin")
        if not installed and (self.weights_sha256 is not None or self.weights_origin is not None):
            raise ValueError(f"{where}: provenance {self.provenance!r} has no installed weights file")
        statement = (self.validation_statement or "").strip()
        if self.provenance == "installed_validated" and not self.inputs and not statement:
            raise ValueError(f"{where}: installed_validated weights need their validation statement")
        if self.provenance != "installed_validated" and self.validation_statement is not None:
            raise ValueError(f"{where}: a validation statement belongs to installed_validated weights only")

    @property
    def validated(self) -> bool:
        """True when the model ran on installed, validated weights or is a weight-free method."""
        return self.provenance in _VALIDATED

    @property
    def provenance_words(self) -> str:
        """The provenance in words ("generated demonstration weights"); "" for a model that did not run."""
        return PROVENANCE_WORDS[self.provenance] if self.provenance is not None else ""

    @property
    def unvalidated_statement(self) -> str | None:
        """The UNVALIDATED statement every output of this run carries, None when it is validated."""
        return UNVALIDATED_STATEMENTS.get(self.provenance) if self.provenance is not None else None

    @property
    def validation(self) -> str | None:
        """The provenance in words (with UNVALIDATED when it applies); None for a model that did not run."""
        if self.provenance is None:
            return None
        if self.provenance in UNVALIDATED_STATEMENTS:
            return UNVALIDATED_STATEMENTS[self.provenance]
        words = self.provenance_words
        return f"{words}: {self.validation_statement}" if self.validation_statement else words

    def labels(self) -> dict[str, Any]:
        """What result.json puts next to every number of this run: model, provenance, validation."""
        return {"model": self.name, "provenance": self.provenance, "validation": self.validation}

    def as_dict(self) -> dict[str, Any]:
        """The ``models[name]`` entry of result.json."""
        return {
            "status": self.status,
            "reason": self.reason,
            "validated": self.validated,
            "version": self.version,
            "provenance": self.provenance,
            "validation": self.validation,
            "weights_sha256": self.weights_sha256,
            "weights_origin": self.weights_origin,
            "validation_statement": self.validation_statement,
            "inputs": list(self.inputs),
            "description": self.description,
        }


WithheldOutput = Literal["measurements", "corads", "stoic", "i3dr", "severity"]


@dataclass(frozen=True)
class Withheld:
    """A learned number (or group of numbers) the plausibility gate took out, and why.

    Attributes
    ----------
    output : {"measurements", "corads", "stoic", "i3dr", "severity"}
        Which part of ``Findings`` it was in.
    reason : str
        Why, starting "withheld: " (e.g. "withheld: FEV1 pre -0.90 L is not physiological ...").
    site : str
        Where in that output: a region (measurements), "patient", "patient_b" or "lobes" (I3Dr),
        a member name (STOIC2021); "" for the output as a whole or the STOIC2021 ensemble.
    quantity : str
        Which value at that site (``fev1_pre_l``, ``p_covid``); "" for every value of the site.
    """

    output: WithheldOutput
    reason: str
    site: str = ""
    quantity: str = ""

    def __post_init__(self) -> None:
        if self.output not in get_args(WithheldOutput):
            raise ValueError(f"unknown output {self.output!r} for a withheld value")
        if not self.reason.startswith("withheld: "):
            raise ValueError(f"the reason of a withheld value must start 'withheld: ', got {self.reason!r}")

    def as_dict(self) -> dict[str, str]:
        """An entry of the ``withheld`` list of an output in result.json."""
        return {"site": self.site, "quantity": self.quantity, "reason": self.reason}


@dataclass(frozen=True)
class CoradsResult:
    """CO-RADS category 1-5 from the ensemble mean score (thesis 3.3.3: round(4p) + 1)."""

    category: int
    score: float
    members: tuple[float, ...]


@dataclass(frozen=True)
class StoicResult:
    """STOIC2021 ensemble probabilities of COVID-19 and of severe outcome (thesis chapter 4).

    ``p_covid`` and ``p_severe`` are weighted means over the members that produced them, None
    when no configured member did (the reason is in ``notes``); ``p_severe`` is conditional on
    COVID-19, as STOIC2021 ranked it.  ``members`` holds each member's own outputs (only the
    members that ran); ``averaged`` names, per output, the members whose outputs were averaged;
    ``complete`` is False when a configured member is missing from its output's mean.
    """

    p_covid: float | None
    p_severe: float | None
    members: Mapping[str, Mapping[str, float]]
    config: str = "stoic_top3"
    averaged: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    complete: bool = True
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class I3drResult:
    """I3Dr lung-function estimates per patient and per lobe (L; DLCO in mL/min/mmHg).

    ``patient`` is model A's estimate and ``lobes`` model B's lobe estimates rescaled by model A
    (thesis 2.3.1), so that they sum to ``patient``.  ``lobes_unscaled`` and ``patient_b`` keep
    model B's own estimates (Table 2.2 "no rescaling"); ``notes`` says what was not estimated
    and why (e.g. no lobe masks: patient level only).
    """

    patient: Mapping[str, float]
    lobes: Mapping[str, Mapping[str, float]]
    lobes_unscaled: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    patient_b: Mapping[str, float] | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SeverityResult:
    """Lesion involvement per lobe and CT severity score (0-5 per lobe, 0-25 total)."""

    lobes: Mapping[str, Mapping[str, float]]
    total_ctss: int


@dataclass(frozen=True)
class QualityAssessment:
    """Whether the lung mask is plausible enough to run the models that depend on it.

    ``reasons`` says in words why not (e.g. "lung volume 0.4 L is outside 1-10 L"); when
    ``plausible`` is False, downstream models are skipped with these reasons.
    """

    plausible: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class ZoneMap:
    """Where each weight-free zone region lies, on the volume's ``[z, y, x]`` grid.

    Attributes
    ----------
    labels : numpy.ndarray
        uint8: 0 outside the lungs, ``k`` for the zone ``ZONE_NAMES[k - 1]``; every lung voxel
        has a zone.
    rind : numpy.ndarray
        Boolean: the lung voxels of the peripheral rind; the core is every other lung voxel.
    rind_mm : float
        Thickness of the rind, mm.
    cuts_mm : mapping of str to (float, float)
        Per lung (``"lung_right"``, ``"lung_left"``), the patient-space z (DICOM LPS, mm, + towards
        the head) of the lower/middle and of the middle/upper zone boundary.
    """

    labels: np.ndarray
    rind: np.ndarray
    rind_mm: float
    cuts_mm: Mapping[str, tuple[float, float]]

    def __post_init__(self) -> None:
        if self.labels.dtype != np.uint8 or self.rind.dtype != np.bool_ or self.labels.shape != self.rind.shape:
            raise ValueError("zone labels must be uint8 and the rind boolean, on one grid")

    def mask(self, region: str) -> np.ndarray:
        """Boolean mask of ``region``, one of :data:`ZONE_REGIONS`.

        Raises
        ------
        ValueError
            If ``region`` is not a zone region.
        """
        if region in ZONE_NAMES:
            zone: np.ndarray = self.labels == ZONE_NAMES.index(region) + 1
            return zone
        if region == "rind":
            return self.rind
        if region == "core":
            core: np.ndarray = (self.labels > 0) & ~self.rind
            return core
        raise ValueError(f"{region!r} is not a zone region; expected one of {ZONE_REGIONS}")


@dataclass(frozen=True)
class ZoneScore:
    """The weight-free density-based score of one zone (not the lobar CT severity score).

    ``involvement_pct`` is the share of the zone's volume that is poorly aerated or non-aerated
    (-700 to +100 HU); ``score`` is 0-5 from it with the thresholds of Pan et al. (seed 003).  Both
    are None for an empty zone.
    """

    volume_ml: float
    involvement_pct: float | None
    score: int | None

    def as_dict(self) -> dict[str, float | int | None]:
        """A ``zones.zones[zone]`` entry of result.json."""
        return {"volume_ml": self.volume_ml, "involvement_pct": self.involvement_pct, "score": self.score}


@dataclass(frozen=True)
class EmphysemaDetail:
    """How low-attenuation (emphysema-like) voxels are distributed in both lungs.

    Attributes
    ----------
    upper_lower_ratio : float or None
        LAA-950 of the two upper zones pooled over LAA-950 of the two lower zones pooled; None
        when undefined (the note says why).
    cluster_exponent_d : float or None
        Exponent D of the cumulative size distribution of 3-D low-attenuation clusters (Mishima
        et al.); None when too few clusters to fit (the note says why).
    cluster_count : int
        Low-attenuation clusters in both lungs, all sizes.
    clusters_fitted : int
        Clusters whose sizes lie in the fitted range.
    fit_range_ml : (float, float) or None
        Smallest and largest cluster size (mL) of the fit.
    notes : tuple of str
        Why a value is None, and caveats.
    """

    upper_lower_ratio: float | None
    cluster_exponent_d: float | None
    cluster_count: int
    clusters_fitted: int
    fit_range_ml: tuple[float, float] | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Densitometry:
    """Weight-free zone densitometry of both lungs, computed on the lung mask of run ``source``.

    Attributes
    ----------
    source : str
        Entry of ``Findings.models`` whose lung mask the zones come from; its provenance is that
        of every number here.
    zone_map : ZoneMap
        Where each zone region lies.
    regions : mapping of str to RegionMeasurements
        Every region of :data:`ZONE_REGIONS`, measured like a lung.
    zone_scores : mapping of str to ZoneScore
        The weight-free density-based zone score of each of :data:`ZONE_NAMES`.
    zone_score_total : int or None
        Sum of the six zone scores, 0-30; None when a zone is empty.
    well_aerated_pct : float or None
        Share of both lungs' volume that is well aerated (-950 to -700 HU).
    well_aerated_cutoff_pct : float
        The published cut-off it is set beside (Colombi et al.).
    emphysema : EmphysemaDetail
        Distribution of low-attenuation voxels.
    methods : mapping of str to str
        Each definition in words, for the reports to print verbatim: ``zones``, ``rind``,
        ``density_bands``, ``zone_score``, ``well_aerated_reference``, ``upper_lower_ratio``,
        ``cluster_exponent``, ``mass``.
    notes : tuple of str
        Caveats that apply to all of it (e.g. a lung mask that failed the quality gate).
    """

    source: str
    zone_map: ZoneMap
    regions: Mapping[str, RegionMeasurements]
    zone_scores: Mapping[str, ZoneScore]
    zone_score_total: int | None
    well_aerated_pct: float | None
    well_aerated_cutoff_pct: float
    emphysema: EmphysemaDetail
    methods: Mapping[str, str]
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.regions) - set(ZONE_REGIONS)) + sorted(set(self.zone_scores) - set(ZONE_NAMES))
        if unknown:
            raise ValueError(f"not zone regions: {unknown}; expected names from {ZONE_REGIONS}")
        for name, m in self.regions.items():
            if name != m.region:
                raise ValueError(f"densitometry region {name!r} describes region {m.region!r}")

    @property
    def below_well_aerated_cutoff(self) -> bool | None:
        """Whether the well-aerated share of both lungs is below the published cut-off; None when unknown."""
        return None if self.well_aerated_pct is None else self.well_aerated_pct < self.well_aerated_cutoff_pct

    def zones_dict(self) -> dict[str, Any]:
        """The ``zones`` entry of result.json (without provenance)."""
        return {
            "name": "weight-free density-based zone score",
            "zones": {name: score.as_dict() for name, score in self.zone_scores.items()},
            "total": self.zone_score_total,
            "max_total": 5 * len(ZONE_NAMES),
            "cuts_mm": {lung: list(cuts) for lung, cuts in self.zone_map.cuts_mm.items()},
            "rind_mm": self.zone_map.rind_mm,
            "bands": {
                band: {"low_hu": low, "high_hu": high, "label": DENSITY_BAND_LABELS[band]}
                for band, (low, high) in DENSITY_BAND_RANGES_HU.items()
            },
            "well_aerated": {
                "pct": self.well_aerated_pct,
                "cutoff_pct": self.well_aerated_cutoff_pct,
                "below_cutoff": self.below_well_aerated_cutoff,
                "reference": self.methods.get("well_aerated_reference", ""),
            },
            "methods": dict(self.methods),
            "notes": list(self.notes),
        }

    def emphysema_dict(self, lung_mass_g: float | None) -> dict[str, Any]:
        """The ``emphysema`` entry of result.json (without provenance), with the mass of both lungs."""
        e = self.emphysema
        return {
            "upper_lower_laa_ratio": e.upper_lower_ratio,
            "upper_lower_laa_ratio_definition": self.methods.get("upper_lower_ratio", ""),
            "cluster_exponent_d": e.cluster_exponent_d,
            "cluster_exponent_definition": self.methods.get("cluster_exponent", ""),
            "cluster_count": e.cluster_count,
            "clusters_fitted": e.clusters_fitted,
            "fit_range_ml": list(e.fit_range_ml) if e.fit_range_ml is not None else None,
            "lung_mass_g": lung_mass_g,
            "lung_mass_definition": self.methods.get("mass", ""),
            "notes": list(e.notes),
        }


@dataclass(frozen=True)
class Acquisition:
    """How the series was reconstructed, as far as it biases densitometry, with the caveats in words.

    Attributes
    ----------
    slice_thickness_mm : float or None
        Slice Thickness (median over the slices); None when the header has none.
    slice_spacing_mm, pixel_spacing_mm, voxel_volume_ml
        The voxel grid: distance between slice centres, (row, column) pixel spacing, voxel volume.
    manufacturer, kernel : str or None
        From the header; None when absent or not read from DICOM.
    sharp_kernel : bool or None
        Whether the kernel is sharp by the heuristic of :mod:`models.qct.acquisition`; None when
        the kernel is unknown or unclassified.
    kernel_rule : str
        Which rule of that heuristic decided, in words.
    contrast : bool or None
        True when the header records a contrast agent, False when it records none, None when
        there is no header.
    contrast_agent : str or None
        The agent as the header names it.
    caveats : tuple of str
        What about this acquisition biases the densitometry, in words.
    """

    slice_thickness_mm: float | None
    slice_spacing_mm: float
    pixel_spacing_mm: tuple[float, float]
    voxel_volume_ml: float
    manufacturer: str | None
    kernel: str | None
    sharp_kernel: bool | None
    kernel_rule: str
    contrast: bool | None
    contrast_agent: str | None
    caveats: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The ``acquisition`` entry of result.json."""
        return {
            "slice_thickness_mm": self.slice_thickness_mm,
            "slice_spacing_mm": self.slice_spacing_mm,
            "pixel_spacing_mm": list(self.pixel_spacing_mm),
            "voxel_volume_ml": self.voxel_volume_ml,
            "manufacturer": self.manufacturer,
            "kernel": self.kernel,
            "sharp_kernel": self.sharp_kernel,
            "kernel_rule": self.kernel_rule,
            "contrast": self.contrast,
            "contrast_agent": self.contrast_agent,
            "caveats": list(self.caveats),
            "source": "DICOM header and voxel grid of the series",
        }


@dataclass(frozen=True)
class PriorAnalysis:
    """What follow-up needs of an earlier analysis of the same patient (read from its result.json).

    ``headline`` and ``acquisition`` are the ``headline`` and ``acquisition`` entries of that
    result.json; ``sr_sop_instance_uid`` names its SR, which the new SR references.
    """

    study_instance_uid: str
    series_instance_uid: str
    study_date: str | None
    headline: Mapping[str, float | None]
    acquisition: Mapping[str, Any]
    sr_sop_instance_uid: str | None = None
    sr_series_instance_uid: str | None = None
    accession_number: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The ``followup.prior`` entry of result.json."""
        return {
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "study_date": self.study_date,
            "accession_number": self.accession_number,
            "sr_sop_instance_uid": self.sr_sop_instance_uid,
            "sr_series_instance_uid": self.sr_series_instance_uid,
            "slice_thickness_mm": self.acquisition.get("slice_thickness_mm"),
            "kernel": self.acquisition.get("kernel"),
        }


@dataclass(frozen=True)
class Change:
    """One headline number then and now; ``delta`` is now minus then (None when either is missing)."""

    prior: float | None
    current: float | None

    @property
    def delta(self) -> float | None:
        if self.prior is None or self.current is None:
            return None
        return self.current - self.prior

    def as_dict(self) -> dict[str, float | None]:
        """A ``followup.changes[key]`` entry of result.json."""
        return {"prior": self.prior, "current": self.current, "delta": self.delta}


@dataclass(frozen=True)
class FollowUp:
    """The comparison with the patient's latest prior analysis, or why there is none.

    ``comparable`` is False when there is no prior or it cannot be compared; ``reasons`` then says
    why.  When comparable, ``changes`` holds every :data:`HEADLINE_KEYS` number and ``caveats``
    what qualifies them; ``criteria`` says in words what makes two analyses comparable
    (:mod:`models.qct.followup`).  Every number is weight-free, like the headline it compares.
    """

    prior: PriorAnalysis | None
    comparable: bool
    criteria: str
    reasons: tuple[str, ...] = ()
    caveats: tuple[str, ...] = ()
    interval_days: int | None = None
    changes: Mapping[str, Change] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.comparable and (self.prior is None or set(self.changes) != set(HEADLINE_KEYS)):
            raise ValueError("a comparable follow-up needs its prior and a change for every headline number")
        if not self.comparable and not self.reasons:
            raise ValueError("a follow-up without comparison must say why")

    def as_dict(self) -> dict[str, Any]:
        """The ``followup`` entry of result.json."""
        return {
            "comparable": self.comparable,
            "reasons": list(self.reasons),
            "caveats": list(self.caveats),
            "criteria": self.criteria,
            "prior": self.prior.as_dict() if self.prior is not None else None,
            "interval_days": self.interval_days,
            "changes": {key: change.as_dict() for key, change in self.changes.items()},
            "provenance": "weight_free",
            "meaning": "current minus prior, both weight-free measurements of both lungs (headline)",
        }


@dataclass(frozen=True)
class Findings:
    """Everything the pipeline found on one series, plus what it did not do and why.

    ``masks`` maps a region name of :data:`REGION_NAMES` (or a lesion name of
    :data:`LESION_NAMES`) to a boolean ``[z, y, x]`` array on ``volume.geometry``;
    ``mask_sources`` names, for each mask and measured region, the entry of ``models`` that
    produced it, which ran: its provenance is the mask's.  ``measurements`` maps region names
    to their measurements.  ``models`` records every registered model, ran or not; each output
    of :data:`MODEL_OUTPUTS` present has the run of the same name, which ran.  ``withheld``
    lists the learned numbers the plausibility gate took out, with the reason;
    ``configuration`` records the settings the models ran with (``name: value`` in words).
    ``densitometry`` holds the weight-free zones, density bands, zone score and emphysema detail
    of both lungs (None without a lung mask); ``acquisition`` what the header says about slice
    thickness, kernel and contrast, with the caveats for densitometry; ``followup`` the
    comparison of the headline with the patient's latest prior analysis, or why there is none
    (None when nobody asked, e.g. a phantom).
    """

    volume: Volume
    masks: Mapping[str, np.ndarray]
    measurements: Mapping[str, RegionMeasurements]
    models: Mapping[str, ModelRun]
    pipeline_version: str
    corads: CoradsResult | None = None
    stoic: StoicResult | None = None
    i3dr: I3drResult | None = None
    severity: SeverityResult | None = None
    quality: QualityAssessment | None = None
    mask_sources: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = field(default_factory=tuple)
    withheld: tuple[Withheld, ...] = ()
    configuration: Mapping[str, str] = field(default_factory=dict)
    densitometry: Densitometry | None = None
    acquisition: Acquisition | None = None
    followup: FollowUp | None = None

    def __post_init__(self) -> None:
        for name, mask in self.masks.items():
            if mask.shape != self.volume.hu.shape:
                raise ValueError(f"mask {name!r} has shape {mask.shape}, volume {self.volume.hu.shape}")
            if mask.dtype != np.bool_:
                raise ValueError(f"mask {name!r} must be boolean, got {mask.dtype}")
        for output in MODEL_OUTPUTS:
            if getattr(self, output) is not None or self.withheld_values(output):
                run = self.models.get(output)
                if run is None or run.status != "ran":
                    raise ValueError(f"output {output!r} needs the record of model {output!r} that ran")
        regions = [*self.masks, *self.measurements, *(w.site for w in self.withheld_values("measurements"))]
        for region in regions:
            if self.mask_run(region) is None:
                raise ValueError(f"mask or region {region!r} has no mask source that ran (Findings.mask_sources)")
        if self.densitometry is not None:
            run = self.models.get(self.densitometry.source)
            if run is None or run.status != "ran":
                raise ValueError(
                    f"densitometry needs the record of its lung mask {self.densitometry.source!r} that ran"
                )
            if self.densitometry.zone_map.labels.shape != self.volume.hu.shape:
                raise ValueError("the zone map is not on the volume's grid")

    def mask_run(self, name: str) -> ModelRun | None:
        """The run of the model that made mask ``name`` (``mask_sources``), if it ran."""
        source = self.mask_sources.get(name)
        run = self.models.get(source) if source is not None else None
        return run if run is not None and run.status == "ran" else None

    def withheld_values(self, output: str, site: str | None = None) -> list[Withheld]:
        """The withheld values of ``output`` (at ``site`` when given)."""
        return [w for w in self.withheld if w.output == output and (site is None or w.site == site)]

    def as_dict(self) -> dict[str, Any]:
        """The compute part of result.json (the server adds ``eligibility``).

        Every learned number sits next to the ``provenance`` and ``validation`` (with
        "UNVALIDATED" when it applies) of the run that made it: on each output, on each
        STOIC2021 member, on each measured region (the run of its mask).  A withheld value
        has ``null`` in its slot and its reason in the output's ``withheld`` list.
        """
        out: dict[str, Any] = {
            "pipeline_version": self.pipeline_version,
            "measurements": self._measurements_dict(),
            "models": {name: run.as_dict() for name, run in self.models.items()},
            "warnings": list(self.warnings),
            "mask_sources": dict(self.mask_sources),
            "configuration": dict(self.configuration),
        }
        if self.quality is not None:
            out["quality"] = {"plausible": self.quality.plausible, "reasons": list(self.quality.reasons)}
        values: dict[str, Callable[[], dict[str, Any]]] = {
            "corads": self._corads_dict,
            "stoic": self._stoic_dict,
            "i3dr": self._i3dr_dict,
            "severity": self._severity_dict,
        }
        for output, numbers in values.items():
            if getattr(self, output) is not None or self.withheld_values(output):
                withheld = [w.as_dict() for w in self.withheld_values(output)]
                out[output] = {**numbers(), **self.models[output].labels(), "withheld": withheld}
        if self.densitometry is not None:
            labels = self.models[self.densitometry.source].labels()
            lungs = self.measurements.get("lungs")
            out["zones"] = {**self.densitometry.zones_dict(), **labels}
            out["emphysema"] = {**self.densitometry.emphysema_dict(lungs.mass_g if lungs else None), **labels}
        if self.acquisition is not None:
            out["acquisition"] = self.acquisition.as_dict()
        if self.followup is not None:
            out["followup"] = self.followup.as_dict()
        headline = self.headline()
        if headline is not None:
            out["headline"] = headline
            run = self.mask_run("lungs")
            assert run is not None  # a measured region has a mask run that ran
            out["headline_source"] = {
                "region": "lungs",
                "meaning": "weight-free numbers of both lungs; the same values as measurements.lungs and zones",
                **run.labels(),
            }
        return out

    def headline(self) -> dict[str, float | int | None] | None:
        """The :data:`HEADLINE_KEYS` of both lungs (result.json ``headline``), None without lung measurements.

        Every value is weight-free and repeated from ``measurements["lungs"]`` and
        ``densitometry``: lung volume (mL), well-aerated share (%), the weight-free density-based
        zone score (0-30), LAA-950 (%), Perc15 (HU) and lung mass (g); None where it does not exist.
        """
        lungs = self.measurements.get("lungs")
        if lungs is None:
            return None
        d = self.densitometry
        values: dict[str, float | int | None] = {
            "lung_volume_ml": lungs.volume_ml,
            "well_aerated_pct": d.well_aerated_pct if d is not None else None,
            "zone_score_total": d.zone_score_total if d is not None else None,
            "laa950_pct": lungs.laa950_pct,
            "perc15_hu": lungs.perc15_hu,
            "lung_mass_g": lungs.mass_g,
        }
        return {key: values[key] for key in HEADLINE_KEYS}

    def _measurements_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, m in self.measurements.items():
            run = self.mask_run(name)
            assert run is not None
            out[name] = {**m.as_dict(), **run.labels()}
        if self.densitometry is not None:
            labels = self.models[self.densitometry.source].labels()
            for name, m in self.densitometry.regions.items():
                out[name] = {**m.as_dict(), **labels}
        empty = dict.fromkeys(
            (
                "voxel_count",
                "volume_ml",
                "fpv_ml",
                "laa950_pct",
                "perc15_hu",
                "mean_hu",
                "haa_pct",
                "density_bands",
                "mass_g",
            )
        )
        for w in self.withheld_values("measurements"):
            run = self.mask_run(w.site)
            assert run is not None
            out[w.site] = {**empty, "note": w.reason, **run.labels(), "withheld": w.reason}
        return out

    def _corads_dict(self) -> dict[str, Any]:
        if self.corads is None:
            return {"category": None, "score": None, "members": []}
        return {"category": self.corads.category, "score": self.corads.score, "members": list(self.corads.members)}

    def _stoic_dict(self) -> dict[str, Any]:
        stoic = self.stoic
        members: dict[str, dict[str, Any]] = {k: dict(v) for k, v in stoic.members.items()} if stoic else {}
        for w in self.withheld_values("stoic"):
            if w.site:
                members.setdefault(w.site, {})[w.quantity] = None
        for name, values in members.items():
            run = self.models.get(name)
            if run is not None and run.status == "ran":
                values.update(run.labels())
        return {
            "p_covid": stoic.p_covid if stoic else None,
            "p_severe": stoic.p_severe if stoic else None,
            "p_severe_meaning": "conditional on COVID-19 (intubation or death within one month)",
            "config": stoic.config if stoic else None,
            "members": members,
            "averaged": {k: list(v) for k, v in stoic.averaged.items()} if stoic else {},
            "complete": stoic.complete if stoic else False,
            "notes": list(stoic.notes) if stoic else [],
        }

    def _i3dr_dict(self) -> dict[str, Any]:
        i3dr = self.i3dr
        patient: dict[str, float | None] = dict(i3dr.patient) if i3dr else {}
        patient_b: dict[str, float | None] | None = (
            dict(i3dr.patient_b) if i3dr and i3dr.patient_b is not None else None
        )
        lobes: dict[str, dict[str, float | None]] = {k: dict(v) for k, v in i3dr.lobes.items()} if i3dr else {}
        unscaled: dict[str, dict[str, float | None]] = (
            {k: dict(v) for k, v in i3dr.lobes_unscaled.items()} if i3dr else {}
        )
        for w in self.withheld_values("i3dr"):
            if w.site == "patient" and w.quantity:
                patient[w.quantity] = None
            elif w.site == "patient_b" and w.quantity and patient_b is not None:
                patient_b[w.quantity] = None
            elif w.site == "lobes" and w.quantity:
                for values in (*lobes.values(), *unscaled.values()):
                    values[w.quantity] = None
        return {
            "patient": patient,
            "lobes": lobes,
            "lobes_unscaled": unscaled,
            "patient_b": patient_b,
            "notes": list(i3dr.notes) if i3dr else [],
        }

    def _severity_dict(self) -> dict[str, Any]:
        if self.severity is None:
            return {"lobes": {}, "total_ctss": None}
        return {"lobes": {k: dict(v) for k, v in self.severity.lobes.items()}, "total_ctss": self.severity.total_ctss}
