"""Training recipes of the simon.j, hal9000 and etro members, as their final-phase code trained them.

All three read the STOIC training CSV of :mod:`models.stoic.dataset` (etro needs its
``lesion_mask`` column; rows without one are skipped there).  Unknown ages and sexes are handled as
each member's authors did (see the members).

Recipes (models spec section 4; the repository files are cited per recipe):

* :func:`train_simonj` (SJ ``training/train.py``): the ViT features are fixed (taken from an
  existing simon.j file); per output and feature set a ``LogisticRegressionCV`` over C in
  {0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 3, 4, 5} (5 folds, accuracy, L2, lbfgs,
  50 000 iterations) is fit on all cases (severity: COVID-19-positive cases, features + age +
  sex); the blend weight alpha in {0, 0.05, ..., 1} maximises the mean AUC over 8 x 4 repeated
  stratified folds (seed 123) of regressions refit with the chosen C.
* :func:`train_hal9000` (HAL ``training/main.py``, ``image_classification_pytorch/configs/``,
  ``trainers/example_trainer.py``, ``data_loader/dataset.py``): per network a random 85/15 split;
  Adam, lr 1e-4, weight decay 5e-4, lr x 0.5 every 40 epochs (every 20 for the first ResNet,
  ``config_resnet_1.json``; the models spec says 20 for all, the thesis x 0.1 every 40), 100
  epochs, batch 16 drawn with severity-balanced replacement sampling; loss
  ``BCE(logit 0, severe) + 0.75 BCE(logit 1, COVID-19)``; augmentation "default" for MobileNets
  (flip, random 224 crop, gamma, colour jitter) and "strong" for ResNets (+ rotation up to 30
  degrees before a 288 resize, median blur); the state with the best validation severity AUC
  is kept.  Mixed precision (apex O2 on GPU) is not used.
* :func:`train_etro` (ETRO ``training/train.py``): COVID-19-positive cases only; the 11 image
  statistics, age and sex; kurtosis and skewness rescaled to [-1, 1] with the training extrema
  (stored); 20 logistic regressions (liblinear, L2, C = 1, ``random_state=0``) on bootstrap
  samples drawn as ``DataFrame.sample(frac=1, replace=True, random_state=i)`` draws them.  The
  ConvNeXt for COVID-19 is not retrained ("fixed"): its weights are copied from an etro file.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms.compose import Compose
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import RepeatedStratifiedKFold
from torch import Tensor

from models import PIPELINE_VERSION
from models.corads.data import read_image
from models.published.hal9000 import read_initialisation
from models.stoic.dataset import StoicCase, case_inputs, read_stoic_csv
from models.stoic.etro import (
    BOOTSTRAPS,
    CONVNEXT_INPUT,
    FEATURES,
    RESCALED,
    EtroHeads,
    EtroMember,
    age_sex,
    severity_statistics,
)
from models.stoic.hal9000 import (
    Hal9000Member,
    HalConfig,
    NetworkKind,
    ResizeSlicesd,
    SampleEquidistantSlicesd,
    WindowMinMaxUint8d,
    build_network,
    safe_rotate,
)
from models.stoic.member import MemberUnavailable
from models.stoic.simonj import LogisticHead, SimonjHeads, SimonjMember
from models.weights import sha256_of

__all__ = [
    "HAL_RECIPES",
    "SIMONJ_C_RANGE",
    "EtroTrainingConfig",
    "HalModelRecipe",
    "HalTrainingConfig",
    "SimonjTrainingConfig",
    "TrainingResult",
    "auc",
    "fit_etro_heads",
    "fit_simonj_heads",
    "train_etro",
    "train_hal9000",
    "train_simonj",
]

logger = logging.getLogger(__name__)

#: SJ ``training/train.py``: ``C_range``.
SIMONJ_C_RANGE: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 3.0, 4.0, 5.0)


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties, as
    ``sklearn.metrics.roc_auc_score``); None when ``labels`` hold one class only."""
    positive = np.asarray(labels) == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _provenance(csv_path: Path, **facts: Any) -> dict[str, Any]:
    return {
        "training": {
            "csv": str(csv_path),
            "csv_sha256": sha256_of(csv_path),
            "code_version": f"lungcds models {PIPELINE_VERSION}",
            **facts,
        }
    }


@dataclass(frozen=True)
class TrainingResult:
    """Where the trained member was written, and what the training measured."""

    path: Path
    metrics: dict[str, Any]
    skipped: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------- simon.j


