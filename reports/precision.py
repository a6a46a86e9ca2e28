"""The precision every weight-free number is reported with, the same in the SR and the PDF.

Clinically meaningful precision (issue 15): volumes to 1 mL, percentages to 0.1, attenuation to
1 HU, mass to 1 g, ratios and the cluster exponent D to 0.01; zone scores are integers.  A change
since the prior is given with the precision of the number it changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from models.findings import HEADLINE_KEYS

__all__ = ["HEADLINE_DIGITS", "HEADLINE_WORDS", "PRECISION", "headline_change", "headline_value"]

#: Decimals of each kind of weight-free value.
PRECISION: Mapping[str, int] = MappingProxyType({"volume": 0, "percent": 1, "hu": 0, "mass": 0, "ratio": 2})
#: Decimals of each headline number (``models.findings.HEADLINE_KEYS``) and of its change since the prior.
HEADLINE_DIGITS: Mapping[str, int] = MappingProxyType(
    {
        "lung_volume_ml": PRECISION["volume"],
        "well_aerated_pct": PRECISION["percent"],
        "zone_score_total": 0,
        "laa950_pct": PRECISION["percent"],
        "perc15_hu": PRECISION["hu"],
        "lung_mass_g": PRECISION["mass"],
    }
)
assert set(HEADLINE_DIGITS) == set(HEADLINE_KEYS)

#: Each headline number in words, its unit and the unit of a change of it (a change of a
#: percentage is in percentage points); the PDF and the key-image Secondary Capture print them
#: with :func:`headline_value` and :func:`headline_change`.
HEADLINE_WORDS: Mapping[str, tuple[str, str, str]] = MappingProxyType(
    {
        "lung_volume_ml": ("Lung volume", "mL", "mL"),
        "well_aerated_pct": ("Well-aerated lung (-950 to -700 HU)", "%", "%-points"),
        "zone_score_total": ("Weight-free density-based zone score", "/ 30", "points"),
        "laa950_pct": ("Low attenuation below -950 HU (LAA-950)", "%", "%-points"),
        "perc15_hu": ("15th percentile of attenuation (Perc15)", "HU", "HU"),
        "lung_mass_g": ("Lung mass", "g", "g"),
    }
)
assert set(HEADLINE_WORDS) == set(HEADLINE_KEYS)


def headline_value(key: str, value: float | None, missing: str) -> str:
    """A headline number with its unit at its precision, e.g. "5605 mL"; ``missing`` when None."""
    return missing if value is None else f"{value:.{HEADLINE_DIGITS[key]}f} {HEADLINE_WORDS[key][1]}"


def headline_change(key: str, delta: float | None, missing: str) -> str:
    """A change of a headline number, signed, in the unit of a change, e.g. "+1.5 %-points"."""
    return missing if delta is None else f"{delta:+.{HEADLINE_DIGITS[key]}f} {HEADLINE_WORDS[key][2]}"
