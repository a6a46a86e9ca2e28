"""Training recipes of the five volume members (``lungcds train stoic --member NAME``).

One function per member, each with its configuration dataclass whose defaults are the published
recipe (thesis 4.2.5 and 4.3.3; models spec section 4; the repositories named in each docstring):

* :func:`train_baseline`: one I3D, BCE on [COVID-19, severe], AdamW (fastai's Adam: betas
  (0.9, 0.99), decoupled weight decay 0.01) at a constant 1e-4, 40 epochs, batch 2, random 80/20
  split (seed 42), the epoch with the best validation severity AUC (over COVID-positive cases);
* :func:`train_deakin`: one DenseNet-201 on the same input, Adam 4e-5, batch 2, 15 epochs,
  initialised from a public-set training (``initial_weights``);
* :func:`train_code1055`: five ConvNeXt folds (seed 1055, stratified by COVID-19 and severity),
  COVID-positive cases only with the severe ones repeated to balance, BCE on the severity logit,
  AdamW 5e-5 (weight decay 1e-8) with a per-step cosine decay to 1e-6 until epoch 20, batch 4,
  at most 25 epochs, stochastic depth 0.1, age and sex as metadata, an exponential moving
  average (0.995) of the weights whose validation AUC picks the epoch, early stopping after 7
  epochs without improvement (not before epoch 10);
* :func:`train_flyingbird`: per task (severity on COVID-positive cases; COVID-19 on all) and
  fold, cross-entropy, AdamW 3e-4 (weight decay 1e-4) with a one-cycle schedule, batch 30, 6
  epochs from the previous weights (the final phase), each case as three lung-box crops (two
  random 3-9 mm margins and the 6 mm one), the epoch with the best 4-view validation AUC;
* :func:`train_uaux2`: a bag of DenseNet-121 severity models, each on its own stratified 95/5
  split (seed = its index), focal loss with balanced class weights plus soft F1, 10 epochs of the
  head alone at Adam 1e-4, then everything at 1e-5 with the learning rate divided by 10 after 8
  epochs without a lower validation loss (down to 1e-7), early stopping after 36, the checkpoint
  with the lowest validation loss; and the 3-class ResNet-34 COVID-19 model with the same recipe.

The CSV is the STOIC training CSV of :mod:`models.stoic.dataset` (uaux2 needs its ``lesion_mask``
column).

Every case is preprocessed once with the member's own inference preprocessing (so training and
inference inputs cannot drift apart) and kept as float16, in memory or as ``.npy`` files in
``cache_dir``.  The output is one member file (``{member}.safetensors``) with a model card that
records the data (CSV and its SHA-256, cases per label), the recipe and every network's
validation history.  Where the public code and the thesis differ on training, the thesis is
followed and the difference named in the configuration's docstring.  Augmentation uses MONAI's
random dictionary transforms with the authors' ranges (Flying Bird used exactly these MONAI
transforms; the others are the closest MONAI equivalents of torchio, scipy or batchgenerators
code) and is switched off with ``augment=False``.  What is not reproduced: pretraining (Kinetics
for I3D, Code 1055's inflated ImageNet and multitask pretraining, Flying Bird's self-supervised
ResNet, ImageNet for uaux2) - give it as ``initial_weights`` where the member accepts them.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms.compose import Compose
from monai.transforms.croppad.dictionary import RandSpatialCropd
from monai.transforms.intensity.dictionary import (
    RandAdjustContrastd,
    RandGaussianNoised,
    RandGaussianSmoothd,
)
from monai.transforms.spatial.dictionary import (
    Rand3DElasticd,
    RandAffined,
    RandFlipd,
    RandRotated,
    RandZoomd,
)
from monai.transforms.transform import MapTransform, RandomizableTransform
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.utils.class_weight import compute_class_weight
from torch import Tensor, nn

from models.segmentation.weights import load_state
from models.stoic.baseline import BaselineConfig, BaselineI3D, StoicBaseline, baseline_input
from models.stoic.code1055 import Code1055Config, StoicCode1055, code1055_input, metadata_vector
from models.stoic.convnext3d import ConvNeXt3d
from models.stoic.dataset import StoicCase, case_inputs, read_stoic_csv
from models.stoic.deakin import DeakinConfig, DeakinDenseNet, StoicDeakin
from models.stoic.flyingbird import (
    TASKS,
    FlyingBirdConfig,
    FlyingBirdResNet,
    StoicFlyingBird,
    flip_views,
    flyingbird_age,
    flyingbird_input,
)
from models.stoic.member import MemberInputs
from models.stoic.uaux2 import StoicUaux2, Uaux2Config, Uaux2DenseNet, Uaux2ResNet34, uaux2_input
from models.stoic.volumes import VolumeMember
from models.weights import sha256_of

__all__ = [
    "BaselineTrainingConfig",
    "Code1055TrainingConfig",
    "DeakinTrainingConfig",
    "FlyingBirdTrainingConfig",
    "NetworkHistory",
    "TrainingResult",
    "Uaux2TrainingConfig",
    "VolumeTrainingConfig",
    "focal_f1_loss",
    "stratified_folds",
    "train_baseline",
    "train_code1055",
    "train_deakin",
    "train_flyingbird",
    "train_uaux2",
]

logger = logging.getLogger(__name__)

_Member = TypeVar("_Member", bound=VolumeMember[Any])
_IMAGE = "image"


# --------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class _Case:
    """A preprocessed case: its views (view 0 is the inference input) and labels."""

    row: int
    views: tuple[Mapping[str, np.ndarray], ...]
    covid: int
    severe: int


def _prepare_cases(
    rows: Sequence[StoicCase],
    make_views: Callable[[MemberInputs, np.random.Generator], list[dict[str, Tensor]]],
    seed: int,
    cache_dir: Path | None,
    member: str,
) -> list[_Case]:
    """Every row's views, float16, in memory or memory-mapped from ``cache_dir``."""
    cases = []
    for i, row in enumerate(rows):
        rng = np.random.default_rng([seed, i])
        views = make_views(case_inputs(row), rng)
        stored: list[dict[str, np.ndarray]] = []
        for v, view in enumerate(views):
            arrays = {key: tensor.numpy().astype(np.float16) for key, tensor in view.items()}
            if cache_dir is not None:
                folder = cache_dir / member
                folder.mkdir(parents=True, exist_ok=True)
                paths = {key: folder / f"case{i}_view{v}_{key}.npy" for key in arrays}
                for key, array in arrays.items():
                    np.save(paths[key], array)
                arrays = {key: np.load(paths[key], mmap_mode="r") for key in arrays}
            stored.append(arrays)
        cases.append(_Case(i, tuple(stored), row.covid, row.severe))
    return cases