@dataclass(frozen=True)
class SimonjTrainingConfig:
    """SJ ``training/train.py``'s settings.

    Attributes
    ----------
    csv_path : pathlib.Path
        The cases.
    backbone : pathlib.Path
        A simon.j file whose two ViTs extract the features (they are not trained here); its
        regressions are replaced.
    output : pathlib.Path
        The simon.j file to write.
    C_range : tuple of float
        Regularisation grid of ``LogisticRegressionCV``.
    cv_folds : int
        Its folds (5: scikit-learn's default that the authors relied on; scoring accuracy,
        scikit-learn's default then).
    max_iter : int
        Solver iterations (50 000).
    blend_splits, blend_repeats, blend_seed : int
        ``RepeatedStratifiedKFold(8, 4, random_state=123)`` for the blend.
    blend_grid : int
        Number of alpha values in [0, 1] (21).
    batch_size : int
        Slices per ViT forward pass.
    """

    csv_path: Path
    backbone: Path
    output: Path
    C_range: tuple[float, ...] = SIMONJ_C_RANGE
    cv_folds: int = 5
    max_iter: int = 50_000
    blend_splits: int = 8
    blend_repeats: int = 4
    blend_seed: int = 123
    blend_grid: int = 21
    batch_size: int = 8


def _lr_cv(config: SimonjTrainingConfig) -> LogisticRegressionCV:
    return LogisticRegressionCV(
        Cs=list(config.C_range),
        cv=config.cv_folds,
        scoring="accuracy",
        l1_ratios=(0.0,),
        max_iter=config.max_iter,
        use_legacy_attributes=False,
    )


def fit_simonj_heads(
    x_full: np.ndarray,
    x_lung: np.ndarray,
    age_sex: np.ndarray,
    covid: np.ndarray,
    severe: np.ndarray,
    config: SimonjTrainingConfig,
) -> tuple[SimonjHeads, dict[str, Any]]:
    """The four regressions and two blends of SJ ``training/train.py`` from extracted features.

    Parameters
    ----------
    x_full, x_lung : numpy.ndarray
        ``(cases, d)`` features of every case.
    age_sex : numpy.ndarray
        ``(cases, 2)`` age / 100 (clipped) and sex features.
    covid, severe : numpy.ndarray
        0/1 labels; severity is fit on the COVID-19-positive cases only.
    config : SimonjTrainingConfig
        Grids and folds.

    Returns
    -------
    tuple
        The heads and the metrics (chosen C, alpha, mean fold AUC of full, lung and blend).

    Raises
    ------
    ValueError
        When an output has fewer than ``blend_splits`` cases of a class.
    """
    positive = covid == 1
    design = {
        "covid": {"full": x_full, "lung": x_lung},
        "severe": {"full": np.hstack([x_full, age_sex])[positive], "lung": np.hstack([x_lung, age_sex])[positive]},
    }
    targets = {"covid": covid, "severe": severe[positive]}
    heads: dict[tuple[str, str], LogisticHead] = {}
    chosen: dict[tuple[str, str], float] = {}
    alpha: dict[str, float] = {}
    metrics: dict[str, Any] = {}
    grid = np.linspace(0.0, 1.0, config.blend_grid)
    for output in ("covid", "severe"):
        y = targets[output]
        counts = np.bincount(y, minlength=2)
        if counts.min() < config.blend_splits:
            raise ValueError(f"{output}: {counts.tolist()} cases per class; need {config.blend_splits} of each")
        for key in ("full", "lung"):
            model = _lr_cv(config).fit(design[output][key], y)
            chosen[(key, output)] = float(model.C_)
            heads[(key, output)] = LogisticHead(model.coef_[0].astype(np.float64), float(model.intercept_[0]))
        folds = RepeatedStratifiedKFold(
            n_splits=config.blend_splits, n_repeats=config.blend_repeats, random_state=config.blend_seed
        )
        fold_auc: list[list[float | None]] = []
        for train, test in folds.split(y, y):
            predictions = {}
            for key in ("full", "lung"):
                refit = LogisticRegression(
                    C=chosen[(key, output)], max_iter=config.max_iter, random_state=config.blend_seed
                )
                refit.fit(design[output][key][train], y[train])
                predictions[key] = refit.predict_proba(design[output][key][test])[:, 1]
            fold_auc.append([auc(y[test], t * predictions["full"] + (1 - t) * predictions["lung"]) for t in grid])
        mean_auc = np.asarray(fold_auc, dtype=np.float64).mean(axis=0)
        best = int(np.argmax(mean_auc))
        alpha[output] = float(grid[best])
        metrics[output] = {
            "cases": int(len(y)),
            "C_full": chosen[("full", output)],
            "C_lung": chosen[("lung", output)],
            "alpha": alpha[output],
            "cv_auc_full": float(mean_auc[-1]),
            "cv_auc_lung": float(mean_auc[0]),
            "cv_auc_blend": float(mean_auc[best]),
        }
    return SimonjHeads(heads, alpha, chosen), metrics


