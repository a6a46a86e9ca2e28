"""Eligibility rules as data, and their evaluation on a received series.

The rules are a TOML document (``default_rules.toml`` documents every key) that admins edit as
a file or over REST.  Evaluation never stops at the first failure: a rejected series records
every reason, in words a PACS administrator understands.

The admin's file is an :class:`~server.core.admin_file.AdminFile`: written atomically and read
back before it takes effect, and when it is broken the last good rules stay in force (the
error is audited and shown by ``GET /rules`` and ``/health/ready``), so an edit never stops
routing.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dicom_node.completeness import assess_series
from dicom_node.header import InstanceHeader
from dicom_node.identity import series_disagreements
from models.volume import PIXEL_SPACING_ATOL_MM, PIXEL_SPACING_RTOL, parse_da
from server.core.admin_file import AdminFile, Loaded, refuse_control_characters

if TYPE_CHECKING:
    from server.audit import AuditTrail

__all__ = [
    "Eligibility",
    "EligibilityRules",
    "RulesInForce",
    "evaluate",
    "load_rules",
    "patient_age_years",
    "rules_in_force",
    "save_rules",
]

_DEFAULTS_FILE = Path(__file__).with_name("default_rules.toml")
_TABLE = "eligibility"


class EligibilityRules(BaseModel):
    """The eligibility rules; see ``default_rules.toml`` for what each key means."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    analysed_sop_classes: list[str]
    modalities: list[str]
    required_image_type: list[str]
    excluded_image_type: list[str]
    max_axial_tilt_deg: float = Field(ge=0, le=90)
    spacing_tolerance: float = Field(gt=0, lt=1)
    min_coverage_mm: float = Field(ge=0)
    min_slices: int = Field(ge=1)
    min_age_years: float | None = Field(default=None, ge=0)
    max_slice_thickness_mm: float | None = Field(default=None, gt=0)

    @field_validator("analysed_sop_classes", "modalities", "required_image_type", "excluded_image_type")
    @classmethod
    def _printable(cls, values: list[str]) -> list[str]:
        for value in values:
            refuse_control_characters(value)
        return values


@dataclass(frozen=True)
class RulesInForce:
    """The rules that apply, where they come from, and why the admin's file is not them.

    ``source`` is ``"file"`` (the admin's file), ``"last good copy"`` (the file is broken:
    ``error`` says how) or ``"defaults"`` (no file, or no valid version of it ever).
    """

    rules: EligibilityRules
    source: Literal["file", "last good copy", "defaults"]
    error: str | None


@dataclass(frozen=True)
class Eligibility:
    """The decision for one series: ``analysable`` is False for SOP classes never analysed."""

    eligible: bool
    analysable: bool
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """The ``eligibility`` entry of result.json."""
        return {"eligible": self.eligible, "reasons": list(self.reasons)}


def _defaults() -> dict[str, Any]:
    with _DEFAULTS_FILE.open("rb") as fh:
        return dict(tomllib.load(fh)[_TABLE])


