"""The contract between compute (``models``) and the report writers (``reports``).

Everything here is a frozen dataclass of numpy arrays, plain numbers and strings: no pydicom,
no torch.  ``reports`` imports only this module, so whatever a report shows must be carried
here, with enough provenance (model name, version, weight hash, validation status) that a
report can never present an unvalidated number as a clinical result.

Array convention: every volume and mask is indexed ``[slice, row, column]`` (z, y, x) in the
order of the source series after sorting slices along the slice normal, so that index ``k``
corresponds to ``Volume.source_sop_instance_uids[k]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = [
    "LOBE_NAMES",
    "LUNG_REGIONS",
    "REGION_NAMES",
    "LESION_NAMES",
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
]

#: Whole-lung regions, always present when a lung mask exists.
LUNG_REGIONS: tuple[str, ...] = ("lungs", "lung_left", "lung_right")
#: The five lobes (left upper/lower, right upper/middle/lower).
LOBE_NAMES: tuple[str, ...] = ("LUL", "LLL", "RUL", "RML", "RLL")
#: Region names used everywhere: result.json, SR tracking identifiers, PDF tables.
REGION_NAMES: tuple[str, ...] = LUNG_REGIONS + LOBE_NAMES
#: Lesion masks: all infectious opacities, and the two kinds when a model separates them.
LESION_NAMES: tuple[str, ...] = ("lesions", "ggo", "consolidation")


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
class Volume:
    """A CT series as Hounsfield units on its own grid, with the instances it came from.

    ``hu`` is float32 ``[z, y, x]``; ``source_sop_instance_uids[k]`` is the SOP Instance UID of
    slice ``k`` (for a multi-frame Enhanced CT, the same UID repeated, with
    ``source_frame_numbers[k]`` giving the 1-based frame).
    """

    hu: np.ndarray
    geometry: Geometry
    source_sop_instance_uids: tuple[str, ...]
    source_frame_numbers: tuple[int, ...] | None = None
    slice_thickness_mm: float | None = None

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise ValueError(f"a volume must be 3-D [z, y, x], got shape {self.hu.shape}")
        if tuple(self.hu.shape) != tuple(self.geometry.shape):
            raise ValueError(f"array shape {self.hu.shape} differs from geometry shape {self.geometry.shape}")
        if len(self.source_sop_instance_uids) != self.hu.shape[0]:
            raise ValueError(f"{len(self.source_sop_instance_uids)} source UIDs for {self.hu.shape[0]} slices")


@dataclass(frozen=True)
class RegionMeasurements:
    """Weight-free attenuation measurements of one region (thesis section 2.4.3 for FPV).

    ``None`` for a value means it could not be computed (empty region) and says why in
    ``note``; it never means zero.
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
        }


ModelStatus = Literal["ran", "not_installed", "skipped", "failed"]


@dataclass(frozen=True)
class ModelRun:
    """What happened to one model on this series, in words a report can print verbatim.

    ``validated`` is True only for weights installed from a validated source; generated
    (demo) weights and weight-free methods that are not clinically validated set it False.
    """

    name: str
    status: ModelStatus
    reason: str
    validated: bool
    version: str
    weights_sha256: str | None = None
    description: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The ``models[name]`` entry of result.json."""
        return {
            "status": self.status,
            "reason": self.reason,
            "validated": self.validated,
            "version": self.version,
            "weights_sha256": self.weights_sha256,
            "description": self.description,
        }


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
class Findings:
    """Everything the pipeline found on one series, plus what it did not do and why.

    ``masks`` maps a region name of :data:`REGION_NAMES` (or a lesion name of
    :data:`LESION_NAMES`) to a boolean ``[z, y, x]`` array on ``volume.geometry``;
    ``mask_sources`` names, for each mask, the entry of ``models`` that produced it.
    ``measurements`` maps region names to their weight-free measurements.  ``models`` records
    every registered model, ran or not.
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

    def __post_init__(self) -> None:
        for name, mask in self.masks.items():
            if mask.shape != self.volume.hu.shape:
                raise ValueError(f"mask {name!r} has shape {mask.shape}, volume {self.volume.hu.shape}")
            if mask.dtype != np.bool_:
                raise ValueError(f"mask {name!r} must be boolean, got {mask.dtype}")

    @property
    def any_unvalidated_output(self) -> bool:
        """True when any model that ran did so with unvalidated weights."""
        return any(run.status == "ran" and not run.validated for run in self.models.values())

    def as_dict(self) -> dict[str, Any]:
        """The compute part of result.json (the server adds ``eligibility``)."""
        out: dict[str, Any] = {
            "pipeline_version": self.pipeline_version,
            "measurements": {name: m.as_dict() for name, m in self.measurements.items()},
            "models": {name: run.as_dict() for name, run in self.models.items()},
            "warnings": list(self.warnings),
            "mask_sources": dict(self.mask_sources),
        }
        if self.quality is not None:
            out["quality"] = {"plausible": self.quality.plausible, "reasons": list(self.quality.reasons)}
        if self.corads is not None:
            out["corads"] = {
                "category": self.corads.category,
                "score": self.corads.score,
                "members": list(self.corads.members),
            }
        if self.stoic is not None:
            out["stoic"] = {
                "p_covid": self.stoic.p_covid,
                "p_severe": self.stoic.p_severe,
                "p_severe_meaning": "conditional on COVID-19 (intubation or death within one month)",
                "config": self.stoic.config,
                "members": {k: dict(v) for k, v in self.stoic.members.items()},
                "averaged": {k: list(v) for k, v in self.stoic.averaged.items()},
                "complete": self.stoic.complete,
                "notes": list(self.stoic.notes),
            }
        if self.i3dr is not None:
            out["i3dr"] = {
                "patient": dict(self.i3dr.patient),
                "lobes": {k: dict(v) for k, v in self.i3dr.lobes.items()},
                "lobes_unscaled": {k: dict(v) for k, v in self.i3dr.lobes_unscaled.items()},
                "patient_b": dict(self.i3dr.patient_b) if self.i3dr.patient_b is not None else None,
                "notes": list(self.i3dr.notes),
            }
        if self.severity is not None:
            out["severity"] = {
                "lobes": {k: dict(v) for k, v in self.severity.lobes.items()},
                "total_ctss": self.severity.total_ctss,
            }
        return out