def train_simonj(config: SimonjTrainingConfig) -> TrainingResult:
    """Extract X_full and X_lung of every case with the backbone's ViTs, fit the heads, write the member.

    Cases the member cannot preprocess (:class:`MemberUnavailable`, e.g. an empty lung mask) are
    skipped and listed in the result and card.
    """
    backbone = SimonjMember.from_safetensors(config.backbone, batch_size=config.batch_size)
    rows: list[tuple[np.ndarray, np.ndarray, float, float, int, int]] = []
    skipped = []
    for case in read_stoic_csv(config.csv_path):
        try:
            prepared = backbone.preprocess(case_inputs(case))
        except MemberUnavailable as unavailable:
            skipped.append(f"{case.image}: {unavailable.reason}")
            continue
        x_full, x_lung = backbone.features(prepared)
        rows.append((x_full, x_lung, prepared.age, prepared.sex, case.covid, case.severe))
        logger.info("simon.j features of %s (%d slices)", case.image, prepared.full.shape[0])
    heads, metrics = fit_simonj_heads(
        np.stack([r[0] for r in rows]),
        np.stack([r[1] for r in rows]),
        np.asarray([[r[2], r[3]] for r in rows]),
        np.asarray([r[4] for r in rows], dtype=int),
        np.asarray([r[5] for r in rows], dtype=int),
        config,
    )
    architecture = dict(backbone.card["architecture"])
    lung_depth = int(architecture.pop("lung_depth"))
    card = SimonjMember.make_card(
        full=architecture,
        lung_depth=lung_depth,
        demo=bool(backbone.card.get("demo", False)),
        **_provenance(
            config.csv_path,
            recipe="SJ training/train.py",
            backbone=str(config.backbone),
            backbone_sha256=sha256_of(config.backbone),
            metrics=metrics,
            skipped=skipped,
        ),
    )
    member = SimonjMember(backbone.full, backbone.lung, heads, card, batch_size=config.batch_size)
    return TrainingResult(member.save(config.output), metrics, tuple(skipped))


# --------------------------------------------------------------------------------------------- hal9000


@dataclass(frozen=True)
class HalModelRecipe:
    """One of HAL's ten training runs (``configs/config_{mobile,resnet}_{1-5}.json``)."""

    kind: NetworkKind
    lr_step_epochs: int
    augmentation: Literal["default", "strong"]


#: HAL ``training/main.py`` trains mobile_1-5 then resnet_1-5; only resnet_1 halves every 20 epochs.
HAL_RECIPES: tuple[HalModelRecipe, ...] = (
    *(HalModelRecipe("mobilenet_v3_large", 40, "default") for _ in range(5)),
    HalModelRecipe("resnet18", 20, "strong"),
    *(HalModelRecipe("resnet18", 40, "strong") for _ in range(4)),
)


@dataclass(frozen=True)
class HalTrainingConfig:
    """HAL's training settings; network and input sizes come from ``network``.

    Attributes
    ----------
    csv_path, output : pathlib.Path
        The cases and the hal9000 file to write.
    network : HalConfig
        Architecture and input; its network counts must match ``recipes``.
    recipes : tuple of HalModelRecipe
        One per network, MobileNets first (:data:`HAL_RECIPES`).
    epochs : int
        100.
    batch_size : int
        16 (batches are drawn with replacement, severity-balanced; the last partial one dropped).
    learning_rate, lr_decay, weight_decay : float
        1e-4, 0.5 per ``lr_step_epochs``, 5e-4 (Adam).
    covid_loss_weight : float
        0.75.
    validation_fraction : float
        0.15 (``int(0.85 n)`` training cases after a shuffle).
    initialisation : pathlib.Path or None
        The ImageNet backbones every network starts from, as the authors trained (HAL
        ``example_model.py`` ``create_model``): a file of
        :mod:`models.published.hal9000` (``lungcds train stoic --init`` converts the authors'
        ``mobnet_v3_large_imgnet.pth`` and ``resnet18_imgnet.pth``), loaded strictly.
    seed : int
        Seeds splits, sampling, augmentation and initialisation.
    device : str
        ``cpu`` or ``cuda``.
    """

    csv_path: Path
    output: Path
    network: HalConfig = field(default_factory=HalConfig)
    recipes: tuple[HalModelRecipe, ...] = HAL_RECIPES
    epochs: int = 100
    batch_size: int = 16
    learning_rate: float = 1e-4
    lr_decay: float = 0.5
    weight_decay: float = 5e-4
    covid_loss_weight: float = 0.75
    validation_fraction: float = 0.15
    initialisation: Path | None = None
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if tuple(r.kind for r in self.recipes) != self.network.kinds:
            raise ValueError(f"recipes {[r.kind for r in self.recipes]} differ from the networks {self.network.kinds}")
        if min(self.epochs, self.batch_size) < 1 or not 0 < self.validation_fraction < 1:
            raise ValueError("epochs and batch size must be positive and the validation fraction in (0, 1)")