def stratified_folds(labels: Sequence[Hashable], folds: int, seed: int) -> list[int]:
    """A fold 0..folds-1 per item: each stratum shuffled with ``seed`` and dealt round-robin.

    Code 1055 drew its folds stratified by (COVID-19, severe) with seed 1055 (C1055
    ``submission_train.py``: ``assign_folds``); pandas' sampling order is not reproduced.
    """
    if folds < 2:
        raise ValueError(f"need at least 2 folds, got {folds}")
    rng = np.random.default_rng(seed)
    assignment = [0] * len(labels)
    offset = 0
    for stratum in sorted(set(labels), key=repr):
        members = [i for i, label in enumerate(labels) if label == stratum]
        rng.shuffle(members)
        for k, i in enumerate(members):
            assignment[i] = (offset + k) % folds
        offset += len(members)
    return assignment


def _data_record(csv_path: Path, rows: Sequence[StoicCase], **splits: Any) -> dict[str, Any]:
    return {
        "csv": str(csv_path),
        "csv_sha256": sha256_of(csv_path),
        "cases": len(rows),
        "covid_positive": sum(r.covid for r in rows),
        "severe": sum(r.severe for r in rows),
        **splits,
    }


def _auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """ROC AUC, NaN when only one class is present."""
    if len(set(labels)) < 2:
        return math.nan
    return float(roc_auc_score(np.asarray(labels), np.asarray(scores)))


# --------------------------------------------------------------------------------------------
# Augmentation


class _BlendNoised(MapTransform, RandomizableTransform):
    """Code 1055's ``AddNoise``: ``(1 - w) x + w n`` with ``n ~ N(mean, sd)``, ``sd`` drawn from a
    range, voxels at the volume's minimum left alone (``masked=True``)."""

    def __init__(
        self, keys: Sequence[str], prob: float, mean: float, sd_range: tuple[float, float], weight: float
    ) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.mean, self.sd_range, self.weight = mean, sd_range, weight

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Noisy tensors (with probability ``prob``)."""
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        sd = float(self.R.uniform(*self.sd_range))
        for key in self.key_iterator(d):
            x: Tensor = d[key]
            noise = torch.from_numpy(self.R.normal(self.mean, sd, tuple(x.shape)).astype(np.float32))
            blended = (1.0 - self.weight) * x + self.weight * noise
            d[key] = torch.where(x == x.min(), x, blended)
        return d


def _baseline_augmentation(keys: Sequence[str]) -> Compose:
    """Thesis 4.2.5, "zoom, rotation, translation, and adding gaussian noise", with the ranges of
    BL ``training/ctdataset.py``: torchio ``RandomAffine(scales=0.1, degrees=15, translation=20)``
    and ``RandomNoise(std=(0, 0.05))`` (the repository never switched them on)."""
    return Compose(
        [
            RandAffined(
                keys,
                prob=1.0,
                rotate_range=(math.radians(15),) * 3,
                scale_range=(0.1,) * 3,
                translate_range=(20,) * 3,
                padding_mode="border",
            ),
            RandGaussianNoised(keys, prob=1.0, std=0.05),
        ]
    )


def _code1055_augmentation(keys: Sequence[str]) -> Compose:
    """C1055 ``gpu_deformed.py``: flips (0.25 per axis), axial rotation within 30 degrees (0.2),
    Gaussian blur sigma 0.6-0.8 (0.2), blended noise (0.2), elastic deformation sigma 35,
    magnitude 1-7 (0.5; theirs ran on the GPU)."""
    return Compose(
        [
            *(RandFlipd(keys, prob=0.25, spatial_axis=axis) for axis in range(3)),
            # (x, y, z) layout: the axial plane is the first two axes.
            RandRotated(keys, range_x=math.radians(30), prob=0.2, keep_size=True),
            RandGaussianSmoothd(keys, sigma_x=(0.6, 0.8), sigma_y=(0.6, 0.8), sigma_z=(0.6, 0.8), prob=0.2),
            _BlendNoised(keys, prob=0.2, mean=0.5, sd_range=(0.3, 1.0), weight=0.03),
            Rand3DElasticd(keys, sigma_range=(35, 35), magnitude_range=(1, 7), prob=0.5, padding_mode="zeros"),
        ]
    )


def _flyingbird_augmentation(keys: Sequence[str]) -> Compose:
    """FB ``training/data/augmentation.py`` (MONAI): elastic with rotation and scaling (always),
    Gaussian noise and smoothing (0.25 each), flips (0.5 per axis)."""
    return Compose(
        [
            Rand3DElasticd(
                keys,
                sigma_range=(10, 13),
                magnitude_range=(0, 256),
                prob=1.0,
                rotate_range=(math.pi / 2.0, math.pi / 6.0, math.pi / 6.0),
                scale_range=(0.1, 0.1, 0.1),
                padding_mode="border",
            ),
            RandGaussianNoised(keys, prob=0.25, std=0.1),
            RandGaussianSmoothd(keys, sigma_x=(0.5, 1.5), sigma_y=(0.5, 1.5), sigma_z=(0.5, 1.5), prob=0.25),
            *(RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(3)),
        ]
    )


def _uaux2_augmentation(keys: Sequence[str]) -> Compose:
    """UX ``training/train.py``: batchgenerators mirror, rotation, scaling, elastic deformation and
    gamma, each with probability 0.1 (the final phase; 0.5 before), as MONAI transforms with
    batchgenerators-like ranges."""
    return Compose(
        [
            *(RandFlipd(keys, prob=0.1, spatial_axis=axis) for axis in range(3)),
            RandRotated(keys, range_x=math.radians(15), range_y=math.radians(15), range_z=math.radians(15), prob=0.1),
            RandZoomd(keys, prob=0.1, min_zoom=0.85, max_zoom=1.25, keep_size=True),
            Rand3DElasticd(keys, sigma_range=(9, 13), magnitude_range=(0, 200), prob=0.1, padding_mode="border"),
            RandAdjustContrastd(keys, prob=0.1, gamma=(0.7, 1.5)),
        ]
    )


# --------------------------------------------------------------------------------------------
# The training loop


@dataclass(frozen=True)
class NetworkHistory:
    """How one network's training went.

    Attributes
    ----------
    group : str
        Its group in the member file (``model``, ``fold``, ``covid``, ``severe``).
    index : int
        Its index there.
    best_score : float
        Validation score of the kept state (AUC, or minus the validation loss for uaux2).
    best_epoch : int
        Epoch after which it was validated (0: before training).
    epochs : int
        Epochs trained.
    history : tuple of tuple
        ``(epoch, mean training loss, validation score)`` per validation.
    """

    group: str
    index: int
    best_score: float
    best_epoch: int
    epochs: int
    history: tuple[tuple[int, float, float], ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the model card (NaN as None)."""

        def clean(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "group": self.group,
            "index": self.index,
            "best_score": clean(self.best_score),
            "best_epoch": self.best_epoch,
            "epochs": self.epochs,
            "history": [[e, clean(loss), clean(score)] for e, loss, score in self.history],
        }


