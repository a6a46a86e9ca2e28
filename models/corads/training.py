"""Training of the CO-RADS ensemble with the recipe of thesis section 3.3 (``lungcds train corads``).

Per member (T§3.3.3, 3.3.5, 3.3.6): the zoo network with one output (3D DenseNet-201 as
deployed), optionally initialised by inflating 2D weights (ImageNet in the thesis); targets
``(CO-RADS - 1) / 4`` with binary cross-entropy on the logit; Adam (0.9, 0.999), learning rate
1e-4, batch size 2; the augmentation of T§3.3.5 on the torch device; every ``validate_every``
batches, the quadratic weighted kappa on the class-balanced validation set; early stopping when
it has not improved for ``patience`` batches (10 000 in the thesis); the best state is kept.
Members differ only in their seed; the ensemble file holds the best state of each.

Outputs, in ``output_dir``: ``member_seed{seed}.safetensors`` (rewritten at every improvement, a
one-member ensemble file) and ``corads_ensemble.safetensors`` (all members), each with a model
card that records the data (CSV path and SHA-256, cases per split and class), seeds, metrics,
hyperparameters and code version.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from models.corads.augmentation import AugmentationConfig, augment_batch
from models.corads.data import CoradsCase, load_cases, read_csv, split_rows
from models.corads.ensemble import DEPLOYED_ARCHITECTURE, make_model_card, save_ensemble_file
from models.corads.preprocessing import PreprocessingConfig
from models.corads.scoring import (
    category_from_probability,
    class_balanced_weights,
    quadratic_weighted_kappa,
    target_from_category,
)
from models.zoo import build, inflate_into

__all__ = ["ENSEMBLE_FILE", "MemberResult", "TrainingConfig", "TrainingResult", "evaluate", "train_corads"]

logger = logging.getLogger(__name__)

#: Name of the ensemble file in the output folder.
ENSEMBLE_FILE = "corads_ensemble.safetensors"


@dataclass(frozen=True)
class TrainingConfig:
    """Everything a training run depends on; defaults are the thesis' recipe.

    Attributes
    ----------
    csv_path : pathlib.Path
        The data (format in :mod:`models.corads.data`).
    output_dir : pathlib.Path
        Where checkpoints go.
    architecture : str
        Zoo name of the members (``densenet201_3d``, T§3.4.1).
    architecture_overrides : mapping
        Keyword arguments for :func:`models.zoo.build` (e.g. a small ``growth_rate`` and
        ``block_config`` for quick experiments).
    pretrained_2d : pathlib.Path or None
        A safetensors file with the weights of the matching 2D network (torchvision names),
        inflated into each member before training (T§3.3.3, "Pre-training").
    preprocessing : PreprocessingConfig
        Input construction (T§3.3.4).
    augmentation : AugmentationConfig or None
        Random transforms (T§3.3.5); ``None`` disables augmentation.
    seeds : tuple of int
        One member per seed (T§3.3.6 trained 10).
    batch_size, learning_rate, betas
        Optimiser settings (2, 1e-4, (0.9, 0.999); T§3.3.5).
    validation_fraction, split_seed
        Random stratified split when the CSV has no ``split`` column (0.25; T§3.3.1).
    validate_every : int
        Batches between validations.
    patience : int
        Batches without improvement of the validation QWK before stopping (10 000; T§3.3.5).
    max_batches : int
        Upper bound on training batches per member.
    gradient_checkpointing : bool
        Trade compute for memory (T§3.3.5 used it where needed).
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    cache_dir : pathlib.Path or None
        Folder for preprocessed inputs (``.npy``); in memory when ``None``.
    """

    csv_path: Path
    output_dir: Path
    architecture: str = DEPLOYED_ARCHITECTURE
    architecture_overrides: Mapping[str, Any] = field(default_factory=dict)
    pretrained_2d: Path | None = None
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)
    augmentation: AugmentationConfig | None = field(default_factory=AugmentationConfig)
    seeds: tuple[int, ...] = (0,)
    batch_size: int = 2
    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    validation_fraction: float = 0.25
    split_seed: int = 0
    validate_every: int = 500
    patience: int = 10_000
    max_batches: int = 200_000
    gradient_checkpointing: bool = False
    device: str = "cpu"
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("at least one seed (one member) is needed")
        positive = {
            "batch_size": self.batch_size,
            "validate_every": self.validate_every,
            "patience": self.patience,
            "max_batches": self.max_batches,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        if not 0.0 < self.validation_fraction < 1.0 or self.learning_rate <= 0:
            raise ValueError(f"need 0 < validation_fraction < 1 and a positive learning rate, got {self}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable hyperparameters, for the model card."""
        return {
            "architecture": self.architecture,
            "architecture_overrides": dict(self.architecture_overrides),
            "pretrained_2d": str(self.pretrained_2d) if self.pretrained_2d else None,
            "augmentation": self.augmentation.as_dict() if self.augmentation else None,
            "batch_size": self.batch_size,
            "optimizer": {"name": "Adam", "learning_rate": self.learning_rate, "betas": list(self.betas)},
            "loss": "binary cross-entropy on the logit, target (CO-RADS - 1) / 4",
            "validation_fraction": self.validation_fraction,
            "split_seed": self.split_seed,
            "validate_every": self.validate_every,
            "patience_batches": self.patience,
            "max_batches": self.max_batches,
            "gradient_checkpointing": self.gradient_checkpointing,
            "device": self.device,
        }


