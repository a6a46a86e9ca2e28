"""What every STOIC2021 member provides, so that the ensemble can run any subset of them.

A member is one final-phase codebase as its authors ran it at inference (thesis chapter 4,
Table 4.1; ``../shared/spec/models.md`` sections 1 and 4): its own preprocessing, networks,
test-time augmentation and output definition.  Each member module exposes a class satisfying
:class:`StoicMember`, built either from an installed safetensors file (``from_safetensors``) or
with generated demonstration weights (``demo``), whose outputs are never clinical results.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from models.findings import Volume

__all__ = ["MemberInputs", "MemberOutput", "StoicMember", "MemberUnavailable", "age_bin"]


class MemberUnavailable(Exception):
    """A member cannot run on this input (e.g. it needs a lesion mask that does not exist).

    ``reason`` is shown in the report next to the member's name.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class MemberInputs:
    """Everything a member may use: the CT, masks on its grid, and the patient's age and sex.

    ``age_years`` and ``sex`` come from the DICOM header and may be None (unknown); members
    handle missing values the way their authors did and say so in ``MemberOutput.notes``.
    """

    volume: Volume
    lungs: np.ndarray
    lung_left: np.ndarray
    lung_right: np.ndarray
    lesions: np.ndarray | None = None
    age_years: float | None = None
    sex: str | None = None


@dataclass(frozen=True)
class MemberOutput:
    """One member's probabilities (None for an output the member does not produce)."""

    p_covid: float | None
    p_severe: float | None
    notes: tuple[str, ...] = ()
    details: Mapping[str, float] = field(default_factory=dict)


class StoicMember(Protocol):
    """One STOIC2021 final-phase member, loaded and ready to predict."""

    #: Registry name, e.g. ``"stoic_code1055"``.
    name: str
    #: Model card (architecture, preprocessing, provenance; ``"demo": true`` for generated weights).
    card: Mapping[str, Any]

    def predict(self, inputs: MemberInputs) -> MemberOutput:
        """P(COVID-19) and/or P(severe) for one series; raises MemberUnavailable when it cannot run."""

    def save(self, path: Path) -> Path:
        """Write the member's weights and card as one safetensors file."""


def age_bin(age_years: float | None) -> int | None:
    """Age as STOIC2021 provided it: ten-year bins labelled 35, 45, ..., 85 (thesis 4.2).

    Members map these labels onto their own scales (e.g. Flying Bird: 35 → 0 ... 85 → 1), so a
    real age is first put into the bin STOIC would have given: below 40 → 35, 40-49 → 45, ...,
    80 and above → 85.  Unknown or impossible ages give None.
    """
    if age_years is None or not np.isfinite(age_years) or age_years < 0:
        return None
    return int(min(85, max(35, (age_years // 10) * 10 + 5)))
