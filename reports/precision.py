"""The precision every weight-free number is reported with, the same in the SR and the PDF.

Clinically meaningful precision (issue 15): volumes to 1 mL, percentages to 0.1, attenuation to
1 HU, mass to 1 g, ratios and the cluster exponent D to 0.01; zone scores are integers.  A change
since the prior is given with the precision of the number it changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from models.findings import HEADLINE_KEYS

__all__ = ["HEADLINE_DIGITS", "PRECISION"]

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