@dataclass(frozen=True)
class MemberResult:
    """How one member's training went.

    Attributes
    ----------
    seed : int
        Its seed.
    best_validation_qwk : float
        Class-balanced validation QWK of the kept state.
    best_batch : int
        Batch after which the kept state was validated.
    batches : int
        Batches trained.
    stopped_early : bool
        True when the patience ran out before ``max_batches``.
    checkpoint : pathlib.Path
        Its one-member ensemble file.
    history : tuple of tuple
        ``(batch, mean training loss since the last validation, validation QWK)`` per validation.
    """

    seed: int
    best_validation_qwk: float
    best_batch: int
    batches: int
    stopped_early: bool
    checkpoint: Path
    history: tuple[tuple[int, float, float], ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, for the model card."""
        return {
            "seed": self.seed,
            "best_validation_qwk_class_balanced": self.best_validation_qwk,
            "best_batch": self.best_batch,
            "batches": self.batches,
            "stopped_early": self.stopped_early,
            "history": [list(h) for h in self.history],
        }


@dataclass(frozen=True)
class TrainingResult:
    """The ensemble file, per-member results and the model card written with it."""

    ensemble_path: Path
    members: tuple[MemberResult, ...]
    card: dict[str, Any]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stack(cases: Sequence[CoradsCase], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Inputs, targets and CT-channel masks of a batch, on ``device``."""
    inputs = torch.stack([case.tensor() for case in cases]).to(device)
    targets = torch.tensor([target_from_category(case.corads) for case in cases], device=device)
    ct = torch.tensor([[True, not c.has_lesion_map, not c.has_lesion_map] for c in cases], device=device)
    return inputs, targets, ct


def evaluate(model: nn.Module, cases: Sequence[CoradsCase], device: torch.device, batch_size: int = 2) -> np.ndarray:
    """Sigmoid outputs of ``model`` (switched to eval mode) for ``cases``, in order."""
    model.eval()
    outputs: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(cases), batch_size):
            inputs, _, _ = _stack(cases[start : start + batch_size], device)
            outputs.extend(torch.sigmoid(model(inputs).float().reshape(-1)).cpu().tolist())
    return np.asarray(outputs)


def _balanced_qwk(probabilities: np.ndarray, cases: Sequence[CoradsCase]) -> float:
    """QWK of the categories with class-balanced sample weights (T§3.3.5)."""
    truth = [case.corads for case in cases]
    predicted = [category_from_probability(float(p)) for p in probabilities]
    return quadratic_weighted_kappa(truth, predicted, class_balanced_weights(truth))


def _new_member(config: TrainingConfig, seed: int) -> tuple[nn.Module, dict[str, Any] | None]:
    """A seeded member, inflated from 2D weights when configured, and the inflation summary."""
    torch.manual_seed(seed)
    overrides = {**config.architecture_overrides, "gradient_checkpointing": config.gradient_checkpointing}
    model = build(config.architecture, num_outputs=1, in_channels=3, **overrides)
    if config.pretrained_2d is None:
        return model, None
    report = inflate_into(model, load_file(str(config.pretrained_2d)))
    summary = {"inflated": len(report.inflated), "copied": len(report.copied), "kept": list(report.kept)}
    return model, summary


