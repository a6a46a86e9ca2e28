"""The continuous CO-RADS output (thesis 3.3.3) and QWK (3.3.7), at their boundaries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.corads.ensemble import combine_members
from models.corads.scoring import (
    category_from_probability,
    class_balanced_weights,
    quadratic_weighted_kappa,
    target_from_category,
)


@pytest.mark.parametrize(
    ("p", "category"),
    [
        (0.0, 1),
        (math.nextafter(0.125, 0.0), 1),
        (0.125, 2),  # 4p = 0.5: ties go up (Python's round() would give 1)
        (0.375, 3),
        (math.nextafter(0.625, 0.0), 3),
        (0.625, 4),  # 4p = 2.5: ties go up (round() would give 3)
        (0.875, 5),
        (1.0, 5),
    ],
)
def test_category_boundaries_round_half_up(p: float, category: int) -> None:
    assert category_from_probability(p) == category


@pytest.mark.parametrize("p", [-0.01, 1.01, float("nan")])
def test_probabilities_outside_the_unit_interval_are_refused(p: float) -> None:
    with pytest.raises(ValueError):
        category_from_probability(p)


def test_targets_are_uniformly_spaced_and_invert() -> None:
    assert [target_from_category(c) for c in range(1, 6)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all(category_from_probability(target_from_category(c)) == c for c in range(1, 6))
    with pytest.raises(ValueError):
        target_from_category(0)


def test_ensemble_averages_probabilities_before_rounding() -> None:
    members = [0.15, 0.15, 0.0]
    own = [category_from_probability(p) for p in members]
    assert own == [2, 2, 1]  # a vote of the members' categories would say 2
    result = combine_members(members)
    assert result.score == pytest.approx(0.1)
    assert result.category == 1  # round(4 * 0.1) + 1
    assert result.members == (0.15, 0.15, 0.0)
    with pytest.raises(ValueError):
        combine_members([])


def test_qwk_known_values() -> None:
    assert quadratic_weighted_kappa([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]) == 1.0
    # Reversed ratings: the worst possible agreement for uniform marginals.
    assert quadratic_weighted_kappa([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    # Hand count: O = 1/4 on (1,1), (1,2), (3,3), (3,3); E from the marginals.
    truth, predicted = [1, 1, 3, 3], [1, 2, 3, 3]
    observed = 0.25 * (1 / 16)
    rows, columns = {0: 0.5, 2: 0.5}, {0: 0.25, 1: 0.25, 2: 0.5}
    expected = sum(r * c * (i - j) ** 2 / 16 for i, r in rows.items() for j, c in columns.items())
    assert quadratic_weighted_kappa(truth, predicted) == pytest.approx(1 - observed / expected)


def test_class_balanced_weights_equalise_classes() -> None:
    truth = [1, 1, 1, 2, 5]
    weights = class_balanced_weights(truth)
    totals = {c: weights[np.asarray(truth) == c].sum() for c in set(truth)}
    assert all(t == pytest.approx(1.0) for t in totals.values())
    # A weighted QWK equals the unweighted QWK of the data set with cases repeated by weight.
    predicted = [1, 2, 1, 3, 4]
    repeated_truth = [1, 1, 1, 2, 2, 2, 5, 5, 5]
    repeated_predicted = [1, 2, 1, 3, 3, 3, 4, 4, 4]
    assert quadratic_weighted_kappa(truth, predicted, weights) == pytest.approx(
        quadratic_weighted_kappa(repeated_truth, repeated_predicted)
    )
