"""CT severity score (CTSS) of infectious lung involvement, as the seeds define it.

seeds/003 ("Segmentation model"), after Pan et al.: each of the five lobes scores 0-5 from
the percentage of its volume involved by infectious opacities -- 0 none, 1 less than 5 %,
2 5-25 %, 3 26-50 %, 4 51-75 %, 5 76-100 % -- and the lobe scores add up to a total of 0-25,
categorised as mild (1-5), moderate (6-14) or severe (15-25).  The report writers use these
rules only to *check* ``Findings.severity`` (a score that contradicts its involvement is a bug
upstream and must not reach PACS) and to name the category; they never recompute the score.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from models.findings import LOBE_NAMES, SeverityResult

__all__ = [
    "CTSS_UPPER_BOUNDS_PCT",
    "INVOLVEMENT_TOLERANCE_PCT",
    "SeverityCategory",
    "check_severity",
    "ctss_for_involvement",
    "severity_category",
]

SeverityCategory = Literal["none", "mild", "moderate", "severe"]

#: Upper bound (inclusive, %) of lobe scores 1-4; above the last bound the score is 5.
CTSS_UPPER_BOUNDS_PCT: tuple[float, ...] = (5.0, 25.0, 50.0, 75.0)
#: Involvement percentages are rounded upstream; a score is accepted when it matches the
#: involvement within this many percentage points.
INVOLVEMENT_TOLERANCE_PCT = 0.5


def ctss_for_involvement(involvement_pct: float) -> int:
    """Lobe CT severity score 0-5 of an involvement percentage (seeds/003 thresholds).

    Parameters
    ----------
    involvement_pct : float
        Percentage 0-100 of the lobe volume involved.

    Returns
    -------
    int
        0 for no involvement, 1 below 5 %, 2 up to 25 %, 3 up to 50 %, 4 up to 75 %, else 5.

    Raises
    ------
    ValueError
        When the percentage is outside 0-100.
    """
    if not 0.0 <= involvement_pct <= 100.0:
        raise ValueError(f"involvement must be a percentage in 0-100, got {involvement_pct}")
    if involvement_pct == 0.0:
        return 0
    if involvement_pct < CTSS_UPPER_BOUNDS_PCT[0]:
        return 1
    for score, bound in enumerate(CTSS_UPPER_BOUNDS_PCT[1:], start=2):
        if involvement_pct <= bound:
            return score
    return 5


def severity_category(total_ctss: int) -> SeverityCategory:
    """Category of a total CT severity score: none (0), mild (1-5), moderate (6-14), severe (15-25).

    Raises
    ------
    ValueError
        When the total is outside 0-25.
    """
    if not 0 <= total_ctss <= 25:
        raise ValueError(f"total CT severity score must be 0-25, got {total_ctss}")
    if total_ctss == 0:
        return "none"
    if total_ctss <= 5:
        return "mild"
    if total_ctss <= 14:
        return "moderate"
    return "severe"


def _check_lobe(lobe: str, values: Mapping[str, float]) -> int:
    if lobe not in LOBE_NAMES:
        raise ValueError(f"severity lobe {lobe!r} is not one of {LOBE_NAMES}")
    if not {"involvement_pct", "ctss"} <= set(values):
        raise ValueError(f"severity.{lobe} needs involvement_pct and ctss, got {sorted(values)}")
    pct = float(values["involvement_pct"])
    score = float(values["ctss"])
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"severity.{lobe}.involvement_pct must be 0-100, got {pct}")
    if score != int(score) or not 0 <= score <= 5:
        raise ValueError(f"severity.{lobe}.ctss must be an integer 0-5, got {values['ctss']}")
    low = ctss_for_involvement(max(0.0, pct - INVOLVEMENT_TOLERANCE_PCT))
    high = ctss_for_involvement(min(100.0, pct + INVOLVEMENT_TOLERANCE_PCT))
    if not low <= score <= high:
        raise ValueError(
            f"severity.{lobe}.ctss {int(score)} contradicts involvement {pct} % "
            f"(seeds/003 thresholds give {ctss_for_involvement(pct)})"
        )
    return int(score)


def check_severity(severity: SeverityResult) -> None:
    """Check a ``Findings.severity`` against the seeds/003 rules.

    Every lobe must be one of ``LOBE_NAMES`` with an involvement of 0-100 % and an integer
    score that matches it (within :data:`INVOLVEMENT_TOLERANCE_PCT`); the total must equal the
    sum of the lobe scores and lie in 0-25.

    Raises
    ------
    ValueError
        On the first rule broken, naming it.
    """
    total = sum(_check_lobe(lobe, values) for lobe, values in severity.lobes.items())
    if not 0 <= severity.total_ctss <= 25:
        raise ValueError(f"severity.total_ctss must be 0-25, got {severity.total_ctss}")
    if severity.total_ctss != total:
        raise ValueError(f"severity.total_ctss {severity.total_ctss} differs from the sum of lobe scores {total}")
