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
    "LOBE_NAMES",
    "LUNG_REGIONS",
    "REGION_NAMES",
    "LESION_NAMES",
    "MODEL_OUTPUTS",
    "PROVENANCE_WORDS",
    "REGION_LABELS",
    "UNVALIDATED_STATEMENTS",
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
    "least_trusted",
]

#: Whole-lung regions, always present when a lung mask exists.
LUNG_REGIONS: tuple[str, ...] = ("lungs", "lung_left", "lung_right")
#: The five lobes (left upper/lower, right upper/middle/lower).
LOBE_NAMES: tuple[str, ...] = ("LUL", "LLL", "RUL", "RML", "RLL")
#: Region names used everywhere: result.json, SR tracking identifiers, PDF tables.
REGION_NAMES: tuple[str, ...] = LUNG_REGIONS + LOBE_NAMES
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
    }
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
class RegionMeasurements:
    """Attenuation measurements of one region (thesis section 2.4.3 for FPV), computed without weights
    on its mask; their provenance is that of the mask's model (``Findings.mask_run``).

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
        return out

    def _measurements_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, m in self.measurements.items():
            run = self.mask_run(name)
            assert run is not None
            out[name] = {**m.as_dict(), **run.labels()}
        empty = dict.fromkeys(("voxel_count", "volume_ml", "fpv_ml", "laa950_pct", "perc15_hu", "mean_hu", "haa_pct"))
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
