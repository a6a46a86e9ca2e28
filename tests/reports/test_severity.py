"""CT severity score rules of seeds/003: lobe thresholds, categories, consistency checks."""

from __future__ import annotations

import pytest

from models.findings import SeverityResult
from reports.severity import check_severity, ctss_for_involvement, severity_category


@pytest.mark.parametrize(
    ("pct", "score"),
    [
        (0.0, 0),
        (0.01, 1),
        (4.99, 1),
        (5.0, 2),
        (25.0, 2),
        (25.01, 3),
        (50.0, 3),
        (50.5, 4),
        (75.0, 4),
        (75.01, 5),
        (100.0, 5),
    ],
)
def test_lobe_score_thresholds(pct: float, score: int) -> None:
    assert ctss_for_involvement(pct) == score


def test_lobe_score_rejects_impossible_percentages() -> None:
    with pytest.raises(ValueError, match="0-100"):
        ctss_for_involvement(-1.0)
    with pytest.raises(ValueError, match="0-100"):
        ctss_for_involvement(100.5)


@pytest.mark.parametrize(
    ("total", "category"),
    [(0, "none"), (1, "mild"), (5, "mild"), (6, "moderate"), (14, "moderate"), (15, "severe"), (25, "severe")],
)
def test_total_categories(total: int, category: str) -> None:
    assert severity_category(total) == category


def test_total_category_range() -> None:
    with pytest.raises(ValueError, match="0-25"):
        severity_category(26)


def test_check_severity_accepts_rounding_at_thresholds() -> None:
    check_severity(SeverityResult(lobes={"RLL": {"involvement_pct": 25.3, "ctss": 2}}, total_ctss=2))
    check_severity(SeverityResult(lobes={"RLL": {"involvement_pct": 25.3, "ctss": 3}}, total_ctss=3))


@pytest.mark.parametrize(
    ("lobes", "total", "message"),
    [
        ({"RLL": {"involvement_pct": 30.0, "ctss": 2}}, 2, "contradicts involvement"),
        ({"RLL": {"involvement_pct": 30.0, "ctss": 2.5}}, 2, "integer 0-5"),
        ({"RLL": {"involvement_pct": 130.0, "ctss": 5}}, 5, "0-100"),
        ({"RLL": {"involvement_pct": 30.0}}, 3, "needs involvement_pct and ctss"),
        ({"XYZ": {"involvement_pct": 30.0, "ctss": 3}}, 3, "not one of"),
        ({"RLL": {"involvement_pct": 30.0, "ctss": 3}}, 4, "sum of lobe scores"),
    ],
)
def test_check_severity_rejects(lobes: dict[str, dict[str, float]], total: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_severity(SeverityResult(lobes=lobes, total_ctss=total))