@dataclass(frozen=True)
class TrainingResult:
    """The member file, its card and every network's history."""

    path: Path
    card: dict[str, Any]
    networks: tuple[NetworkHistory, ...]


@dataclass
class _Fit:
    """What :func:`_fit` needs besides the model (one network's recipe)."""

    order: Callable[[int, np.random.Generator], list[int]]
    step: Callable[[nn.Module, list[int]], Tensor]
    validate: Callable[[nn.Module], float]
    optimiser: torch.optim.Optimizer
    epochs: int
    batch_size: int
    drop_last: bool = False
    per_step: Callable[[int], None] | None = None
    per_epoch: Callable[[float], None] | None = None
    ema_decay: float | None = None
    patience: int | None = None
    grace_epochs: int = 0
    validate_before: bool = False
    iterations_per_epoch: int | None = None
    first_epoch: int = 1
    frozen: nn.Module | None = None


def _fit(model: nn.Module, fit: _Fit, seed: int) -> tuple[nn.Module, float, int, int, list[tuple[int, float, float]]]:
    """Train ``model``; returns the best state (of the moving average when ``ema_decay``), its
    score and epoch, the last epoch and the history.  A NaN score never beats a real one; while
    no epoch has a real score, the latest state is kept."""
    rng = np.random.default_rng(seed)
    ema = copy.deepcopy(model) if fit.ema_decay is not None else None
    tracked = ema if ema is not None else model
    best_score, best_epoch, best_state = -math.inf, fit.first_epoch - 1, copy.deepcopy(tracked)
    history: list[tuple[int, float, float]] = []
    if fit.validate_before:
        best_score = fit.validate(tracked)
        history.append((fit.first_epoch - 1, math.nan, best_score))
        if math.isnan(best_score):
            best_score = -math.inf
    epoch = fit.first_epoch - 1
    for epoch in range(fit.first_epoch, fit.first_epoch + fit.epochs):
        model.train()
        if fit.frozen is not None:
            fit.frozen.eval()  # a frozen Keras backbone also keeps its BatchNorm statistics
        order = fit.order(epoch, rng)
        batches = [order[i : i + fit.batch_size] for i in range(0, len(order), fit.batch_size)]
        if fit.drop_last and batches and len(batches[-1]) < fit.batch_size:
            batches.pop()
        if fit.iterations_per_epoch is not None:
            batches = [batches[i % len(batches)] for i in range(fit.iterations_per_epoch)]
        losses = []
        for batch in batches:
            loss: Tensor = fit.step(model, batch)
            fit.optimiser.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            fit.optimiser.step()
            losses.append(float(loss.detach()))
            if fit.per_step is not None:
                fit.per_step(epoch)
            if ema is not None and fit.ema_decay is not None:
                _update_ema(ema, model, fit.ema_decay)
        score = fit.validate(tracked)
        history.append((epoch, float(np.mean(losses)) if losses else math.nan, score))
        logger.info("epoch %d: loss %.4f, validation %.4f (best %.4f)", epoch, history[-1][1], score, best_score)
        if fit.per_epoch is not None:
            fit.per_epoch(score)
        # Until a score can be computed (a validation set with one class gives NaN), the latest
        # state is kept rather than the untrained one.
        if (math.isnan(score) and best_score == -math.inf) or score > best_score:
            best_epoch, best_state = epoch, copy.deepcopy(tracked)
            best_score = best_score if math.isnan(score) else score
        elif fit.patience is not None and epoch >= fit.grace_epochs and epoch - best_epoch >= fit.patience:
            break
    return best_state.eval(), best_score, best_epoch, epoch, history


def _shuffled(count: int) -> Callable[[int, np.random.Generator], list[int]]:
    """An epoch order: a fresh permutation of ``count`` samples."""

    def order(epoch: int, rng: np.random.Generator) -> list[int]:
        return [int(i) for i in rng.permutation(count)]

    return order


def _update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for parameters; buffers copied (C1055 ``update_ema``)."""
    with torch.no_grad():
        for target, source in zip(ema.parameters(), model.parameters(), strict=True):
            target.mul_(decay).add_(source.detach(), alpha=1.0 - decay)
        for target_buffer, source_buffer in zip(ema.buffers(), model.buffers(), strict=True):
            target_buffer.copy_(source_buffer)


def _trainable(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` on ``device`` with gradients on (networks loaded from member files have them off)."""
    for parameter in module.parameters():
        parameter.requires_grad_(True)
    return module.to(device)


def _stack(
    cases: Sequence[_Case],
    picks: Sequence[tuple[int, int]],
    key: str,
    device: torch.device,
    augmentation: Compose | None = None,
) -> Tensor:
    """Tensors ``key`` of ``(case, view)`` picks, float32, augmented one by one, stacked."""
    tensors = []
    for case_index, view in picks:
        tensor = torch.from_numpy(np.asarray(cases[case_index].views[view][key], dtype=np.float32))
        if augmentation is not None:
            tensor = torch.as_tensor(augmentation({key: tensor})[key], dtype=torch.float32)
        tensors.append(tensor)
    return torch.stack(tensors).to(device)


def _augmentation(
    factory: Callable[[Sequence[str]], Compose], keys: Sequence[str], on: bool, seed: int
) -> Compose | None:
    if not on:
        return None
    transforms = factory(keys)
    transforms.set_random_state(seed=seed)
    return transforms


def _provenance(config: VolumeTrainingConfig, data: Mapping[str, Any], started: str) -> dict[str, Any]:
    recipe = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k != "member"}
    return {
        "weights": "trained with models.stoic.training_volumes",
        "data": dict(data),
        "training": {**recipe, "started_utc": started, "finished_utc": datetime.now(UTC).isoformat()},
    }


def _save(
    member_cls: type[_Member],
    member_config: Any,
    networks: Mapping[str, Sequence[nn.Module]],
    histories: Sequence[NetworkHistory],
    config: VolumeTrainingConfig,
    data: Mapping[str, Any],
    started: str,
) -> TrainingResult:
    provenance = _provenance(config, data, started)
    provenance["metrics"] = {"networks": [h.as_dict() for h in histories]}
    cpu = {g: [copy.deepcopy(n).to("cpu") for n in nets] for g, nets in networks.items()}
    member = member_cls.trained(member_config, cpu, **provenance)
    path = member.save(config.output_dir / f"{member_cls.NAME}.safetensors")
    return TrainingResult(path, member.card, tuple(histories))


# --------------------------------------------------------------------------------------------
# Configurations


