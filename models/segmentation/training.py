"""Training the lobe network from (CT, lobe label map) pairs.

The recipe follows nnU-Net where the seeds are silent, with the seeds' own choices where they
speak:

* data: a CSV with a header and the columns ``image`` (a DICOM series folder or a NIfTI/MHA
  file) and ``label`` (a label map readable by SimpleITK, resampled onto the CT with nearest
  neighbour), optionally ``split`` (``train`` or ``validation``); without it a seeded random
  fraction is held out.  Label values are mapped to lobes with ``label_values`` (default 1-5 in
  LUL, LLL, RUL, RML, RLL order);
* preprocessing: exactly the inference chain of :func:`~models.segmentation.lobes.segment_lobes`
  (canonical orientation, crop to the lungs, which here are the labelled voxels, plus a margin,
  resampling, HU window), done once per case;
* patches: a third centred on a voxel of a randomly chosen lobe present in the case (nnU-Net's
  foreground oversampling; drawing the lobe first keeps the small middle lobe represented), the
  rest anywhere; no mirroring, because a mirrored left lung would look like a right one; light
  intensity augmentation (Gaussian noise, brightness scaling);
* loss: Dice + cross-entropy (MONAI ``DiceCELoss``; nnU-Net, and S4 §2.4), with nnU-Net's deep
  supervision (weights 1/2^i over the decoder heads, the coarsest left out, normalised);
* optimiser: Adam (as the thesis trains its networks, T§2.4.5, T§3.3.5);
* model selection: validation Dice per lobe after every epoch, by sliding-window inference in the
  network's voxel space; the best mean Dice is checkpointed, and training stops after
  ``patience`` epochs without improvement;
* outputs: ``lobes.safetensors`` (weights) and ``lobes.model_card.json`` (data, seed, settings,
  metrics per epoch and per lobe, code version, weights hash).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from monai.losses.dice import DiceCELoss

from models import PIPELINE_VERSION
from models.findings import LOBE_NAMES
from models.segmentation.inference import predict_probabilities, sliding_window_inferer
from models.segmentation.lobes import (
    LEFT_LOBES,
    LOBE_CLASSES,
    LOBE_FEATURES,
    RIGHT_LOBES,
    LobeSettings,
    build_lobe_network,
    lobe_preprocessing,
)
from models.segmentation.nnunet import GenericUNet
from models.segmentation.weights import demo_state, save_state
from models.volume import load_series
from models.weights import sha256_of

__all__ = [
    "MODEL_CARD_NAME",
    "WEIGHTS_NAME",
    "LobeTrainingConfig",
    "TrainingError",
    "TrainingResult",
    "read_case",
    "read_pairs",
    "train_lobes",
]

logger = logging.getLogger(__name__)

#: File names written into ``output_dir``.
WEIGHTS_NAME = "lobes.safetensors"
MODEL_CARD_NAME = "lobes.model_card.json"


class TrainingError(ValueError):
    """A training configuration or dataset that cannot be used."""


@dataclass(frozen=True)
class LobeTrainingConfig:
    """Everything a lobe training run depends on (it is copied into the model card).

    Attributes
    ----------
    pairs_csv : pathlib.Path
        CSV of cases (module docstring).
    output_dir : pathlib.Path
        Where weights and model card are written (created if needed).
    seed : int
        Seeds weight initialisation, the split, patch sampling and augmentation.
    features : tuple of int
        Network stage widths; the default is the full-size network.  Tests use a small one.
    settings : LobeSettings
        Preprocessing and validation inference; the same object must be used at inference.
    label_values : tuple of int
        Value in the label files of LUL, LLL, RUL, RML, RLL (other values count as background).
    batch_size : int
        Patches per step.
    iterations_per_epoch : int
        Steps between validations (nnU-Net: 250).
    max_epochs : int
        Upper bound on epochs.
    patience : int
        Epochs without a better validation mean Dice before stopping.
    learning_rate : float
        Adam learning rate.
    weight_decay : float
        Adam weight decay (L2).
    validation_fraction : float
        Share of cases held out when the CSV has no ``split`` column.
    foreground_fraction : float
        Share of patches centred on a lobe voxel.
    deep_supervision : bool
        Add the loss of the coarser decoder heads (nnU-Net).
    device : str
        Torch device for training.
    """

    pairs_csv: Path
    output_dir: Path
    seed: int = 0
    features: tuple[int, ...] = LOBE_FEATURES
    settings: LobeSettings = field(default_factory=LobeSettings)
    label_values: tuple[int, int, int, int, int] = (1, 2, 3, 4, 5)
    batch_size: int = 2
    iterations_per_epoch: int = 250
    max_epochs: int = 500
    patience: int = 30
    learning_rate: float = 3e-4
    weight_decay: float = 3e-5
    validation_fraction: float = 0.2
    foreground_fraction: float = 1.0 / 3.0
    deep_supervision: bool = True
    device: str = "cpu"

    def __post_init__(self) -> None:
        checks = {
            "batch_size": self.batch_size >= 1,
            "iterations_per_epoch": self.iterations_per_epoch >= 1,
            "max_epochs": self.max_epochs >= 1,
            "patience": self.patience >= 1,
            "learning_rate": self.learning_rate > 0,
            "weight_decay": self.weight_decay >= 0,
            "validation_fraction": 0 < self.validation_fraction < 1,
            "foreground_fraction": 0 <= self.foreground_fraction <= 1,
            "label_values": len(self.label_values) == len(LOBE_NAMES) and len(set(self.label_values)) == 5,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise TrainingError(f"invalid training configuration: {', '.join(bad)}")


@dataclass(frozen=True)
class TrainingResult:
    """What a training run produced.

    Attributes
    ----------
    weights_path : pathlib.Path
        Best checkpoint (safetensors).
    model_card_path : pathlib.Path
        JSON model card.
    best_epoch : int
        1-based epoch of the best validation mean Dice.
    best_mean_dice : float
        Mean over lobes (and validation cases) of the Dice at that epoch.
    per_lobe_dice : dict of str to float
        Validation Dice per lobe at that epoch.
    epochs_run : int
        Epochs actually trained.
    stopped_early : bool
        True when patience ran out before ``max_epochs``.
    history : tuple of dict
        Per epoch: ``epoch``, ``loss``, ``mean_dice``, ``per_lobe_dice``, ``seconds``.
    """

    weights_path: Path
    model_card_path: Path
    best_epoch: int
    best_mean_dice: float
    per_lobe_dice: dict[str, float]
    epochs_run: int
    stopped_early: bool
    history: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class _Case:
    """One preprocessed case on the network grid: image ``[1, z, y, x]``, labels 0-5."""

    name: str
    image: torch.Tensor
    labels: np.ndarray


def read_pairs(pairs_csv: Path) -> list[tuple[Path, Path, str | None]]:
    """Rows of the pairs CSV as (image, label, split or None); relative paths are resolved
    against the CSV's folder.

    Raises
    ------
    TrainingError
        Missing columns, unknown split values, missing files or fewer than two cases.
    """
    pairs_csv = Path(pairs_csv)
    with pairs_csv.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        if not {"image", "label"} <= columns:
            raise TrainingError(f"{pairs_csv} needs the columns 'image' and 'label', has {sorted(columns)}")
        rows: list[tuple[Path, Path, str | None]] = []
        for number, row in enumerate(reader, start=2):
            image, label = (pairs_csv.parent / row["image"].strip(), pairs_csv.parent / row["label"].strip())
            split = (row.get("split") or "").strip() or None
            if split not in (None, "train", "validation"):
                raise TrainingError(f"{pairs_csv} line {number}: split must be 'train' or 'validation', got {split!r}")
            for path in (image, label):
                if not path.exists():
                    raise TrainingError(f"{pairs_csv} line {number}: {path} does not exist")
            rows.append((image, label, split))
    if len(rows) < 2:
        raise TrainingError(f"{pairs_csv} lists {len(rows)} case(s); training needs at least two")
    return rows


def read_case(
    image_path: Path, label_path: Path
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], tuple[tuple[float, float, float], ...]]:
    """HU array, label array on the CT grid, spacing (z, y, x) and direction of one case.

    The CT is a DICOM series folder (read by our loader) or an image file; the label map is
    resampled onto the CT's grid in patient space with nearest neighbour, so a label file on
    another grid or in another orientation still lines up.  SimpleITK's direction is row-major
    with the x, y, z axes as columns, the same layout as :class:`Geometry`'s.
    """
    if image_path.is_dir():
        volume = load_series(sorted(p for p in image_path.iterdir() if p.is_file()))
        ct = sitk.GetImageFromArray(volume.hu)
        ct.SetOrigin(volume.geometry.origin)  # type: ignore[no-untyped-call]
        ct.SetSpacing(volume.geometry.spacing[::-1])  # type: ignore[no-untyped-call]
        ct.SetDirection([v for row in volume.geometry.direction for v in row])  # type: ignore[no-untyped-call]
    else:
        ct = sitk.Cast(sitk.ReadImage(str(image_path)), sitk.sitkFloat32)  # type: ignore[no-untyped-call]
    identity = sitk.Transform()  # type: ignore[no-untyped-call]
    label = sitk.Resample(sitk.ReadImage(str(label_path)), ct, identity, sitk.sitkNearestNeighbor, 0)
    d = [float(v) for v in ct.GetDirection()]  # type: ignore[no-untyped-call]
    direction = ((d[0], d[1], d[2]), (d[3], d[4], d[5]), (d[6], d[7], d[8]))
    sx, sy, sz = (float(v) for v in ct.GetSpacing())  # type: ignore[no-untyped-call]
    spacing = (sz, sy, sx)
    hu = np.asarray(sitk.GetArrayFromImage(ct), dtype=np.float32)
    return hu, np.asarray(sitk.GetArrayFromImage(label)), spacing, direction


def _load_case(image_path: Path, label_path: Path, config: LobeTrainingConfig) -> _Case:
    hu, raw, spacing, direction = read_case(image_path, label_path)
    labels = np.zeros(raw.shape, dtype=np.float32)
    for lobe, value in enumerate(config.label_values, start=1):
        labels[raw == value] = lobe
    if not labels.any():
        raise TrainingError(f"{label_path} has none of the lobe values {config.label_values}")
    data = lobe_preprocessing(config.settings, label_keys=("label",))(
        {
            "image": hu,
            "label": labels,
            "lungs": labels > 0,
            "lung_left": np.isin(labels, [LOBE_CLASSES[name] for name in LEFT_LOBES]),
            "lung_right": np.isin(labels, [LOBE_CLASSES[name] for name in RIGHT_LOBES]),
            "spacing": spacing,
            "direction": direction,
        }
    )
    return _Case(image_path.name, data["image"], np.asarray(data["label"]).astype(np.int64))


def _split(rows: Sequence[tuple[Path, Path, str | None]], config: LobeTrainingConfig) -> tuple[list[int], list[int]]:
    if any(split is not None for _, _, split in rows):
        train = [i for i, (_, _, s) in enumerate(rows) if s != "validation"]
        validation = [i for i, (_, _, s) in enumerate(rows) if s == "validation"]
    else:
        order = np.random.default_rng(config.seed).permutation(len(rows))
        held = max(1, int(round(config.validation_fraction * len(rows))))
        validation, train = sorted(order[:held].tolist()), sorted(order[held:].tolist())
    if not train or not validation:
        raise TrainingError(f"need training and validation cases, got {len(train)} and {len(validation)}")
    return train, validation


def _patch(
    case: _Case, patch: Sequence[int], rng: np.random.Generator, foreground: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """One patch of image and labels, padded with zeros (air after scaling) where the case ends."""
    shape = case.labels.shape
    if foreground:
        present = [v for v in range(1, len(LOBE_NAMES) + 1) if np.any(case.labels == v)]
        voxels = np.argwhere(case.labels == present[int(rng.integers(len(present)))])
        centre = voxels[int(rng.integers(len(voxels)))]
        start = [int(c) - p // 2 for c, p in zip(centre, patch, strict=True)]
    else:
        start = [int(rng.integers(min(0, s - p), max(0, s - p) + 1)) for s, p in zip(shape, patch, strict=True)]
    image = torch.zeros((1, *patch), dtype=torch.float32)
    labels = torch.zeros(tuple(patch), dtype=torch.int64)
    source = tuple(slice(max(0, a), min(s, a + p)) for a, s, p in zip(start, shape, patch, strict=True))
    target = tuple(slice(sl.start - a, sl.stop - a) for sl, a in zip(source, start, strict=True))
    image[(slice(None), *target)] = case.image[(slice(None), *source)]
    labels[target] = torch.from_numpy(case.labels[source])
    return image, labels


def _batch(
    cases: Sequence[_Case], config: LobeTrainingConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch on ``config.device``: augmented images ``[b, 1, ...]``, float labels ``[b, 1, ...]``.

    Augmentation is intensity only (brightness x U(0.9, 1.1), Gaussian noise of sd 0.02 on the
    [0, 1] scale): spatial mirroring would turn a left lung into a right one.
    """
    patches = [
        _patch(
            cases[int(rng.integers(len(cases)))], config.settings.patch, rng, rng.random() < config.foreground_fraction
        )
        for _ in range(config.batch_size)
    ]
    images = torch.stack([p[0] for p in patches])
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(int(rng.integers(2**31))))
    images = images * float(rng.uniform(0.9, 1.1)) + 0.02 * noise
    labels = torch.stack([p[1] for p in patches])[:, None].float()
    return images.to(config.device), labels.to(config.device)