def _parse_rules_file(content: bytes) -> EligibilityRules:
    """The defaults overlaid by one rules file; ``ValueError`` naming what is wrong."""
    try:
        document = tomllib.loads(content.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not valid TOML: {exc}") from exc
    table = document.get(_TABLE)
    if not isinstance(table, dict) or set(document) != {_TABLE}:
        raise ValueError(f"the file must hold exactly one [{_TABLE}] table, it holds {sorted(document)}")
    return EligibilityRules(**{**_defaults(), **table})


_SOURCES: dict[str, Literal["file", "last good copy", "defaults"]] = {
    "file": "file",
    "last good copy": "last good copy",
    "none": "defaults",
}


def _admin_file(path: Path) -> AdminFile[EligibilityRules]:
    return AdminFile(path, _parse_rules_file)


def rules_in_force(path: Path | None, max_slice_thickness_mm: float, audit: AuditTrail | None = None) -> RulesInForce:
    """Defaults, overlaid by the admin's rules file (or its last good copy), then the settings' thickness.

    Never raises for a broken file: the last good rules stay in force and ``error`` says why;
    with ``audit``, each broken version of the file is audited (once per process).
    """
    loaded: Loaded[EligibilityRules] = _admin_file(path).load() if path is not None else Loaded(None, "none")
    source = _SOURCES[loaded.source]
    if path is not None and loaded.error is not None and audit is not None:
        audit.record_rejected_file(path, loaded.error, loaded.fingerprint or loaded.error, f"the {source}")
    rules = loaded.value if loaded.value is not None else EligibilityRules(**_defaults())
    if rules.max_slice_thickness_mm is None:
        rules = rules.model_copy(update={"max_slice_thickness_mm": max_slice_thickness_mm})
    return RulesInForce(rules, source, loaded.error)


def load_rules(path: Path | None, max_slice_thickness_mm: float, audit: AuditTrail | None = None) -> EligibilityRules:
    """The rules in force (:func:`rules_in_force` without where they come from)."""
    return rules_in_force(path, max_slice_thickness_mm, audit).rules


def save_rules(path: Path, rules: EligibilityRules) -> None:
    """Write ``rules`` as the admin's rules file: atomically, and only if it reads back as ``rules``.

    Raises ``ValueError`` (the file unchanged) when the written document would not read back
    as exactly these rules, e.g. a null ``min_age_years``, which TOML cannot express.
    """
    lines = ["# Eligibility rules of lungcds, written by the REST API.", "", f"[{_TABLE}]"]
    for key, value in rules.model_dump().items():
        if value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    _admin_file(path).save(("\n".join(lines) + "\n").encode("utf-8"), rules)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string: JSON's escapes are TOML's
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


_AGE = re.compile(r"^(\d{3})([DWMY])$")
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


def patient_age_years(header: InstanceHeader) -> float | None:
    """Age from Patient's Age (AS, PS3.5 6.2) or else from birth date and study date."""
    match = _AGE.match((header.patient_age or "").strip().upper())
    if match:
        return int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2)]
    birth, study = parse_da(header.patient_birth_date), parse_da(header.study_date)
    if birth and study and study >= birth:
        return (study - birth).days / 365.25
    return None


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def evaluate(headers: Sequence[InstanceHeader], rules: EligibilityRules) -> Eligibility:
    """Apply every rule to one series' instance headers and collect every reason it fails."""
    if not headers:
        return Eligibility(False, False, ("the series has no stored instances",))
    first = headers[0]
    sop_classes = sorted({h.sop_class_uid or "(none)" for h in headers})
    if not set(sop_classes) <= set(rules.analysed_sop_classes):
        text = ", ".join(sop_classes)
        return Eligibility(False, False, (f"SOP class {text} is stored but not analysed",))

    # Instances of two patients, studies or frames of reference are never one volume (issue 14).
    reasons: list[str] = series_disagreements(headers)
    modalities = sorted({(h.modality or "").strip() or "(none)" for h in headers})
    if not set(modalities) <= set(rules.modalities):
        reasons.append(f"modality {', '.join(modalities)} is not {' or '.join(rules.modalities)}")

    reasons.extend(_image_type_reasons(headers, rules))
    reasons.extend(_geometry_reasons(headers, rules))
    reasons.extend(_grid_reasons(headers))

    age = patient_age_years(first)
    if rules.min_age_years is not None and age is not None and age < rules.min_age_years:
        reasons.append(f"patient age {age:.1f} years is below the adult minimum of {rules.min_age_years:g} years")
    return Eligibility(not reasons, True, tuple(reasons))


def _image_type_reasons(headers: Sequence[InstanceHeader], rules: EligibilityRules) -> list[str]:
    reasons: list[str] = []
    types = {tuple(v.strip().upper() for v in h.image_type) for h in headers}
    for image_type in sorted(types):
        shown = "\\".join(image_type) or "(empty)"
        missing = [v for v in rules.required_image_type if v.upper() not in image_type[:2]]
        if missing:
            reasons.append(f"image type {shown} is not {'/'.join(rules.required_image_type)}")
        excluded = [v for v in rules.excluded_image_type if v.upper() in image_type]
        if excluded:
            reasons.append(f"image type {shown} marks a {'/'.join(excluded).lower()} image, not a volume")
    return reasons


