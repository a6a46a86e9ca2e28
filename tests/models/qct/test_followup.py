"""Follow-up comparison: which prior is taken, when there is none, and what qualifies the changes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from models.findings import HEADLINE_KEYS, PriorAnalysis
from models.phantom import chest_phantom, densitometry_phantom
from models.pipeline import analyse
from models.qct.densitometry import analyse_densitometry
from models.qct.followup import compare, with_followup
from models.volume import PatientContext
from tests.models.qct.test_densitometry import Truth

SOFT_2MM = {"slice_thickness_mm": 2.0, "kernel": "B40f", "sharp_kernel": False, "contrast": False}
HEADLINE = {
    "lung_volume_ml": 5000.0,
    "well_aerated_pct": 80.0,
    "zone_score_total": 6,
    "laa950_pct": 4.0,
    "perc15_hu": -920.0,
    "lung_mass_g": 900.0,
}


def _prior(date: str, series: str = "1.2.3", headline: dict[str, Any] | None = None, **acq: Any) -> PriorAnalysis:
    return PriorAnalysis(
        study_instance_uid=f"1.2.{date}",
        series_instance_uid=series,
        study_date=date,
        headline=headline or HEADLINE,
        acquisition={**SOFT_2MM, **acq},
        sr_sop_instance_uid=f"1.9.{date}",
    )


def _compare(priors: list[PriorAnalysis], **current: Any) -> Any:
    headline = {**HEADLINE, "well_aerated_pct": 60.0, "zone_score_total": 11, "lung_volume_ml": 4800.0}
    return compare(
        priors,
        current_headline=current.pop("headline", headline),
        current_acquisition={**SOFT_2MM, **current.pop("acquisition", {})},
        current_study_date=current.pop("date", "20260301"),
    )


def test_no_prior_says_so() -> None:
    result = _compare([])
    assert (result.prior, result.comparable, result.reasons) == (
        None,
        False,
        ("no earlier analysed chest CT of this patient",),
    )


def test_the_latest_comparable_prior_is_compared_number_by_number() -> None:
    result = _compare([_prior("20251201"), _prior("20260201"), _prior("20250101")])
    assert result.comparable and result.prior is not None and result.prior.study_date == "20260201"
    assert result.interval_days == 28
    assert set(result.changes) == set(HEADLINE_KEYS)
    assert result.changes["well_aerated_pct"].delta == pytest.approx(-20.0)
    assert result.changes["zone_score_total"].delta == 5
    assert result.changes["lung_volume_ml"].delta == -200.0
    assert result.caveats == ()


@pytest.mark.parametrize(
    ("acquisition", "words"),
    [
        ({"slice_thickness_mm": 5.0}, "slice thickness 5 mm then and 2 mm now"),
        ({"sharp_kernel": True, "kernel": "B70f"}, "a sharp reconstruction kernel then (B70f) and a soft one now"),
        ({"slice_thickness_mm": None}, "slice thickness of one of the scans is unknown"),
    ],
)
def test_another_reconstruction_is_not_compared_and_says_why(acquisition: dict[str, Any], words: str) -> None:
    result = _compare([_prior("20260201", **acquisition)])
    assert not result.comparable and result.changes == {}
    assert any(words in reason for reason in result.reasons), result.reasons


def test_an_older_comparable_prior_wins_over_a_newer_incomparable_one() -> None:
    result = _compare([_prior("20260201", slice_thickness_mm=5.0), _prior("20251101")])
    assert result.comparable and result.prior is not None and result.prior.study_date == "20251101"


def test_in_one_study_the_series_of_closest_thickness_is_taken() -> None:
    result = _compare([_prior("20260201", "thin", slice_thickness_mm=1.0), _prior("20260201", "two")])
    assert result.prior is not None and result.prior.series_instance_uid == "two"


def test_contrast_and_inspiration_qualify_the_changes() -> None:
    result = _compare([_prior("20260201", contrast=True, headline={**HEADLINE, "lung_volume_ml": 3500.0})])
    assert result.comparable
    assert any(c.startswith("contrast medium then only") for c in result.caveats)
    assert any(c.startswith("lung volume changed by +37 %") for c in result.caveats)


def test_a_missing_number_gives_no_delta_and_a_later_prior_is_not_history() -> None:
    result = _compare([_prior("20260201", headline={**HEADLINE, "zone_score_total": None})])
    assert result.changes["zone_score_total"].delta is None
    later = _compare([_prior("20270101")])
    assert not later.comparable and "later study date" in later.reasons[0]


def test_phantom_follow_up_deltas_equal_the_change_of_the_truth() -> None:
    """A dense ball grown from 8 to 12 mm between two scans: the well-aerated % and the zone score
    change by exactly what the phantoms' material truth says (band counts are exact, see Truth)."""
    scans = [densitometry_phantom(ball_radius_mm=r) for r in (8.0, 12.0)]
    headlines, expected = [], []
    for phantom in scans:
        d = analyse_densitometry(phantom.volume(), phantom.left, phantom.right, "classical_lung_mask")
        truth = Truth(phantom)
        lungs = truth.zone > 0
        well = np.count_nonzero(truth.band[lungs] == "well_aerated")
        expected.append(100.0 * well / np.count_nonzero(lungs))
        headlines.append({**HEADLINE, "well_aerated_pct": d.well_aerated_pct, "zone_score_total": d.zone_score_total})
    prior = PriorAnalysis(
        study_instance_uid="1.2.1",
        series_instance_uid="1.2.1.1",
        study_date="20260101",
        headline=headlines[0],
        acquisition=SOFT_2MM,
    )
    result = compare(
        [prior], current_headline=headlines[1], current_acquisition=SOFT_2MM, current_study_date="20260115"
    )
    assert result.comparable and result.interval_days == 14
    delta = result.changes["well_aerated_pct"].delta
    assert delta is not None and delta < 0
    assert delta == pytest.approx(expected[1] - expected[0], abs=1e-6)
    assert result.changes["lung_volume_ml"].delta == 0.0


def test_an_offline_analysis_says_it_has_no_history_and_the_result_carries_it() -> None:
    phantom = chest_phantom((38, 192, 192), (8.0, 2.0, 2.0))
    findings = with_followup(analyse(phantom.volume(), PatientContext(age_years=50.0, sex=None)), None, study_date=None)
    assert findings.followup is not None and not findings.followup.comparable
    assert findings.followup.reasons == ("offline analysis: no history of this patient to compare with",)
    out = findings.as_dict()["followup"]
    assert out["comparable"] is False and out["prior"] is None and out["provenance"] == "weight_free"
    assert "same kind of kernel" in out["criteria"]
