"""The summing-digits experiment (thesis 2.4.1): trained on bag sums only, right on single digits."""

from __future__ import annotations

import pytest
import torch

from models.i3dr.digits import DigitFeatures, digit_benchmark, load_digit_splits


def test_bag_sum_training_learns_single_digits() -> None:
    # Bags of two digits labelled with their sum only; evaluated on single test digits (T2.4.1).
    result = digit_benchmark(2, seed=0, steps=300, validate_every=100)
    assert set(result) >= {"bag_size", "digit_mae", "digit_accuracy", "bag_mean_mae", "baseline_mae", "seconds"}
    assert result["bag_size"] == 2 and result["steps"] == 300
    assert 2.0 < result["baseline_mae"] < 3.0  # predicting the mean digit of 0-9
    # The bag label alone puts a digit at its bag's mean, |d1 - d2| / 2 away: over random pairs of test
    # digits that is E|d1 - d2| / 2, computed here from the labels (224 bags: standard error about 0.08).
    labels = load_digit_splits(0).test_y.double()
    expected = float((labels[:, None] - labels[None, :]).abs().sum() / (len(labels) * (len(labels) - 1))) / 2
    assert result["bag_mean_mae"] == pytest.approx(expected, abs=0.25)
    assert result["digit_mae"] < 0.5 * result["bag_mean_mae"], result
    assert result["digit_accuracy"] > 2.5 * result["bag_mean_accuracy"], result


def test_splits_and_arguments() -> None:
    splits = load_digit_splits(0)
    sizes = (len(splits.train_y), len(splits.validation_y), len(splits.test_y))
    assert sum(sizes) == 1797 and sizes[2] == 449
    assert splits.train_x.shape[1:] == (1, 8, 8) and float(splits.train_x.max()) == 1.0
    assert DigitFeatures(8)(splits.test_x[:3]).shape == (3, 8)
    with pytest.raises(ValueError, match="bag_size"):
        digit_benchmark(0)
    with pytest.raises(ValueError, match="bag_size"):
        digit_benchmark(len(splits.train_y) + 1)
    with pytest.raises(ValueError, match="validation_bags"):
        digit_benchmark(2, validation_bags=0)
    with pytest.raises(ValueError, match="width"):
        DigitFeatures(0)


def test_fixed_bags_use_one_partition() -> None:
    # Bag size 400 leaves two fixed bags: each step (one bag) alternates between them.
    result = digit_benchmark(400, steps=4, validate_every=2, fixed_bags=True, validation_bags=4)
    assert result["fixed_bags"] is True and result["best_step"] in (2, 4)
    assert torch.isfinite(torch.tensor(result["digit_mae"]))