def _uint8_stacks(cases: Sequence[StoicCase], network: HalConfig) -> list[Tensor]:
    """HAL's cached slices: sampled, windowed, min-max to uint8, resized (as at inference)."""
    chain = Compose(
        [
            SampleEquidistantSlicesd(["image"], network.slices, network.step_divisor),
            WindowMinMaxUint8d(["image"], network.window_hu),
            ResizeSlicesd(["image"], network.resize),
        ]
    )
    stacks = []
    for case in cases:
        data = cast(dict[Hashable, Any], chain({"image": read_image(case.image).hu}))
        stacks.append(torch.from_numpy(np.asarray(data["image"])))
    return stacks


def _median_blur(images: Tensor, kernel: int) -> Tensor:
    """OpenCV ``medianBlur`` (replicated border) of ``(N, 1, H, W)``."""
    pad = kernel // 2
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    patches = F.unfold(padded, kernel).reshape(images.shape[0], kernel * kernel, *images.shape[-2:])
    return patches.median(dim=1).values[:, None]


def _augment(stack: Tensor, recipe: HalModelRecipe, network: HalConfig, rng: np.random.Generator) -> Tensor:
    """One case's slices ``(N, H, W)`` uint8 through HAL's training transforms (one draw for all slices,
    albumentations ``ReplayCompose``), normalised to ``(N, 3, crop, crop)``."""
    x = stack.to(torch.float32)[:, None]
    if recipe.augmentation == "strong":
        if rng.random() < 0.7:
            x = safe_rotate(x, float(rng.uniform(-30.0, 30.0)))
        x = F.interpolate(x, size=(network.resize + 32,) * 2, mode="bilinear", align_corners=False)
    if rng.random() < 0.5:
        x = torch.flip(x, dims=(-1,))
    top = int(rng.integers(0, x.shape[-2] - network.crop + 1))
    left = int(rng.integers(0, x.shape[-1] - network.crop + 1))
    x = x[..., top : top + network.crop, left : left + network.crop]
    if recipe.augmentation == "strong" and rng.random() < 0.5:
        x = _median_blur(x, int(rng.choice([3, 5, 7])))
    x = x.clamp(0, 255)
    if rng.random() < 0.5:
        x = 255.0 * (x / 255.0) ** float(rng.uniform(0.8, 1.2))
    if rng.random() < 0.5:
        for operation in rng.permutation(2):
            factor = float(rng.uniform(0.5, 1.5))
            x = (x * factor if operation == 0 else x * factor + x.mean() * (1 - factor)).clamp(0, 255)
    return ((x / 255.0 - 0.5) / 0.5).expand(-1, 3, -1, -1)


def _centre(stack: Tensor, crop: int) -> Tensor:
    """HAL's validation transform: centre crop and normalisation, ``(N, 3, crop, crop)``."""
    start = (stack.shape[-1] - crop) // 2
    x = stack.to(torch.float32)[:, None, start : start + crop, start : start + crop]
    return ((x / 255.0 - 0.5) / 0.5).expand(-1, 3, -1, -1)