@dataclass(frozen=True)
class VolumeTrainingConfig:
    """What every recipe needs.

    Attributes
    ----------
    csv_path : pathlib.Path
        The data (module docstring).
    output_dir : pathlib.Path
        Where the member file goes.
    seed : int
        Seed of augmentation, batch order and network initialisation.
    device : str
        ``"cpu"``, ``"cuda"``...
    cache_dir : pathlib.Path or None
        Folder for preprocessed inputs (memory when None).
    augment : bool
        Random augmentation during training.
    initial_weights : pathlib.Path or None
        A member file of the same member whose networks start the training.
    """

    csv_path: Path
    output_dir: Path
    seed: int = 0
    device: str = "cpu"
    cache_dir: Path | None = None
    augment: bool = True
    initial_weights: Path | None = None


@dataclass(frozen=True)
class BaselineTrainingConfig(VolumeTrainingConfig):
    """The baseline's recipe (T§4.2.5; BLF ``training/train.py``; models spec section 4).

    Attributes
    ----------
    member : BaselineConfig
        Input and head.
    epochs, batch_size : int
        40 and 2.
    learning_rate : float
        1e-4 (the thesis prints "10", a typo; BLF ``config.json``).
    betas, weight_decay, eps
        fastai's Adam as the thesis describes it: (0.9, 0.99), decoupled 0.01, 1e-5.
    validation_fraction, split_seed
        BLF: ``train_test_split(test_size=0.2, random_state=42)``; the kept epoch has the best
        validation severity AUC over COVID-positive cases (``SaveModelCallback``).
    mixed_precision : bool
        fp16 autocast on CUDA (fastai ``to_fp16``); ignored on CPU.
    backbone_init : pathlib.Path or None
        Kinetics-400 I3D weights for the backbone (a file of :mod:`models.published.kinetics_i3d`;
        ``lungcds train stoic --init model_rgb.pth`` converts the published file).  Off by
        default, as the authors trained: their ``I3D(nr_outputs=2)`` kept ``pre_trained=False``.

    ``augment`` defaults to on: the thesis lists zoom, rotation, translation and noise, though the
    repository's ``CTDataset`` never enabled them.
    """

    member: BaselineConfig = field(default_factory=BaselineConfig)
    epochs: int = 40
    batch_size: int = 2
    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.01
    eps: float = 1e-5
    validation_fraction: float = 0.2
    split_seed: int = 42
    mixed_precision: bool = True
    backbone_init: Path | None = None


@dataclass(frozen=True)
class DeakinTrainingConfig(VolumeTrainingConfig):
    """deakin_team's recipe (T§4.3.3): Adam 4e-5, batch 2, 15 epochs from public-set weights.

    The split and epoch choice are the baseline's (the team built on it; not stated);
    ``augment`` defaults to off (none is described).
    """

    member: DeakinConfig = field(default_factory=DeakinConfig)
    epochs: int = 15
    batch_size: int = 2
    learning_rate: float = 4e-5
    validation_fraction: float = 0.2
    split_seed: int = 42
    augment: bool = False


@dataclass(frozen=True)
class Code1055TrainingConfig(VolumeTrainingConfig):
    """Code 1055's recipe (C1055 ``config/config.py``, ``config/modelconfig.py``, ``training.py``,
    ``submission_train.py``; T§4.3.3).

    Attributes
    ----------
    member : Code1055Config
        Input and network (``folds`` networks are trained).
    fold_seed : int
        1055.
    batch_size, max_epochs : int
        4 and 25.
    learning_rate, weight_decay, min_learning_rate : float
        AdamW 5e-5, 1e-8; cosine (per step, ``T_max`` = steps of 25 epochs) down to 1e-6.
    decay_until_epoch : int
        The schedule only steps before this epoch (20).
    ema_decay : float
        0.995 per step; the moving average is validated and saved.
    patience, grace_epochs : int
        Stop after 7 epochs without a better validation AUC, not before epoch 10.
    drop_path_rate : float
        0.1 (``convnext_tiny_3d`` default; ``modelconfig.drop_path`` was never read).
    pos_weight : float
        BCE positive weight on the severity logit (1.0).
    crop_source_shape : tuple of int or None
        Half of the training samples are a random 224^3 crop of the scan resized to this
        (256^3); None uses only the 224^3 resize.
    use_metadata : bool
        Train (and validate) with ``[sex one-hot, age / 85]`` as the authors did.
    """

    member: Code1055Config = field(default_factory=Code1055Config)
    fold_seed: int = 1055
    batch_size: int = 4
    max_epochs: int = 25
    learning_rate: float = 5e-5
    weight_decay: float = 1e-8
    min_learning_rate: float = 1e-6
    decay_until_epoch: int = 20
    ema_decay: float = 0.995
    patience: int = 7
    grace_epochs: int = 10
    drop_path_rate: float = 0.1
    pos_weight: float = 1.0
    crop_source_shape: tuple[int, int, int] | None = (256, 256, 256)
    use_metadata: bool = True


@dataclass(frozen=True)
class FlyingBirdTrainingConfig(VolumeTrainingConfig):
    """Flying Bird's final-phase recipe (FB ``training/train.py``, ``configs/config.py``; T§4.3.3).

    Attributes
    ----------
    member : FlyingBirdConfig
        Input and networks.
    tasks : tuple of str
        Tasks to train: ``("severe",)`` in the final phase, whose COVID-19 models "ship fixed"
        and come from ``initial_weights``; add ``"covid"`` to train those too (all cases).
    fold_seed : int
        Seed of the folds, stratified by (COVID-19, severe) so that every fold has both classes of
        each task (the repository kept a fixed case-to-fold table, whose rule is not published).
    epochs, batch_size : int
        6 and 30 (final phase, from Qualification weights; 200 and 16 in ``config.py``).
    learning_rate, weight_decay : float
        AdamW 3e-4 (one-cycle maximum), 1e-4.
    margin_range_mm : tuple of float
        Range of the random lung-box margins (3-9 mm, FB ``generate_data.py``).
    random_margins : int
        Random-margin crops per case besides the 6 mm one (2).
    mixed_precision : bool
        fp16 autocast on CUDA (``GradScaler``); ignored on CPU.

    The repository divided the age by 5 once per crop inside its loop (so the second and third
    crops saw age / 25 and age / 125); the age here is the inference scale for every crop.
    """

    member: FlyingBirdConfig = field(default_factory=FlyingBirdConfig)
    tasks: tuple[str, ...] = ("severe",)
    fold_seed: int = 0
    epochs: int = 6
    batch_size: int = 30
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    margin_range_mm: tuple[float, float] = (3.0, 9.0)
    random_margins: int = 2
    mixed_precision: bool = True