def _train_member(
    config: TrainingConfig,
    seed: int,
    train: Sequence[CoradsCase],
    validation: Sequence[CoradsCase],
    card: dict[str, Any],
) -> tuple[MemberResult, nn.Module]:
    """Train one member with early stopping; returns its result and its best state."""
    device = torch.device(config.device)
    model, inflation = _new_member(config, seed)
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate, betas=config.betas)
    loss_function = nn.BCEWithLogitsLoss()
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    checkpoint = config.output_dir / f"member_seed{seed}.safetensors"
    order: list[int] = []
    best_qwk, best_batch, best_model = -np.inf, 0, copy.deepcopy(model)
    history: list[tuple[int, float, float]] = []
    losses: list[float] = []
    batch = 0
    stopped_early = False
    while batch < config.max_batches:
        if len(order) < config.batch_size:
            order = rng.permutation(len(train)).tolist()
        chosen = [train[order.pop()] for _ in range(config.batch_size)]
        inputs, targets, ct = _stack(chosen, device)
        if config.augmentation is not None:
            inputs = augment_batch(inputs, ct, config.augmentation, generator)
        model.train()
        loss = loss_function(model(inputs).reshape(-1), targets)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        batch += 1
        if batch % config.validate_every and batch != config.max_batches:
            continue
        qwk = _balanced_qwk(evaluate(model, validation, device, config.batch_size), validation)
        history.append((batch, float(np.mean(losses)), qwk))
        losses.clear()
        logger.info("seed %d batch %d: validation QWK %.3f (best %.3f)", seed, batch, qwk, best_qwk)
        if qwk > best_qwk:
            best_qwk, best_batch, best_model = qwk, batch, copy.deepcopy(model)
            member_card = {**card, "seeds": [seed], "metrics": {"best_validation_qwk_class_balanced": qwk}}
            member_card["training"] = {**card["training"], "best_batch": batch, "inflation": inflation}
            save_ensemble_file(checkpoint, [best_model], {**member_card, "members": 1})
        elif batch - best_batch >= config.patience:
            stopped_early = True
            break
    result = MemberResult(seed, float(best_qwk), best_batch, batch, stopped_early, checkpoint, tuple(history))
    return result, best_model.eval()


def train_corads(config: TrainingConfig) -> TrainingResult:
    """Train the CO-RADS ensemble of ``config`` and write its checkpoints (module docstring).

    Parameters
    ----------
    config : TrainingConfig
        Data, network and recipe.

    Returns
    -------
    TrainingResult
        Path of the ensemble file, per-member results, and its model card.

    Raises
    ------
    ValueError
        For an invalid CSV, an empty split, or unreadable images.
    """
    rows = read_csv(config.csv_path)
    train_rows, validation_rows = split_rows(rows, config.validation_fraction, config.split_seed)
    logger.info("preparing %d training and %d validation cases", len(train_rows), len(validation_rows))
    train = load_cases(train_rows, config.preprocessing, config.cache_dir)
    validation = load_cases(validation_rows, config.preprocessing, config.cache_dir)
    config.output_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "csv": str(config.csv_path),
        "csv_sha256": _sha256(config.csv_path),
        "train_cases": len(train),
        "validation_cases": len(validation),
        "train_per_corads": {str(c): sum(r.corads == c for r in train_rows) for c in range(1, 6)},
        "validation_per_corads": {str(c): sum(r.corads == c for r in validation_rows) for c in range(1, 6)},
    }
    card = make_model_card(
        architecture=config.architecture,
        members=len(config.seeds),
        preprocessing=config.preprocessing,
        architecture_overrides=config.architecture_overrides,
        data=data,
        training={**config.as_dict(), "started_utc": datetime.now(UTC).isoformat()},
    )
    results: list[MemberResult] = []
    members: list[nn.Module] = []
    for seed in config.seeds:
        result, member = _train_member(config, seed, train, validation, card)
        results.append(result)
        members.append(member)
    card = {**card, "seeds": list(config.seeds), "metrics": {"members": [r.as_dict() for r in results]}}
    card["training"] = {**card["training"], "finished_utc": datetime.now(UTC).isoformat()}
    path = save_ensemble_file(config.output_dir / ENSEMBLE_FILE, members, card)
    return TrainingResult(path, tuple(results), card)