def _train_hal_network(
    index: int,
    recipe: HalModelRecipe,
    stacks: Sequence[Tensor],
    labels: np.ndarray,
    config: HalTrainingConfig,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """One of the ten runs: split, balanced sampling, augmentation, Adam with step decay, best validation AUC."""
    rng = np.random.default_rng([config.seed, index])
    order = rng.permutation(len(stacks))
    cut = int((1.0 - config.validation_fraction) * len(stacks))
    train, validation = order[:cut], order[cut:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1000 * config.seed + index)
        network = build_network(recipe.kind, config.network)
    if config.initialisation is not None:
        network.net.load_state_dict(read_initialisation(config.initialisation)[recipe.kind], strict=True)
        logger.info("network %d: ImageNet backbone loaded from %s", index, config.initialisation)
    device = torch.device(config.device)
    network.to(device)
    optimiser = torch.optim.Adam(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    severe = labels[train, 1]
    counts = np.bincount(severe, minlength=2)
    weights = np.where(severe == 1, len(severe) / max(counts[1], 1), len(severe) / max(counts[0], 1))
    probabilities = weights / weights.sum()
    validation_inputs = torch.stack([_centre(stacks[i], config.network.crop) for i in validation])
    best_auc, best_state, best_epoch = -math.inf, copy.deepcopy(network.state_dict()), 0
    history = []
    for epoch in range(1, config.epochs + 1):
        lr = config.learning_rate * config.lr_decay ** ((epoch - 1) // recipe.lr_step_epochs)
        for group in optimiser.param_groups:
            group["lr"] = lr
        network.train()
        drawn = rng.choice(train, size=len(train), replace=True, p=probabilities)
        losses = []
        for start in range(0, len(drawn) - config.batch_size + 1, config.batch_size):
            batch = drawn[start : start + config.batch_size]
            x = torch.stack([_augment(stacks[i], recipe, config.network, rng) for i in batch]).to(device)
            y = torch.as_tensor(labels[batch], dtype=torch.float32, device=device)
            logits = network(x)
            loss = F.binary_cross_entropy_with_logits(logits[:, 0], y[:, 1]) + config.covid_loss_weight * (
                F.binary_cross_entropy_with_logits(logits[:, 1], y[:, 0])
            )
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            losses.append(loss.item())
        network.eval()
        with torch.no_grad():
            scores = torch.sigmoid(network(validation_inputs.to(device))[:, 0]).cpu().numpy()
        val_auc = auc(labels[validation, 1], scores)
        history.append(
            {"epoch": epoch, "lr": lr, "loss": float(np.mean(losses)) if losses else None, "val_auc": val_auc}
        )
        logger.info(
            "hal9000 network %d epoch %d: loss %s, validation severity AUC %s",
            index,
            epoch,
            history[-1]["loss"],
            val_auc,
        )
        if val_auc is None or val_auc > best_auc:
            best_auc = val_auc if val_auc is not None else best_auc
            best_state, best_epoch = copy.deepcopy(network.state_dict()), epoch
    network.load_state_dict(best_state)
    return network.cpu().eval(), {"kind": recipe.kind, "best_epoch": best_epoch, "history": history}


def train_hal9000(config: HalTrainingConfig) -> TrainingResult:
    """Train every network of HAL's recipe list on the CSV's cases and write the hal9000 member.

    The best validation severity AUC picks each network's state (HAL ``base_trainer.py`` saves
    ``auc_model.pth``); when a validation split has one severity class, the AUC is undefined and
    the latest epoch is kept.
    """
    cases = read_stoic_csv(config.csv_path)
    stacks = _uint8_stacks(cases, config.network)
    labels = np.asarray([[c.covid, c.severe] for c in cases], dtype=int)
    networks = []
    metrics: dict[str, Any] = {"networks": []}
    for index, recipe in enumerate(config.recipes):
        network, record = _train_hal_network(index, recipe, stacks, labels, config)
        networks.append(network)
        metrics["networks"].append(record)
    settings = {
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "lr_decay": config.lr_decay,
        "weight_decay": config.weight_decay,
        "covid_loss_weight": config.covid_loss_weight,
        "validation_fraction": config.validation_fraction,
        "recipes": [
            {"kind": r.kind, "lr_step_epochs": r.lr_step_epochs, "augmentation": r.augmentation} for r in config.recipes
        ],
        "seed": config.seed,
    }
    card = Hal9000Member.make_card(
        config.network,
        demo=False,
        **_provenance(config.csv_path, recipe="HAL training/ (see models.stoic.training_features)", settings=settings),
    )
    member = Hal9000Member(cast(list[Any], networks), config.network, card)
    return TrainingResult(member.save(config.output), metrics)


# --------------------------------------------------------------------------------------------- etro


@dataclass(frozen=True)
class EtroTrainingConfig:
    """ETRO ``training/train.py``'s settings.

    Attributes
    ----------
    csv_path, output : pathlib.Path
        The cases and the etro file to write.
    convnext_from : pathlib.Path or None
        An etro file whose fixed ConvNeXt is copied; None writes a file without one (then the
        member gives no P(COVID-19)).
    bootstraps : int
        20.
    C : float
        1.0 (liblinear, L2).
    """

    csv_path: Path
    output: Path
    convnext_from: Path | None = None
    bootstraps: int = BOOTSTRAPS
    C: float = 1.0


def fit_etro_heads(
    statistics: np.ndarray, age_sex_values: np.ndarray, severe: np.ndarray, bootstraps: int = BOOTSTRAPS, C: float = 1.0
) -> EtroHeads:
    """The bag of ETRO ``training/train.py`` from raw statistics of COVID-19-positive cases.

    Parameters
    ----------
    statistics : numpy.ndarray
        ``(cases, 11)`` in the order of :data:`FEATURES` after age and sex, not rescaled.
    age_sex_values : numpy.ndarray
        ``(cases, 2)`` ``(age - 55) / 20`` and sex (F = 0, else 1).
    severe : numpy.ndarray
        0/1 labels.
    bootstraps : int
        Regressions in the bag.
    C : float
        Inverse regularisation.

    Raises
    ------
    ValueError
        When a bootstrap sample holds one class only (liblinear cannot fit it).
    """
    features = np.hstack([age_sex_values, statistics]).astype(np.float64)
    columns = [FEATURES.index(name) for name in RESCALED]
    low, high = features[:, columns].min(axis=0), features[:, columns].max(axis=0)
    if np.any(high <= low):
        raise ValueError("a kurtosis or skewness feature is constant over the training cases; it cannot be rescaled")
    features[:, columns] = 2.0 * (features[:, columns] - low) / (high - low) - 1.0
    coefs, intercepts = [], []
    for i in range(bootstraps):
        draw = np.random.RandomState(i).choice(len(features), size=len(features), replace=True)
        if len(set(severe[draw].tolist())) < 2:
            raise ValueError(f"bootstrap sample {i} has one severity class only; more cases of each class are needed")
        model = LogisticRegression(random_state=0, solver="liblinear", C=C).fit(features[draw], severe[draw])
        coefs.append(model.coef_[0])
        intercepts.append(model.intercept_[0])
    return EtroHeads(np.asarray(coefs), np.asarray(intercepts), low, high)


def train_etro(config: EtroTrainingConfig) -> TrainingResult:
    """Features of the COVID-19-positive cases, the bag of regressions, the fixed ConvNeXt: the etro file.

    Rows that are COVID-19-negative are not used (Final phase); rows without a lesion mask or an
    age are skipped (the authors' feature loop skipped unreadable metadata) and listed.
    """
    rows, skipped = [], []
    for case in read_stoic_csv(config.csv_path):
        if not case.covid:
            continue
        try:
            age, sex = age_sex(case.age_years, case.sex)
            statistics = severity_statistics(case_inputs(case))[0]
        except MemberUnavailable as unavailable:
            skipped.append(f"{case.image}: {unavailable.reason}")
            continue
        rows.append(([getattr(statistics, name) for name in FEATURES[2:]], [age, sex], case.severe))
    heads = fit_etro_heads(
        np.asarray([r[0] for r in rows]),
        np.asarray([r[1] for r in rows]),
        np.asarray([r[2] for r in rows], dtype=int),
        config.bootstraps,
        config.C,
    )
    source = EtroMember.from_safetensors(config.convnext_from) if config.convnext_from is not None else None
    convnext = source.convnext if source is not None else None
    metrics = {"cases": len(rows), "severe": int(sum(r[2] for r in rows)), "bootstraps": config.bootstraps}
    card = EtroMember.make_card(
        convnext=source.card["convnext"] if source is not None else None,
        convnext_input=source.convnext_input if source is not None else CONVNEXT_INPUT,
        demo=bool(source.card.get("demo", False)) if source is not None else False,
        **_provenance(
            config.csv_path,
            recipe="ETRO training/train.py",
            convnext_from=str(config.convnext_from) if config.convnext_from is not None else None,
            metrics=metrics,
            skipped=skipped,
        ),
    )
    member = EtroMember(
        heads, convnext, card, convnext_input=source.convnext_input if source is not None else CONVNEXT_INPUT
    )
    return TrainingResult(member.save(config.output), metrics, tuple(skipped))