@dataclass(frozen=True)
class Uaux2TrainingConfig(VolumeTrainingConfig):
    """uaux2's final-phase recipe (UX ``training/train.py``, ``aucmedi/loss.py``; AUCMEDI 0.4
    ``Neural_Network.train``; T§4.3.3).

    Attributes
    ----------
    member : Uaux2Config
        Inputs and networks; ``bag`` severity models are trained.
    tasks : tuple of str
        ``"severe"`` (the bag) and ``"covid"`` (the 3-class model; fixed in the final phase).
    time_limit_hours : float or None
        Stop adding bag models after this long (120 h in the final phase); None: ``bag`` models.
    validation_fraction : float
        Stratified hold-out per bag model (0.05, ``random_state`` = its index).
    batch_size : int
        4 (thesis; the final repository used 7).
    head_epochs, max_epochs : int
        10 epochs with the backbone frozen, at most 250 in all.
    head_learning_rate, learning_rate, min_learning_rate : float
        Adam 1e-4 for the head, 1e-5 after, divided by 10 on a plateau down to 1e-7.
    plateau_patience, patience : int
        8 epochs before dividing the learning rate, 36 before stopping (validation loss).
    iterations_per_epoch : int or None
        Batches per epoch (420 in the final repository); None: one pass over the data.
    gamma : float
        Focal-loss exponent (2, AUCMEDI ``categorical_focal_loss``).
    """

    member: Uaux2Config = field(default_factory=Uaux2Config)
    tasks: tuple[str, ...] = ("severe", "covid")
    time_limit_hours: float | None = None
    validation_fraction: float = 0.05
    batch_size: int = 4
    head_epochs: int = 10
    max_epochs: int = 250
    head_learning_rate: float = 1e-4
    learning_rate: float = 1e-5
    min_learning_rate: float = 1e-7
    plateau_patience: int = 8
    patience: int = 36
    iterations_per_epoch: int | None = None
    gamma: float = 2.0


# --------------------------------------------------------------------------------------------
# Baseline and deakin_team: two sigmoid outputs on the baseline input


def _two_sigmoid_training(
    config: BaselineTrainingConfig | DeakinTrainingConfig,
    member_cls: type[StoicBaseline] | type[StoicDeakin],
    build: Callable[[], nn.Module],
    make_optimiser: Callable[[nn.Module], torch.optim.Optimizer],
    augmentation_factory: Callable[[Sequence[str]], Compose],
    mixed_precision: bool,
) -> TrainingResult:
    started = datetime.now(UTC).isoformat()
    device = torch.device(config.device)
    rows = read_stoic_csv(config.csv_path)
    train_idx, val_idx = train_test_split(
        list(range(len(rows))), test_size=config.validation_fraction, random_state=config.split_seed
    )
    m = config.member

    def views(inputs: MemberInputs, rng: np.random.Generator) -> list[dict[str, Tensor]]:
        return [{_IMAGE: baseline_input(inputs, m.spacing_mm, m.shape, m.window, m.pad_hu).tensors["image"]}]

    cases = _prepare_cases(rows, views, config.seed, config.cache_dir, member_cls.NAME)
    train = [cases[i] for i in train_idx]
    validation = [cases[i] for i in val_idx]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build()
    if config.initial_weights is not None:
        model = member_cls.from_safetensors(config.initial_weights).networks["model"][0]
    model = _trainable(model, device)
    augmentation = _augmentation(augmentation_factory, [_IMAGE], config.augment, config.seed)
    loss_function = nn.BCEWithLogitsLoss()
    autocast = mixed_precision and device.type == "cuda"

    def step(net: nn.Module, batch: list[int]) -> Tensor:
        x = _stack(train, [(i, 0) for i in batch], _IMAGE, device, augmentation)
        y = torch.tensor([[train[i].covid, train[i].severe] for i in batch], dtype=torch.float32, device=device)
        with torch.autocast(device.type, enabled=autocast):
            logits = net(x)
        loss: Tensor = loss_function(logits.float(), y)
        return loss

    def validate(net: nn.Module) -> float:
        net.eval()
        scores = []
        with torch.inference_mode():
            for i in range(len(validation)):
                scores.append(float(torch.sigmoid(net(_stack(validation, [(i, 0)], _IMAGE, device)).float())[0, 1]))
        positives = [k for k, case in enumerate(validation) if case.covid]
        return _auc([validation[k].severe for k in positives], [scores[k] for k in positives])

    fit = _Fit(
        order=_shuffled(len(train)),
        step=step,
        validate=validate,
        optimiser=make_optimiser(model),
        epochs=config.epochs,
        batch_size=config.batch_size,
        drop_last=True,
    )
    best, score, best_epoch, last, history = _fit(model, fit, config.seed)
    record = NetworkHistory("model", 0, score, best_epoch, last, tuple(history))
    data = _data_record(config.csv_path, rows, train_cases=len(train), validation_cases=len(validation))
    return _save(member_cls, m, {"model": [best]}, [record], config, data, started)


def train_baseline(config: BaselineTrainingConfig) -> TrainingResult:
    """Train the baseline I3D (:class:`BaselineTrainingConfig`) and write ``stoic_baseline.safetensors``."""

    def optimiser(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            model.parameters(),
            lr=config.learning_rate,
            betas=config.betas,
            eps=config.eps,
            weight_decay=config.weight_decay,
        )

    def build() -> nn.Module:
        model = BaselineI3D(pool_kernel=config.member.pool_kernel)
        if config.backbone_init is not None:
            load_state(model.backbone, config.backbone_init)  # exact keys and shapes, or it refuses
        return model

    return _two_sigmoid_training(
        config,
        StoicBaseline,
        build,
        optimiser,
        _baseline_augmentation,
        config.mixed_precision,
    )


def train_deakin(config: DeakinTrainingConfig) -> TrainingResult:
    """Train deakin_team's DenseNet-201 (:class:`DeakinTrainingConfig`); writes ``stoic_deakin.safetensors``."""
    m = config.member

    def build() -> nn.Module:
        return DeakinDenseNet(
            growth_rate=m.growth_rate,
            block_config=m.block_config,
            num_init_features=m.num_init_features,
            bn_size=m.bn_size,
        )

    return _two_sigmoid_training(
        config,
        StoicDeakin,
        build,
        lambda model: torch.optim.Adam(model.parameters(), lr=config.learning_rate),
        _baseline_augmentation,
        False,
    )


# --------------------------------------------------------------------------------------------
# Code 1055


def _balanced(indices: Sequence[int], severe: Sequence[int]) -> list[int]:
    """``indices`` plus the severe ones repeated ``int(n / n_severe - 1)`` times (C1055 ``balance``)."""
    severe_only = [i for i in indices if severe[i]]
    if not severe_only:
        return list(indices)
    repeats = int(len(indices) / len(severe_only) - 1)
    return sorted([*indices, *(severe_only * repeats)])