def _geometry_reasons(headers: Sequence[InstanceHeader], rules: EligibilityRules) -> list[str]:
    reasons: list[str] = []
    geometry = assess_series(headers, spacing_tolerance=rules.spacing_tolerance)
    if not geometry.consistent_orientation:
        reasons.append("slices have different orientations")
    tilt = geometry.axial_tilt_deg
    if tilt is None:
        reasons.append("slice orientation is missing, so the series cannot be shown to be axial")
    elif tilt > rules.max_axial_tilt_deg:
        reasons.append(f"slices are tilted {_fmt(tilt)}° from axial (at most {_fmt(rules.max_axial_tilt_deg)}°)")
    if geometry.unplaced or not geometry.uniform or geometry.missing_slices or geometry.duplicate_positions:
        reasons.extend(r for r in geometry.reasons if r not in reasons)
    if geometry.count < rules.min_slices:
        reasons.append(f"{geometry.count} slices, fewer than the {rules.min_slices} needed")
    coverage = geometry.coverage_mm
    if coverage is not None and coverage < rules.min_coverage_mm:
        reasons.append(
            f"the series covers {_fmt(coverage)} mm cranio-caudally, less than the "
            f"{_fmt(rules.min_coverage_mm)} mm needed to contain both lungs"
        )
    thickness = _series_thickness(headers, geometry.spacing_mm)
    limit = rules.max_slice_thickness_mm
    if limit is not None:
        if thickness is None:
            reasons.append("slice thickness is not given and cannot be derived from the slice spacing")
        elif thickness > limit + 1e-6:
            reasons.append(f"slice thickness {_fmt(thickness)} mm exceeds {_fmt(limit)} mm")
    return reasons


def _counted(values: Sequence[str], name: str) -> str:
    """``16x16 (5 slices), 8x8 (1 slice)``: each distinct value with how many slices have it."""
    shown = ", ".join(f"{v} ({n} slice{'s' if n != 1 else ''})" for v, n in sorted(Counter(values).items()))
    return f"slices have different {name}: {shown}"


def _grid_reasons(headers: Sequence[InstanceHeader]) -> list[str]:
    """Slices must share one pixel grid to be stacked into a volume (one frame of reference: identity).

    The volume loader refuses such series too (:func:`models.volume.load_series`, with the same
    pixel spacing tolerance); saying so here rejects them with their reason when the series is
    finalised, instead of failing a job later.
    """
    reasons: list[str] = []
    matrices = [f"{h.rows}x{h.columns}" if h.rows and h.columns else "(missing)" for h in headers]
    if len(set(matrices)) > 1:
        reasons.append(_counted(matrices, "matrix sizes"))
    spacings = [h.pixel_spacing for h in headers if h.pixel_spacing is not None]
    if len(spacings) < len(headers):
        reasons.append(f"Pixel Spacing is missing or malformed in {len(headers) - len(spacings)} slices")
    elif not all(
        math.isclose(s[k], spacings[0][k], rel_tol=PIXEL_SPACING_RTOL, abs_tol=PIXEL_SPACING_ATOL_MM)
        for s in spacings
        for k in (0, 1)
    ):
        reasons.append(_counted([f"{s[0]:g}/{s[1]:g} mm" for s in spacings], "pixel spacings"))
    return reasons


def _series_thickness(headers: Sequence[InstanceHeader], spacing_mm: float | None) -> float | None:
    """The largest Slice Thickness in the series, or the slice spacing when none is given."""
    values = [h.slice_thickness for h in headers if h.slice_thickness and math.isfinite(h.slice_thickness)]
    if values:
        return max(values)
    return spacing_mm