def _dice_per_lobe(prediction: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice of every lobe; 1 when a lobe is absent from both."""
    out: dict[str, float] = {}
    for value, name in enumerate(LOBE_NAMES, start=1):
        p, t = prediction == value, truth == value
        total = int(p.sum()) + int(t.sum())
        out[name] = 1.0 if total == 0 else 2.0 * int(np.count_nonzero(p & t)) / total
    return out


def _deep_supervision_weights(heads: int) -> list[float]:
    """nnU-Net v1: 1/2^i per head (full resolution first), coarsest excluded, normalised."""
    weights = [1.0 / 2**i for i in range(heads)]
    if heads > 2:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def _code_version() -> dict[str, str | None]:
    """Pipeline version and, when the code is a git checkout, its commit (read-only query)."""
    commit: str | None = None
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        commit = done.stdout.strip() or None if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"pipeline_version": PIPELINE_VERSION, "git_commit": commit}


def _validate(network: GenericUNet, cases: Sequence[_Case], config: LobeTrainingConfig) -> dict[str, float]:
    inferer = sliding_window_inferer(config.settings.patch, config.settings.overlap)
    scores = {name: 0.0 for name in LOBE_NAMES}
    for case in cases:
        probabilities = predict_probabilities(network, case.image, inferer, config.device)
        per_lobe = _dice_per_lobe(probabilities.argmax(0).numpy(), case.labels)
        for name in LOBE_NAMES:
            scores[name] += per_lobe[name] / len(cases)
    network.train()
    return scores


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def train_lobes(config: LobeTrainingConfig) -> TrainingResult:
    """Train the lobe network; write the best weights and a model card.

    Parameters
    ----------
    config : LobeTrainingConfig
        Data, network size, recipe and seed.

    Returns
    -------
    TrainingResult
        Paths, the best validation Dice and the per-epoch history.

    Raises
    ------
    TrainingError
        An unusable CSV, split or label file.
    """
    rows = read_pairs(config.pairs_csv)
    train_ids, validation_ids = _split(rows, config)
    cases = {i: _load_case(rows[i][0], rows[i][1], config) for i in (*train_ids, *validation_ids)}
    train_cases = [cases[i] for i in train_ids]
    validation_cases = [cases[i] for i in validation_ids]
    rng = np.random.default_rng(config.seed)

    network = build_lobe_network(config.features)
    demo_state(network, config.seed)  # He-normal initialisation, reproducible from the seed
    network.to(config.device).train()
    optimiser = torch.optim.Adam(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    heads = len(network.seg_outputs) if config.deep_supervision else 1
    head_weights = _deep_supervision_weights(heads)

    config.output_dir.mkdir(parents=True, exist_ok=True)
    weights_path = config.output_dir / WEIGHTS_NAME
    history: list[dict[str, Any]] = []
    best_epoch, best_dice, best_per_lobe = 0, -math.inf, {name: 0.0 for name in LOBE_NAMES}
    for epoch in range(1, config.max_epochs + 1):
        started = time.monotonic()
        running = 0.0
        for _ in range(config.iterations_per_epoch):
            images, labels = _batch(train_cases, config, rng)
            outputs = network.forward_deep_supervision(images) if config.deep_supervision else [network(images)]
            loss = torch.zeros((), device=config.device)
            for weight, output in zip(head_weights, outputs, strict=True):
                if weight == 0.0:
                    continue
                target = (
                    labels
                    if output.shape[2:] == labels.shape[2:]
                    else F.interpolate(labels, size=output.shape[2:], mode="nearest-exact")
                )
                loss = loss + weight * loss_function(output, target)
            optimiser.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            optimiser.step()
            running += float(loss.detach()) / config.iterations_per_epoch
        per_lobe = _validate(network, validation_cases, config)
        mean_dice = float(np.mean(list(per_lobe.values())))
        history.append(
            {
                "epoch": epoch,
                "loss": running,
                "mean_dice": mean_dice,
                "per_lobe_dice": per_lobe,
                "seconds": time.monotonic() - started,
            }
        )
        logger.info("epoch %d: loss %.4f, validation mean Dice %.4f", epoch, running, mean_dice)
        if mean_dice > best_dice:
            best_epoch, best_dice, best_per_lobe = epoch, mean_dice, per_lobe
            save_state(network, weights_path, {"architecture": "GenericUNet", "task": "lobes", "epoch": str(epoch)})
        elif epoch - best_epoch >= config.patience:
            break

    stopped_early = len(history) < config.max_epochs
    card = {
        "task": "pulmonary lobe segmentation",
        "classes": ["background", *LOBE_NAMES],
        "architecture": {
            "class": "GenericUNet",
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": 1 + len(LOBE_NAMES),
            "features": list(network.features),
            "strides": [list(s) for s in network.strides],
        },
        "weights_file": WEIGHTS_NAME,
        "weights_sha256": sha256_of(weights_path),
        "data": {
            "pairs_csv": str(config.pairs_csv),
            "pairs_csv_sha256": sha256_of(Path(config.pairs_csv)),
            "training": [str(rows[i][0]) for i in train_ids],
            "validation": [str(rows[i][0]) for i in validation_ids],
        },
        "seed": config.seed,
        "config": _jsonable(asdict(config)),
        "metrics": {
            "selection": "validation mean Dice over lobes, network voxel space",
            "best_epoch": best_epoch,
            "best_mean_dice": best_dice,
            "per_lobe_dice": best_per_lobe,
            "epochs_run": len(history),
            "stopped_early": stopped_early,
            "history": history,
        },
        "code_version": _code_version(),
        "torch_version": torch.__version__,
        "created": datetime.now(UTC).isoformat(),
        "validated": False,
        "note": "validation Dice on held-out cases of this dataset only; not a clinical validation",
    }
    card_path = config.output_dir / MODEL_CARD_NAME
    card_path.write_text(json.dumps(card, indent=2, sort_keys=True), encoding="utf-8")
    return TrainingResult(
        weights_path=weights_path,
        model_card_path=card_path,
        best_epoch=best_epoch,
        best_mean_dice=best_dice,
        per_lobe_dice=dict(best_per_lobe),
        epochs_run=len(history),
        stopped_early=stopped_early,
        history=tuple(history),
    )