def _code1055_fold(
    config: Code1055TrainingConfig,
    cases: Sequence[_Case],
    fold: int,
    train_idx: Sequence[int],
    val_idx: Sequence[int],
    initial: StoicCode1055 | None,
    device: torch.device,
) -> tuple[nn.Module, NetworkHistory]:
    """One Code 1055 fold (:class:`Code1055TrainingConfig`); its best moving-average network."""
    m = config.member
    samples = _balanced(train_idx, [c.severe for c in cases])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed * 100 + fold)
        model: nn.Module = ConvNeXt3d(
            1,
            2,
            m.depths,
            m.dims,
            kernel_size=m.kernel_size,
            stem_stride=m.stem_stride,
            drop_path_rate=config.drop_path_rate,
        )
    if initial is not None:
        model.load_state_dict(initial.networks["fold"][fold].state_dict())
    model = _trainable(model, device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    # C1055 training.py: T_max = len(train) // batch * MAX_EPOCHS, stepped per batch until epoch 20.
    total_steps = max(1, len(samples) // config.batch_size * config.max_epochs)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, total_steps, eta_min=config.min_learning_rate)
    pos_weight = torch.tensor(config.pos_weight, device=device)
    augmentation = _augmentation(_code1055_augmentation, [_IMAGE], config.augment, config.seed + fold)
    crop = RandSpatialCropd([_IMAGE], roi_size=m.shape, random_size=False)
    crop.set_random_state(seed=config.seed + fold)
    view_rng = np.random.default_rng([config.seed, fold])

    def image_of(case: int) -> Tensor:
        """C1055 ``RandFork``: the 224^3 resize, or a random crop of the larger resize (50/50)."""
        if config.crop_source_shape is None or view_rng.random() < 0.5:
            return torch.from_numpy(np.asarray(cases[case].views[0][_IMAGE], dtype=np.float32))
        source = torch.from_numpy(np.asarray(cases[case].views[1][_IMAGE], dtype=np.float32))
        return torch.as_tensor(crop({_IMAGE: source})[_IMAGE])

    def step(net: nn.Module, batch: list[int]) -> Tensor:
        chosen = [samples[b] for b in batch]
        images = []
        for case in chosen:
            image = image_of(case)
            if augmentation is not None:
                image = torch.as_tensor(augmentation({_IMAGE: image})[_IMAGE], dtype=torch.float32)
            images.append(image)
        meta = _stack(cases, [(c, 0) for c in chosen], "metadata", device) if config.use_metadata else None
        y = torch.tensor([cases[c].severe for c in chosen], dtype=torch.float32, device=device)
        logits = net(torch.stack(images).to(device), meta)
        loss: Tensor = F.binary_cross_entropy_with_logits(logits[:, 1].float(), y, pos_weight=pos_weight)
        return loss

    def validate(net: nn.Module) -> float:
        net.eval()
        scores = []
        with torch.inference_mode():
            for case in val_idx:
                x = _stack(cases, [(case, 0)], _IMAGE, device)
                meta = _stack(cases, [(case, 0)], "metadata", device) if config.use_metadata else None
                scores.append(float(torch.sigmoid(net(x, meta).float())[0, 1]))
        return _auc([cases[c].severe for c in val_idx], scores)

    def per_step(epoch: int) -> None:
        if epoch < config.decay_until_epoch:
            cosine.step()

    fit = _Fit(
        order=_shuffled(len(samples)),
        step=step,
        validate=validate,
        optimiser=optimiser,
        epochs=config.max_epochs,
        batch_size=config.batch_size,
        per_step=per_step,
        ema_decay=config.ema_decay,
        patience=config.patience,
        grace_epochs=config.grace_epochs,
        first_epoch=0,
    )
    best, score, best_epoch, last, history = _fit(model, fit, config.seed * 100 + fold)
    return best, NetworkHistory("fold", fold, score, best_epoch, last, tuple(history))


def train_code1055(config: Code1055TrainingConfig) -> TrainingResult:
    """Train Code 1055's folds (:class:`Code1055TrainingConfig`); writes ``stoic_code1055.safetensors``.

    Raises
    ------
    ValueError
        When a fold has no COVID-positive training or validation case.
    """
    started = datetime.now(UTC).isoformat()
    device = torch.device(config.device)
    rows = read_stoic_csv(config.csv_path)
    m = config.member
    # Folds over all cases, stratified by (COVID-19, severe); then COVID-positive cases only.
    folds = stratified_folds([(r.covid, r.severe) for r in rows], m.folds, config.fold_seed)
    positive = [i for i, r in enumerate(rows) if r.covid]

    def views(inputs: MemberInputs, rng: np.random.Generator) -> list[dict[str, Tensor]]:
        meta = metadata_vector(inputs.age_years, inputs.sex)
        out = [{_IMAGE: code1055_input(m, inputs).tensors["image"], "metadata": meta}]
        if config.crop_source_shape is not None:
            larger = code1055_input(m, inputs, config.crop_source_shape).tensors["image"]
            out.append({_IMAGE: larger, "metadata": meta})
        return out

    splits = []
    for fold in range(m.folds):
        train_idx = [k for k, i in enumerate(positive) if folds[i] != fold]
        val_idx = [k for k, i in enumerate(positive) if folds[i] == fold]
        if not train_idx or not val_idx:
            raise ValueError(f"fold {fold} has no COVID-positive training or validation case")
        splits.append((train_idx, val_idx))
    cases = _prepare_cases([rows[i] for i in positive], views, config.seed, config.cache_dir, StoicCode1055.NAME)
    initial = StoicCode1055.from_safetensors(config.initial_weights) if config.initial_weights else None
    networks, histories = [], []
    for fold, (train_idx, val_idx) in enumerate(splits):
        network, history = _code1055_fold(config, cases, fold, train_idx, val_idx, initial, device)
        networks.append(network)
        histories.append(history)
    data = _data_record(config.csv_path, rows, covid_positive_training_cases=len(positive), folds=folds)
    return _save(StoicCode1055, m, {"fold": networks}, histories, config, data, started)


# --------------------------------------------------------------------------------------------
# Flying Bird


def _flyingbird_fold(
    config: FlyingBirdTrainingConfig,
    cases: Sequence[_Case],
    task: str,
    fold: int,
    train_cases: Sequence[int],
    val_cases: Sequence[int],
    initial: StoicFlyingBird | None,
    device: torch.device,
) -> tuple[nn.Module, NetworkHistory]:
    """One Flying Bird network of ``task`` (``covid`` or ``severe``) for ``fold``."""
    m = config.member
    samples = [(i, v) for i in train_cases for v in range(len(cases[i].views))]
    if len(samples) < config.batch_size or not val_cases:
        raise ValueError(f"{task} fold {fold}: {len(samples)} training samples, {len(val_cases)} validation cases")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed * 100 + fold)
        model: nn.Module = FlyingBirdResNet(1, 2, m.widths, m.layers)
    if initial is not None:
        model.load_state_dict(initial.networks[task][fold].state_dict())
    model = _trainable(model, device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, config.learning_rate, epochs=config.epochs, steps_per_epoch=len(samples) // config.batch_size
    )
    augmentation = _augmentation(_flyingbird_augmentation, [_IMAGE], config.augment, config.seed + fold)
    autocast = config.mixed_precision and device.type == "cuda"

    def label(i: int) -> int:
        return cases[i].covid if task == "covid" else cases[i].severe

    def step(net: nn.Module, batch: list[int]) -> Tensor:
        picks = [samples[b] for b in batch]
        x = _stack(cases, picks, _IMAGE, device, augmentation)
        age = _stack(cases, picks, "age", device)
        y = torch.tensor([label(i) for i, _ in picks], device=device)
        with torch.autocast(device.type, enabled=autocast):
            logits = net(x, age)
        loss: Tensor = F.cross_entropy(logits.float(), y)
        return loss

    def validate(net: nn.Module) -> float:
        """4-view softmax[1] on the 6 mm crop (FB ``_val_one_epoch``)."""
        net.eval()
        scores = []
        with torch.inference_mode():
            for i in val_cases:
                image = _stack(cases, [(i, 0)], _IMAGE, device)[0]
                age = _stack(cases, [(i, 0)], "age", device)
                views = [float(torch.softmax(net(v.unsqueeze(0), age).float(), 1)[0, 1]) for v in flip_views(image)]
                scores.append(float(np.mean(views)))
        return _auc([label(i) for i in val_cases], scores)

    def per_step(epoch: int) -> None:
        schedule.step()

    fit = _Fit(
        order=_shuffled(len(samples)),
        step=step,
        validate=validate,
        optimiser=optimiser,
        epochs=config.epochs,
        batch_size=config.batch_size,
        drop_last=True,
        per_step=per_step,
        validate_before=True,
    )
    best, score, best_epoch, last, history = _fit(model, fit, config.seed * 100 + fold)
    return best, NetworkHistory(task, fold, score, best_epoch, last, tuple(history))


def train_flyingbird(config: FlyingBirdTrainingConfig) -> TrainingResult:
    """Train Flying Bird's folds for ``config.tasks`` (:class:`FlyingBirdTrainingConfig`); writes
    ``stoic_flyingbird.safetensors`` with the trained tasks and the initial weights' other task.

    Raises
    ------
    ValueError
        For an unknown task, a task that is neither trained nor in ``initial_weights``, or a fold
        with fewer training samples than a batch.
    """
    unknown = set(config.tasks) - set(TASKS)
    if unknown or not config.tasks:
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {config.tasks}")
    if config.initial_weights is None and set(config.tasks) != set(TASKS):
        raise ValueError("the tasks not trained come from initial_weights: give a Flying Bird member file")
    started = datetime.now(UTC).isoformat()
    device = torch.device(config.device)
    rows = read_stoic_csv(config.csv_path)
    m = config.member
    folds = stratified_folds([(r.covid, r.severe) for r in rows], m.folds, config.fold_seed)
    initial = StoicFlyingBird.from_safetensors(config.initial_weights) if config.initial_weights else None

    def views(inputs: MemberInputs, case_rng: np.random.Generator) -> list[dict[str, Tensor]]:
        age = torch.tensor([flyingbird_age(m, inputs.age_years)[0]], dtype=torch.float32)
        out = [{_IMAGE: flyingbird_input(m, inputs).tensors["image"], "age": age}]
        for _ in range(config.random_margins):
            margin = float(case_rng.uniform(*config.margin_range_mm))
            out.append({_IMAGE: flyingbird_input(m, inputs, margin).tensors["image"], "age": age})
        return out

    cases = _prepare_cases(rows, views, config.seed, config.cache_dir, StoicFlyingBird.NAME)
    networks: dict[str, list[nn.Module]] = {}
    histories: list[NetworkHistory] = []
    for task in TASKS:
        if task not in config.tasks:
            assert initial is not None  # checked above
            networks[task] = list(initial.networks[task])
            continue
        # Severity on COVID-positive cases only (final phase, T§4.3.3); COVID-19 on all.
        eligible = [i for i, r in enumerate(rows) if task == "covid" or r.covid]
        networks[task] = []
        for fold in range(m.folds):
            train_cases = [i for i in eligible if folds[i] != fold]
            val_cases = [i for i in eligible if folds[i] == fold]
            network, history = _flyingbird_fold(config, cases, task, fold, train_cases, val_cases, initial, device)
            networks[task].append(network)
            histories.append(history)
    data = _data_record(config.csv_path, rows, folds=folds)
    return _save(StoicFlyingBird, m, networks, histories, config, data, started)


# --------------------------------------------------------------------------------------------
# uaux2


def focal_f1_loss(probabilities: Tensor, onehot: Tensor, alpha: Tensor, gamma: float = 2.0) -> Tensor:
    """uaux2's ``focal_f1``: categorical focal loss (AUCMEDI) plus ``1 -`` macro soft F1.

    Focal: mean over the batch of ``sum_c alpha_c (1 - p_c)^gamma (-y_c log p_c)`` with ``p``
    clipped to ``[1e-7, 1 - 1e-7]``; soft F1 per class ``2 TP / (2 TP + FN + FP)`` from the
    probabilities, averaged over classes.
    """
    p = probabilities.clamp(1e-7, 1.0 - 1e-7)
    focal = (alpha * (1.0 - p) ** gamma * (-onehot * torch.log(p))).sum(dim=-1).mean()
    tp = (probabilities * onehot).sum(0)
    fp = (probabilities * (1.0 - onehot)).sum(0)
    fn = ((1.0 - probabilities) * onehot).sum(0)
    f1 = 2.0 * tp / (2.0 * tp + fn + fp + 1e-16)
    return focal + (1.0 - f1.mean())


def _uaux2_backbone(network: nn.Module) -> nn.Module:
    """Everything before the global average pool, frozen in the head phase (AUCMEDI: the layers
    before ``avg_pool``)."""
    if isinstance(network, Uaux2DenseNet):
        return network.features
    if isinstance(network, Uaux2ResNet34):
        return nn.ModuleList([network.bn_data, network.conv0, network.bn0, network.blocks, network.bn1])
    raise TypeError(f"not a uaux2 network: {type(network).__name__}")


def _uaux2_network(
    config: Uaux2TrainingConfig,
    build: Callable[[], nn.Module],
    frozen: Callable[[nn.Module], nn.Module],
    cases: Sequence[_Case],
    key: str,
    labels: Sequence[int],
    classes: int,
    split_seed: int,
    with_metadata: bool,
    device: torch.device,
) -> tuple[nn.Module, NetworkHistory]:
    """One network of uaux2's recipe: head phase, then everything; best validation loss kept."""
    indices = list(range(len(cases)))
    train_idx, val_idx = train_test_split(
        indices, test_size=config.validation_fraction, random_state=split_seed, stratify=labels
    )
    present = np.unique([labels[i] for i in train_idx])
    weights = np.ones(classes, dtype=np.float32)
    weights[present] = compute_class_weight("balanced", classes=present, y=[labels[i] for i in train_idx])
    alpha = torch.tensor(weights, device=device)
    augmentation = _augmentation(_uaux2_augmentation, [key], config.augment, config.seed + split_seed)

    def loss_of(net: nn.Module, picks: Sequence[int], augment: bool) -> Tensor:
        x = _stack(cases, [(i, 0) for i in picks], key, device, augmentation if augment else None)
        onehot = F.one_hot(torch.tensor([labels[i] for i in picks], device=device), classes).float()
        logits = net(x, _stack(cases, [(i, 0) for i in picks], "metadata", device)) if with_metadata else net(x)
        return focal_f1_loss(torch.softmax(logits.float(), 1), onehot, alpha, config.gamma)

    def validate(net: nn.Module) -> float:
        net.eval()
        with torch.inference_mode():
            return -float(loss_of(net, val_idx, augment=False))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed * 1000 + split_seed)
        model = _trainable(build(), device)
    best_model, best_score, best_epoch = model, -math.inf, 0
    history: list[tuple[int, float, float]] = []
    last = 0
    phases = [
        (config.head_learning_rate, config.head_epochs, frozen(model)),
        (config.learning_rate, config.max_epochs - config.head_epochs, None),
    ]
    for learning_rate, epochs, frozen_part in phases:
        if epochs < 1:
            continue
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        if frozen_part is not None:
            for parameter in frozen_part.parameters():
                parameter.requires_grad_(False)
        optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimiser, mode="max", factor=0.1, patience=config.plateau_patience, min_lr=config.min_learning_rate
        )
        fit = _Fit(
            order=_shuffled(len(train_idx)),
            step=lambda net, batch: loss_of(net, [train_idx[b] for b in batch], augment=True),
            validate=validate,
            optimiser=optimiser,
            epochs=epochs,
            batch_size=config.batch_size,
            per_epoch=plateau.step,
            patience=config.patience,
            iterations_per_epoch=config.iterations_per_epoch,
            first_epoch=last + 1,
            frozen=frozen_part,
        )
        candidate, score, epoch, last, phase_history = _fit(model, fit, config.seed * 1000 + split_seed + last)
        history.extend(phase_history)
        if score > best_score:
            best_model, best_score, best_epoch = candidate, score, epoch
    for parameter in best_model.parameters():
        parameter.requires_grad_(True)
    return best_model, NetworkHistory("", 0, best_score, best_epoch, last, tuple(history))


