"""Follow-up: the headline numbers of this CT against the patient's latest prior analysed chest CT.

A radiologist reading a COVID-19 follow-up or a COPD work-up asks first "better or worse than
last time?".  :func:`compare` answers with the change of every headline number (lung volume,
well-aerated %, zone score, LAA-950, Perc15, lung mass), or says why there is no comparison.

What makes two analyses comparable (decided here, once, for result.json, SR and PDF):

* the same patient: Patient ID and Issuer of Patient ID equal (the server looks priors up by
  both, :mod:`server.services.followup`), in another, earlier study (two series of one study are
  one time point, not a follow-up);
* both analysed and eligible (the server only offers priors whose analysis is done);
* the same kind of reconstruction: both sharp or both soft kernels, and slice thicknesses within
  :data:`MAX_THICKNESS_DIFFERENCE_MM`.  Kernel and thickness shift the densitometry more than
  many real changes do (Gallardo-Estrella et al., Eur Radiol 2016;26:3367-76: LAA-950 depends
  strongly on both), so across them the numbers are not compared at all.

Caveats that do not stop the comparison but qualify it, in words next to it: contrast in one
scan and not the other (contrast raises lung density), and a lung volume that changed by more
than :data:`INSPIRATION_CHANGE_FRACTION` (a different inspiration level changes every density
number; the CT densitometry literature corrects for it, we only say it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from models.findings import HEADLINE_KEYS, Change, Findings, FollowUp, PriorAnalysis
from models.volume import parse_da

__all__ = [
    "COMPARABILITY_CRITERIA",
    "INSPIRATION_CHANGE_FRACTION",
    "MAX_THICKNESS_DIFFERENCE_MM",
    "compare",
    "with_followup",
]

#: Largest difference of slice thickness between two comparable scans, mm.
MAX_THICKNESS_DIFFERENCE_MM = 1.0
#: A relative change of lung volume above which the inspiration level is said to differ.
INSPIRATION_CHANGE_FRACTION = 0.10
#: What makes two analyses comparable, in words for result.json, SR and PDF (module docstring).
COMPARABILITY_CRITERIA = (
    "compared with the latest earlier study of the same patient (Patient ID and issuer) that was analysed, "
    f"reconstructed with the same kind of kernel (both sharp or both soft) and slice thicknesses within "
    f"{MAX_THICKNESS_DIFFERENCE_MM:g} mm"
)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _kernel_class(acquisition: Mapping[str, Any]) -> str | None:
    sharp = acquisition.get("sharp_kernel")
    return None if sharp is None else ("sharp" if sharp else "soft")


def _mismatch(prior: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Why the reconstructions of two scans make their densitometry incomparable, in words."""
    reasons = []
    then, now = _number(prior.get("slice_thickness_mm")), _number(current.get("slice_thickness_mm"))
    if then is None or now is None:
        reasons.append("the slice thickness of one of the scans is unknown")
    elif abs(then - now) > MAX_THICKNESS_DIFFERENCE_MM:
        reasons.append(
            f"slice thickness {then:g} mm then and {now:g} mm now differ by more than "
            f"{MAX_THICKNESS_DIFFERENCE_MM:g} mm"
        )
    kernel_then, kernel_now = _kernel_class(prior), _kernel_class(current)
    if kernel_then is not None and kernel_now is not None and kernel_then != kernel_now:
        reasons.append(
            f"a {kernel_then} reconstruction kernel then ({prior.get('kernel') or 'unnamed'}) and a {kernel_now} "
            f"one now ({current.get('kernel') or 'unnamed'})"
        )
    return reasons


def _sort_key(prior: PriorAnalysis) -> str:
    return prior.study_date or ""


