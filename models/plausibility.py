"""A plausibility gate for learned outputs: impossible numbers are withheld, with the reason.

An untrained (generated) or unsuitable network still returns numbers: a 0.3 mL lobe, a
negative FEV1, a probability of 1.4.  Shown as results, such numbers look like findings.  The
pipeline therefore passes every learned output through :func:`withhold_implausible` once,
after all stages, so that result.json, SR, SEG and PDF see the same decision: a value outside
the bounds below is taken out of ``Findings`` and listed in ``Findings.withheld`` with a
reason such as "withheld: FEV1 pre-bronchodilator -0.90 L is not physiological (must be above
0 L)".  Weight-free measurements (the classical lung mask and its densitometry) are not gated
here; the lung mask has its own quality gate (:mod:`models.qct.quality`).

The bounds are deliberately wide: they catch what no human lung produces, not what is
abnormal.

* **Lobe volume** (a region whose mask came from a learned model): at least
  :data:`MIN_LOBE_ML` and at most the volume of its lung.  The smallest normal lobe, the right
  middle lobe, holds a few hundred mL at full inspiration; 50 mL is several times below that,
  so only fragments and empty lobes are caught.  A lobe is part of its lung, so it cannot be
  larger.  The CT severity score and the lobar I3Dr estimates depend on all five lobe masks
  (I3Dr rescales the lobes together), so they are withheld when any lobe mask is.
* **I3Dr lung function** (:data:`I3DR_BOUNDS`), per patient and per lobe: above 0 (no volume,
  flow or diffusing capacity is zero or negative; a patient's lung volume PV at least 1 L, the
  lower bound of the lung-mask gate, :data:`models.qct.quality.PLAUSIBLE_VOLUME_L`) and at most 10 L
  for volumes (that gate's upper bound), 8 L for FEV1, 10 L for FVC and 60 mL/min/mmHg for
  DLCO.  These upper bounds lie above the upper limits of normal of the Global Lung Function
  Initiative reference equations for the tallest young adults (GLI-2012 spirometry, Quanjer et
  al., Eur Respir J 2012;40:1324-43; GLI-2017 transfer factor, Stanojevic et al., Eur Respir J
  2017;50:1700010).  FEV1 cannot exceed the FVC it is part of; an estimate more than
  :data:`MAX_FEV1_FVC_RATIO` times the FVC of the same site and phase withholds both (which one
  is wrong cannot be told).  The lobar estimates of one output are rescaled together, so one
  implausible lobe withholds that output at every lobe.
* **Probabilities** (CO-RADS members and score, STOIC2021 members and ensemble): in [0, 1].
  A STOIC2021 mean that includes a withheld member value is withheld too.
* **CO-RADS category**: an integer 1-5; else the whole CO-RADS result is withheld.
* **CT severity score**: involvement 0-100 %, lobe score an integer 0-5, total 0-25.

Every non-finite number (NaN, infinity) is withheld as well.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import NamedTuple

from models.findings import (
    LOBE_NAMES,
    REGION_LABELS,
    CoradsResult,
    Findings,
    I3drResult,
    RegionMeasurements,
    SeverityResult,
    StoicResult,
    Withheld,
)
from models.qct.quality import PLAUSIBLE_VOLUME_L

__all__ = ["I3DR_BOUNDS", "MAX_FEV1_FVC_RATIO", "MIN_LOBE_ML", "Bound", "withhold_implausible"]

#: Smallest plausible volume of a lobe outlined by a learned model, mL.
MIN_LOBE_ML = 50.0
#: Largest plausible ratio of an FEV1 estimate to the FVC estimate of the same site and phase.
MAX_FEV1_FVC_RATIO = 1.1


class Bound(NamedTuple):
    """Plausible range of one I3Dr output: above ``low`` (exclusive), at most ``high``; a patient's
    estimate at least ``patient_low`` too."""

    label: str
    unit: str
    low: float
    high: float
    patient_low: float = 0.0


#: Plausible range of each I3Dr output, per patient and per lobe (module docstring gives the reasons).
I3DR_BOUNDS: Mapping[str, Bound] = MappingProxyType(
    {
        "pv_l": Bound("PV (lung volume)", "L", 0.0, PLAUSIBLE_VOLUME_L[1], PLAUSIBLE_VOLUME_L[0]),
        "fpv_l": Bound("FPV (functional lung volume)", "L", 0.0, PLAUSIBLE_VOLUME_L[1]),
        "fev1_pre_l": Bound("FEV1 pre-bronchodilator", "L", 0.0, 8.0),
        "fev1_post_l": Bound("FEV1 post-bronchodilator", "L", 0.0, 8.0),
        "fvc_pre_l": Bound("FVC pre-bronchodilator", "L", 0.0, 10.0),
        "fvc_post_l": Bound("FVC post-bronchodilator", "L", 0.0, 10.0),
        "dlco": Bound("DLCO", "mL/min/mmHg", 0.0, 60.0),
    }
)
_FEV1_FVC_PAIRS: tuple[tuple[str, str], ...] = (("fev1_pre_l", "fvc_pre_l"), ("fev1_post_l", "fvc_post_l"))
_I3DR_SITES: Mapping[str, str] = MappingProxyType(
    {"patient": "patient (model A)", "patient_b": "patient (model B)", "lobes": "lobar"}
)


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _probability_problem(value: float) -> str | None:
    """Why ``value`` is not a probability, or None."""
    if not _finite(value):
        return f"{value!r} is not a finite number"
    if not 0.0 <= value <= 1.0:
        return f"{value:.2f} is not a probability (must be within 0-1)"
    return None


def _i3dr_problem(key: str, value: float, *, patient: bool = False) -> str | None:
    """Why the I3Dr estimate ``value`` of output ``key`` (of a patient, else a lobe) is not physiological, or None."""
    bound = I3DR_BOUNDS[key]
    if not _finite(value):
        return f"{bound.label} {value!r} is not a finite number"
    if value <= bound.low:
        return f"{bound.label} {value:.2f} {bound.unit} is not physiological (must be above {bound.low:g} {bound.unit})"
    if patient and value < bound.patient_low:
        return (
            f"{bound.label} {value:.2f} {bound.unit} is not physiological for a patient "
            f"(at least {bound.patient_low:g} {bound.unit})"
        )
    if value > bound.high:
        return f"{bound.label} {value:.2f} {bound.unit} is not physiological (at most {bound.high:g} {bound.unit})"
    return None


def withhold_implausible(findings: Findings) -> Findings:
    """``findings`` without its implausible learned numbers, each listed in ``withheld`` with the reason.

    Parameters
    ----------
    findings : Findings
        The pipeline's findings, before any report is built.

    Returns
    -------
    Findings
        The same findings when everything is plausible; otherwise a copy whose implausible
        values are removed (a lobe's measurements, an I3Dr output, a probability, the whole
        CO-RADS or severity result) and whose ``withheld`` names each, with the reason.
    """
    withheld: list[Withheld] = []
    measurements, lobe_reasons = _gate_lobes(findings, withheld)
    corads = _gate_corads(findings.corads, withheld)
    stoic = _gate_stoic(findings.stoic, withheld)
    i3dr = _gate_i3dr(findings.i3dr, lobe_reasons, withheld)
    severity = _gate_severity(findings.severity, lobe_reasons, withheld)
    if not withheld:
        return findings
    return replace(
        findings,
        measurements=measurements,
        corads=corads,
        stoic=stoic,
        i3dr=i3dr,
        severity=severity,
        withheld=findings.withheld + tuple(withheld),
    )


def _gate_lobes(findings: Findings, withheld: list[Withheld]) -> tuple[dict[str, RegionMeasurements], list[str]]:
    """Measurements without implausible learned lobes, and the reason for each lobe withheld."""
    kept = dict(findings.measurements)
    reasons = []
    for lobe in LOBE_NAMES:
        measured = kept.get(lobe)
        run = findings.mask_run(lobe)
        if measured is None or run is None or run.provenance == "weight_free":
            continue
        side = findings.measurements.get("lung_left" if lobe.startswith("L") else "lung_right")
        words = f"{REGION_LABELS[lobe]} {measured.volume_ml:.1f} mL"
        problem = None
        if measured.volume_ml < MIN_LOBE_ML:
            problem = f"{words} is below the plausible minimum of {MIN_LOBE_ML:g} mL for a lobe"
        elif side is not None and measured.volume_ml > side.volume_ml:
            problem = f"{words} is larger than its lung ({side.volume_ml:.1f} mL)"
        if problem is not None:
            del kept[lobe]
            reasons.append(problem)
            withheld.append(Withheld("measurements", f"withheld: {problem} (mask by model {run.name})", site=lobe))
    return kept, reasons


def _gate_corads(corads: CoradsResult | None, withheld: list[Withheld]) -> CoradsResult | None:
    if corads is None:
        return None
    problems = []
    if not isinstance(corads.category, int) or not 1 <= corads.category <= 5:
        problems.append(f"CO-RADS category {corads.category!r} is not one of 1-5")
    score = _probability_problem(corads.score)
    if score is not None:
        problems.append(f"ensemble score {score}")
    problems += [
        f"member {k + 1} score {why}"
        for k, value in enumerate(corads.members)
        if (why := _probability_problem(value)) is not None
    ]
    if not problems:
        return corads
    withheld.append(Withheld("corads", "withheld: " + "; ".join(problems)))
    return None


def _gate_stoic(stoic: StoicResult | None, withheld: list[Withheld]) -> StoicResult | None:
    if stoic is None:
        return None
    members: dict[str, dict[str, float]] = {}
    spoilt: dict[str, list[str]] = {}
    for name, outputs in stoic.members.items():
        members[name] = {}
        for key, value in outputs.items():
            why = _probability_problem(value)
            if why is None:
                members[name][key] = value
                continue
            withheld.append(Withheld("stoic", f"withheld: {name} {key} {why}", site=name, quantity=key))
            spoilt.setdefault(key, []).append(name)
    ensemble: dict[str, float | None] = {"p_covid": stoic.p_covid, "p_severe": stoic.p_severe}
    for key, mean in ensemble.items():
        if mean is None:
            continue
        why = _probability_problem(mean)
        bad_members = [name for name in spoilt.get(key, []) if name in stoic.averaged.get(key, ())]
        if bad_members:
            why = f"is the mean of withheld member values ({', '.join(bad_members)})"
        if why is not None:
            withheld.append(Withheld("stoic", f"withheld: ensemble {key} {why}", quantity=key))
            ensemble[key] = None
    if members == stoic.members and ensemble == {"p_covid": stoic.p_covid, "p_severe": stoic.p_severe}:
        return stoic
    return replace(stoic, members=members, p_covid=ensemble["p_covid"], p_severe=ensemble["p_severe"])


def _gate_i3dr(i3dr: I3drResult | None, lobe_reasons: list[str], withheld: list[Withheld]) -> I3drResult | None:
    if i3dr is None:
        return None
    patient = _gate_site(dict(i3dr.patient), "patient", withheld)
    patient_b = _gate_site(dict(i3dr.patient_b), "patient_b", withheld) if i3dr.patient_b is not None else None
    lobes = {lobe: dict(values) for lobe, values in i3dr.lobes.items()}
    unscaled = {lobe: dict(values) for lobe, values in i3dr.lobes_unscaled.items()}
    if lobe_reasons and (lobes or unscaled):
        reason = "withheld: the lobar estimates depend on every lobe mask, and " + "; ".join(lobe_reasons)
        withheld.append(Withheld("i3dr", reason, site="lobes"))
        lobes, unscaled = {}, {}
    for key in I3DR_BOUNDS:
        problems = [
            f"{lobe} {why}"
            for table in (lobes, unscaled)
            for lobe, values in table.items()
            if key in values and (why := _i3dr_problem(key, values[key])) is not None
        ]
        if problems:
            reason = f"withheld: at every lobe, as the lobes are rescaled together: {'; '.join(problems)}"
            withheld.append(Withheld("i3dr", reason, site="lobes", quantity=key))
            for values in (*lobes.values(), *unscaled.values()):
                values.pop(key, None)
    return replace(i3dr, patient=patient, patient_b=patient_b, lobes=lobes, lobes_unscaled=unscaled)


def _gate_site(values: dict[str, float], site: str, withheld: list[Withheld]) -> dict[str, float]:
    """One I3Dr site (patient model A or B) without its out-of-range values and impossible FEV1/FVC pairs."""
    where = _I3DR_SITES[site]
    for key in [k for k in values if k in I3DR_BOUNDS]:
        why = _i3dr_problem(key, values[key], patient=True)
        if why is not None:
            withheld.append(Withheld("i3dr", f"withheld: {where} {why}", site=site, quantity=key))
            del values[key]
    for fev1, fvc in _FEV1_FVC_PAIRS:
        if fev1 in values and fvc in values and values[fev1] > MAX_FEV1_FVC_RATIO * values[fvc]:
            reason = (
                f"withheld: {where} {I3DR_BOUNDS[fev1].label} {values[fev1]:.2f} L exceeds "
                f"{I3DR_BOUNDS[fvc].label} {values[fvc]:.2f} L, of which it is a part"
            )
            withheld += [Withheld("i3dr", reason, site=site, quantity=key) for key in (fev1, fvc)]
            del values[fev1], values[fvc]
    return values


def _gate_severity(
    severity: SeverityResult | None, lobe_reasons: list[str], withheld: list[Withheld]
) -> SeverityResult | None:
    if severity is None:
        return None
    problems = []
    for lobe, values in severity.lobes.items():
        pct, score = values.get("involvement_pct", math.nan), values.get("ctss", math.nan)
        if not _finite(pct) or not 0.0 <= pct <= 100.0:
            problems.append(f"{REGION_LABELS.get(lobe, lobe)} involvement {pct!r} % is not within 0-100 %")
        if not _finite(score) or score != int(score) or not 0 <= score <= 5:
            problems.append(f"{REGION_LABELS.get(lobe, lobe)} score {score!r} is not an integer 0-5")
    if not 0 <= severity.total_ctss <= 25:
        problems.append(f"total score {severity.total_ctss} is not within 0-25")
    if lobe_reasons:
        problems.insert(0, "the score needs every lobe mask, and " + "; ".join(lobe_reasons))
    if not problems:
        return severity
    withheld.append(Withheld("severity", "withheld: " + "; ".join(problems)))
    return None