def train_uaux2(config: Uaux2TrainingConfig) -> TrainingResult:
    """Train uaux2's severity bag and/or COVID-19 model (:class:`Uaux2TrainingConfig`); writes
    ``stoic_uaux2.safetensors``.

    Rows without an age cannot be severity cases (uaux2's metadata needs it) and are left out of
    the bag's data.

    Raises
    ------
    ValueError
        For an unknown task, a task neither trained nor in ``initial_weights``, or a missing
        lesion mask (no infection-to-lung ratio).
    """
    known = ("severe", "covid")
    if set(config.tasks) - set(known) or not config.tasks:
        raise ValueError(f"tasks must be a non-empty subset of {known}, got {config.tasks}")
    if config.initial_weights is None and set(config.tasks) != set(known):
        raise ValueError("the tasks not trained come from initial_weights: give a uaux2 member file")
    started = datetime.now(UTC).isoformat()
    device = torch.device(config.device)
    rows = read_stoic_csv(config.csv_path)
    m = config.member

    def views(inputs: MemberInputs, rng: np.random.Generator) -> list[dict[str, Tensor]]:
        if inputs.lesions is None:
            raise ValueError("uaux2 needs a lesion mask for every case (lesion_mask column)")
        prepared = uaux2_input(m, inputs)
        view = {_IMAGE: prepared.tensors["image"], "covid_image": prepared.tensors["covid_image"]}
        view["metadata"] = prepared.tensors.get("metadata", torch.full((3,), math.nan))
        return [view]

    cases = _prepare_cases(rows, views, config.seed, config.cache_dir, StoicUaux2.NAME)
    initial = StoicUaux2.from_safetensors(config.initial_weights) if config.initial_weights else None
    networks: dict[str, list[nn.Module]] = {}
    histories: list[NetworkHistory] = []
    deadline = None if config.time_limit_hours is None else time.monotonic() + 3600.0 * config.time_limit_hours

    if "severe" in config.tasks:
        with_age = [c for c in cases if not np.isnan(np.asarray(c.views[0]["metadata"], dtype=np.float32)).any()]
        networks["severe"] = []
        for index in range(m.bag):
            if deadline is not None and index > 0 and time.monotonic() > deadline:
                logger.info("time limit reached after %d bag models", index)
                break

            def build_severe() -> nn.Module:
                return StoicUaux2.build_network(m, "severe")

            network, history = _uaux2_network(
                config,
                build_severe,
                _uaux2_backbone,
                with_age,
                _IMAGE,
                [c.severe for c in with_age],
                2,
                index,
                True,
                device,
            )
            networks["severe"].append(network)
            histories.append(NetworkHistory("severe", index, *_rest(history)))
        m = replace(m, bag=len(networks["severe"]))
    else:
        assert initial is not None
        networks["severe"] = list(initial.networks["severe"])
    if "covid" in config.tasks:

        def build_covid() -> nn.Module:
            return Uaux2ResNet34(layers=m.resnet_layers, width=m.resnet_width)

        network, history = _uaux2_network(
            config,
            build_covid,
            _uaux2_backbone,
            cases,
            "covid_image",
            [c.covid + c.severe for c in cases],
            3,
            0,
            False,
            device,
        )
        networks["covid"] = [network]
        histories.append(NetworkHistory("covid", 0, *_rest(history)))
    else:
        assert initial is not None
        networks["covid"] = list(initial.networks["covid"])
    data = _data_record(config.csv_path, rows, cases_with_age=sum(r.age_years is not None for r in rows))
    return _save(StoicUaux2, m, networks, histories, config, data, started)


def _rest(history: NetworkHistory) -> tuple[float, int, int, tuple[tuple[int, float, float], ...]]:
    return history.best_score, history.best_epoch, history.epochs, history.history