def compare(
    priors: Sequence[PriorAnalysis],
    *,
    current_headline: Mapping[str, float | None],
    current_acquisition: Mapping[str, Any],
    current_study_date: str | None,
    no_prior_reason: str = "no earlier analysed chest CT of this patient",
) -> FollowUp:
    """Compare this analysis with the latest comparable one of ``priors``, or say why there is none.

    Parameters
    ----------
    priors : Sequence of PriorAnalysis
        Every earlier analysed series of the same patient in other studies (found by the caller).
        The latest study with a comparable series is taken, and in it the series with the closest
        slice thickness; when none is comparable, the latest one is named with the reasons.
    current_headline, current_acquisition : Mapping
        This analysis' ``headline`` and ``acquisition`` (result.json keys of the same names).
    current_study_date : str or None
        Study Date (DA, YYYYMMDD) of this study.
    no_prior_reason : str, optional
        What to say when there is no prior (e.g. that an offline analysis has no history).
    """
    if not priors:
        return _not_compared((no_prior_reason,))
    now = parse_da(current_study_date)
    earlier = [p for p in priors if now is None or (parse_da(p.study_date) or now) <= now]
    if not earlier:
        latest = max(priors, key=_sort_key)
        return _not_compared(
            (f"every earlier analysis of this patient is of a later study date ({latest.study_date})",), latest
        )
    comparable = [p for p in earlier if not _mismatch(p.acquisition, current_acquisition)]
    if not comparable:
        latest = max(earlier, key=_sort_key)
        reasons = _mismatch(latest.acquisition, current_acquisition)
        return _not_compared(reasons, latest, _interval(latest.study_date, current_study_date))
    newest_date = max(_sort_key(p) for p in comparable)
    thickness = _number(current_acquisition.get("slice_thickness_mm")) or 0.0
    prior = min(
        (p for p in comparable if _sort_key(p) == newest_date),
        key=lambda p: abs((_number(p.acquisition.get("slice_thickness_mm")) or 0.0) - thickness),
    )
    interval = _interval(prior.study_date, current_study_date)
    changes = {
        key: Change(_number(prior.headline.get(key)), _number(current_headline.get(key))) for key in HEADLINE_KEYS
    }
    caveats = []
    contrast_then, contrast_now = prior.acquisition.get("contrast"), current_acquisition.get("contrast")
    if contrast_then is not None and contrast_now is not None and bool(contrast_then) != bool(contrast_now):
        caveats.append(
            f"contrast medium {'then' if contrast_then else 'now'} only: it raises lung density, so density "
            f"changes are partly the contrast"
        )
    volume = changes["lung_volume_ml"]
    if volume.prior and volume.delta is not None and abs(volume.delta) / volume.prior > INSPIRATION_CHANGE_FRACTION:
        caveats.append(
            f"lung volume changed by {100 * volume.delta / volume.prior:+.0f} %: a different inspiration level "
            f"changes every density number, so density changes are partly the inspiration"
        )
    if interval is None:
        caveats.append("the study date of one of the scans is unknown, so the interval is not given")
    return FollowUp(
        prior=prior,
        comparable=True,
        criteria=COMPARABILITY_CRITERIA,
        caveats=tuple(caveats),
        interval_days=interval,
        changes=changes,
    )


def _not_compared(
    reasons: Sequence[str], prior: PriorAnalysis | None = None, interval_days: int | None = None
) -> FollowUp:
    """A follow-up without comparison: why, and the latest prior it would have been when there is one."""
    return FollowUp(
        prior=prior,
        comparable=False,
        criteria=COMPARABILITY_CRITERIA,
        reasons=tuple(reasons),
        interval_days=interval_days,
    )


def _interval(then: str | None, now: str | None) -> int | None:
    """Days from ``then`` to ``now`` (DA values), None when either is unknown."""
    start, end = parse_da(then), parse_da(now)
    return (end - start).days if start is not None and end is not None else None


def with_followup(
    findings: Findings,
    priors: Sequence[PriorAnalysis] | None,
    *,
    study_date: str | None,
    no_prior_reason: str = "no earlier analysed chest CT of this patient",
) -> Findings:
    """``findings`` with its follow-up against ``priors`` (:func:`compare`).

    ``priors`` None means the caller has no patient history to look in (an offline analysis):
    the follow-up then says so instead of claiming there is no prior.  Without lung
    measurements there is no headline to compare, and the follow-up says that.
    """
    if priors is None:
        priors, no_prior_reason = (), "offline analysis: no history of this patient to compare with"
    headline = findings.headline()
    if headline is None:
        followup = _not_compared(("this analysis has no lung measurements to compare",))
    else:
        acquisition = findings.acquisition.as_dict() if findings.acquisition is not None else {}
        followup = compare(
            priors,
            current_headline=headline,
            current_acquisition=acquisition,
            current_study_date=study_date,
            no_prior_reason=no_prior_reason,
        )
    return dataclasses.replace(findings, followup=followup)
