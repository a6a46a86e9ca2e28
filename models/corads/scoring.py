"""The continuous CO-RADS output and its evaluation (thesis sections 3.3.3, 3.3.5 and 3.3.7).

The network has one sigmoid output ``p``; CO-RADS ``c`` in 1..5 is trained with the target
``(c - 1) / 4`` and binary cross-entropy, and read back as ``round(4p) + 1`` (T§3.3.3,
"Continuous output").  The thesis says "rounded to the nearest integer" and leaves ties open;
here a tie rounds **up** (``floor(4p + 1/2)``), so a score exactly between two categories is
reported as the more suspicious one, which is the safer error for a triage aid.  The boundaries
are therefore ``p = 0.125, 0.375, 0.625, 0.875``, each belonging to the higher category.

Models are selected on the quadratic weighted kappa (QWK, T§3.3.7) of a class-balanced
validation set (T§3.3.5); the balance is expressed as per-sample weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "CATEGORIES",
    "category_from_probability",
    "class_balanced_weights",
    "quadratic_weighted_kappa",
    "target_from_category",
]

#: The five CO-RADS categories.
CATEGORIES: tuple[int, ...] = (1, 2, 3, 4, 5)


def target_from_category(category: int) -> float:
    """Training target ``(c - 1) / 4`` of CO-RADS ``c`` (1 -> 0, 5 -> 1; T§3.3.3).

    Raises
    ------
    ValueError
        If ``category`` is not one of 1..5.
    """
    if category not in CATEGORIES:
        raise ValueError(f"CO-RADS must be one of 1..5, got {category!r}")
    return (category - 1) / 4.0


def category_from_probability(p: float) -> int:
    """CO-RADS ``floor(4p + 1/2) + 1`` of a sigmoid output (ties to the higher category).

    Raises
    ------
    ValueError
        If ``p`` is not a number in [0, 1].
    """
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"a CO-RADS probability must be in [0, 1], got {p!r}")
    # 4p is exact in binary floating point; adding 0.5 first would round 0.49999999999999994 up.
    scaled = 4.0 * float(p)
    whole = math.floor(scaled)
    return whole + (1 if scaled - whole >= 0.5 else 0) + 1


def class_balanced_weights(categories: Sequence[int]) -> np.ndarray:
    """Per-sample weights that give every CO-RADS category present the same total weight.

    This is the "balanced samples" of the validation monitoring (T§3.3.5): a weighted QWK with
    these weights equals, in expectation, the QWK of a validation set resampled to equal class
    sizes, without the noise of resampling.
    """
    values = np.asarray(categories, dtype=int)
    counts = {c: int(np.count_nonzero(values == c)) for c in set(values.tolist())}
    return np.asarray([1.0 / counts[int(c)] for c in values], dtype=float)


def quadratic_weighted_kappa(
    truth: Sequence[int], predicted: Sequence[int], weights: Sequence[float] | np.ndarray | None = None
) -> float:
    """Cohen's kappa with quadratic disagreement weights over CO-RADS 1..5 (T§3.3.7).

    Parameters
    ----------
    truth, predicted : sequence of int
        Categories in 1..5.
    weights : sequence of float, optional
        Per-sample weights (e.g. :func:`class_balanced_weights`); equal by default.

    Returns
    -------
    float
        ``1 - sum(W * O) / sum(W * E)`` with ``O`` the (weighted) confusion matrix, ``E`` the
        product of its marginals and ``W[i, j] = (i - j)^2 / 16``; 1.0 when both raters put
        everything in one and the same category (no disagreement is possible).

    Raises
    ------
    ValueError
        For different lengths, no samples, or categories outside 1..5.
    """
    t = np.asarray(truth, dtype=int)
    p = np.asarray(predicted, dtype=int)
    w = np.ones(len(t)) if weights is None else np.asarray(weights, dtype=float)
    if not len(t) == len(p) == len(w) or len(t) == 0:
        raise ValueError(f"need equally many truths, predictions and weights, got {len(t)}, {len(p)}, {len(w)}")
    if not (np.isin(t, CATEGORIES).all() and np.isin(p, CATEGORIES).all()):
        raise ValueError("categories must be in 1..5")
    k = len(CATEGORIES)
    observed = np.zeros((k, k))
    np.add.at(observed, (t - 1, p - 1), w)
    observed /= observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    index = np.arange(k)
    disagreement = (index[:, None] - index[None, :]) ** 2 / (k - 1) ** 2
    denominator = float((disagreement * expected).sum())
    if denominator == 0.0:
        return 1.0
    return 1.0 - float((disagreement * observed).sum()) / denominator
