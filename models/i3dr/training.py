"""Training of I3Dr models A and B with the recipe of thesis section 2.4.5 (``lungcds train i3dr``).

Recipe (T§2.4.5): Adam (0.9, 0.999), learning rate 1e-4, weight decay 1e-2 (torch's ``Adam``
``weight_decay``, an L2 term added to the gradient, as "Adam [...] with weight decay" reads),
L1 loss, batch size 2, early stopping with a patience of 15 epochs; augmentation by rotation,
translation and shearing in the axial plane, elastic deformation and Gaussian noise, with the CT
copied into three channels after augmentation; model B trained with Algorithm 1.

**Label scaling.**  T§2.4.5: "All CT scan labels were divided by their mean standard deviation
in the training set".  What is computed here: for each output ``k``, ``s_k`` is the standard
deviation (population form, ``ddof = 0``) of label ``k`` over the *training-split* CTs that have
that label; the loss compares ``prediction_k`` with ``label_k / s_k``, and the network's raw
output times ``s_k`` is the estimate (the scales go into the model card).  Labels are divided,
not centred: a lobe's share of a sum then stays a share of the same sum (T§2.3.1).  An output
without any training label gets ``s_k = 1`` and is listed as untrained in the card; a label with
values but zero spread is an error.

**Missing labels.**  "For input CT scans for which not all labels were available, the loss was
computed using only the available labels" (T§2.4.5): the loss of a batch is the mean of
``|prediction - label / s|`` over the (scan, output) pairs that have a label, so a missing label
contributes nothing to the loss or the gradient.  Scans without any label are skipped.

**Algorithm 1** (:func:`algorithm1_backward`): the lobe images of a batch are split into
virtual mini-batches of two; each runs through ``f_B`` without a graph and the features are
cached; per scan they are summed into ``z_s``, the head gives the loss and the gradient of the
head and of each ``z_s``; then each mini-batch is run again *with* a graph and back-propagated
with ``dL/dz_s`` of its scan, which is the gradient of ``h~_i + sum_{j != i} h_j`` (line 10;
the cached features of the other lobes are constants there).  The result is the gradient of
plain back-propagation through all lobes, with one mini-batch's graph in memory at a time.
Two details keep the two passes of a mini-batch identical: the random state is restored before
the second pass (dropout draws the same mask), and BatchNorm running statistics are restored
after the first pass (they are updated once, not twice).  With BatchNorm in training mode, the
batch statistics are those of each mini-batch of two lobe images, in both passes; this is the
gradient of the network in which BN normalises per virtual mini-batch, as in the thesis.

CSV (header row; paths relative to the CSV's folder; any cell but ``image`` may be empty):

``image``
    A DICOM series folder or an image file SimpleITK reads (NIfTI, MHA, NRRD).
``lung_mask``
    Non-zero is lung.  Without it: the union of the lobes, else the classical lung mask.
``lobe_mask``
    A label map with 1 LUL, 2 LLL, 3 RUL, 4 RML, 5 RLL (the order of
    :data:`models.findings.LOBE_NAMES`); required for model B.
``pv_l``, ``fpv_l``, ``fev1_pre_l``, ``fev1_post_l``, ``fvc_pre_l``, ``fvc_post_l``, ``dlco``
    Patient labels (L; DLCO in mL/min/mmHg).  With ``derive_volume_labels``, a missing PV or FPV
    is measured from the lung mask as T§2.4.3 computed them (mask volume; volume of voxels in
    [-950, -500] HU).
``split``
    ``train`` or ``validation`` (for every row or none); otherwise patients are split at random.
``patient``
    Patient identifier: all CTs of a patient go to the same split (T§2.4.3).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from models.corads.augmentation import AugmentationConfig, augment_batch
from models.corads.data import read_image, read_mask
from models.findings import LOBE_NAMES
from models.i3dr.card import make_model_card, make_part_card, save_i3dr_file
from models.i3dr.model import OUTPUTS, BackboneSpec, RegionSumRegressor, build_model_a, build_model_b
from models.i3dr.preprocessing import I3drPreprocessingConfig, preprocess_regions, replicate_channels
from models.qct.lungmask import segment_lungs
from models.qct.measurements import measure_region
from models.segmentation.weights import load_state
from models.training_rows import optional_path, split_by_patient

__all__ = [
    "I3DR_AUGMENTATION",
    "SPLITS",
    "VALIDATION_FRACTION",
    "FitResult",
    "I3drCase",
    "I3drCsvRow",
    "I3drTrainingConfig",
    "TrainingRecipe",
    "TrainingResult",
    "algorithm1_backward",
    "fit",
    "label_scales",
    "load_cases",
    "masked_l1_loss",
    "predict_cases",
    "read_csv",
    "split_rows",
    "train_i3dr",
]

logger = logging.getLogger(__name__)

#: Accepted values of the ``split`` column.
SPLITS = ("train", "validation")
#: Validation share of the CTs used for fitting: 1 775 of 8 433 + 1 775 (T§2.4.3, Table 2.1).
VALIDATION_FRACTION = 1775 / (8433 + 1775)
#: Augmentation of T§2.4.5 ("rotation, translation, and shearing in the axial plane, elastic
#: deformation, and adding Gaussian noise").  The thesis gives no ranges for I3Dr; these are the
#: CO-RADS ranges of the same group (T§3.3.5: 15 degrees, shear 0.1, 20 voxels, noise SD up to
#: 0.01) without zoom (not listed for I3Dr, and it would change the volumes being learnt) and
#: without translation along z (not in the axial plane).  The elastic control grid is isotropic
#: because the I3Dr block is a 240^3 cube.
I3DR_AUGMENTATION = AugmentationConfig(
    zoom=0.0,
    rotation_deg=15.0,
    shear=0.1,
    translation_voxels=(0.0, 20.0, 20.0),
    elastic_sd_voxels=2.0,
    elastic_control_points=(8, 8, 8),
    noise_sd=0.01,
)


@dataclass(frozen=True)
class TrainingRecipe:
    """Optimisation settings; defaults are T§2.4.5.

    Attributes
    ----------
    batch_size : int
        CTs per batch (2).
    learning_rate, weight_decay, betas
        Adam settings (1e-4, 1e-2, (0.9, 0.999)).
    patience_epochs : int
        Epochs without a lower validation loss before stopping (15).
    max_epochs : int
        Upper bound on epochs (not in the thesis).
    virtual_batch_size : int or None
        Lobe images per virtual mini-batch of Algorithm 1 (2); ``None`` back-propagates through
        all lobes of the batch at once.  Ignored for model A.
    augmentation : AugmentationConfig or None
        Random transforms per region image; ``None`` disables them.
    seed : int
        Seed of the initialisation, the batch order and the augmentation.
    """

    batch_size: int = 2
    learning_rate: float = 1e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    patience_epochs: int = 15
    max_epochs: int = 500
    virtual_batch_size: int | None = 2
    augmentation: AugmentationConfig | None = I3DR_AUGMENTATION
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "patience_epochs", "max_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.virtual_batch_size is not None and self.virtual_batch_size < 1:
            raise ValueError(f"virtual_batch_size must be positive or None, got {self.virtual_batch_size}")
        if self.learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError(f"need a positive learning rate and a non-negative weight decay, got {self}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, for the model card."""
        out = asdict(self)
        out["betas"] = list(self.betas)
        out["augmentation"] = self.augmentation.as_dict() if self.augmentation else None
        out["optimizer"] = "Adam (torch weight_decay: L2 term in the gradient)"
        out["loss"] = "L1 on labels divided by their training-set standard deviation; missing labels masked"
        return out


@dataclass(frozen=True)
class I3drTrainingConfig:
    """Everything a training run of model A or B depends on.

    Attributes
    ----------
    csv_path : pathlib.Path
        The data (module docstring).
    output_dir : pathlib.Path
        Where ``i3dr_a.safetensors`` or ``i3dr_b.safetensors`` goes.
    model : {"a", "b"}
        Which model to train.
    backbone : BackboneSpec
        I3D by default (T§2.4.5).
    pretrained_backbone : pathlib.Path or None
        A safetensors state dict of the backbone (the thesis started from Kinetics RGB weights,
        which cannot be fetched here), loaded strictly.
    preprocessing : I3drPreprocessingConfig
        Input construction (T§2.4.4).
    recipe : TrainingRecipe
        Optimisation (T§2.4.5).
    validation_fraction, split_seed
        Random patient-level split when the CSV has no ``split`` column.
    derive_volume_labels : bool
        Measure missing PV and FPV labels from the lung mask (T§2.4.3).
    device : str
        ``"cpu"``, ``"cuda"``...
    cache_dir : pathlib.Path or None
        Folder for preprocessed inputs (``.npy``, memory-mapped); in memory when ``None``.
    """

    csv_path: Path
    output_dir: Path
    model: Literal["a", "b"]
    backbone: BackboneSpec = field(default_factory=BackboneSpec)
    pretrained_backbone: Path | None = None
    preprocessing: I3drPreprocessingConfig = field(default_factory=I3drPreprocessingConfig)
    recipe: TrainingRecipe = field(default_factory=TrainingRecipe)
    validation_fraction: float = VALIDATION_FRACTION
    split_seed: int = 0
    derive_volume_labels: bool = True
    device: str = "cpu"
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.model not in ("a", "b"):
            raise ValueError(f"model must be 'a' or 'b', got {self.model!r}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")


@dataclass(frozen=True)
class I3drCsvRow:
    """One line of the training CSV with paths resolved; ``labels`` has NaN where missing."""

    image: Path
    lung_mask: Path | None
    lobe_mask: Path | None
    labels: np.ndarray
    split: str | None
    patient: str


@dataclass(frozen=True)
class I3drCase:
    """A preprocessed CT: one-channel blocks ``(R, D, H, W)`` (float16 or float32) and labels.

    ``labels`` is ``(7,)`` float64 in the outputs' units with NaN where missing.
    """

    name: str
    blocks: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class FitResult:
    """The outcome of :func:`fit`.

    Attributes
    ----------
    best_epoch : int
        Epoch whose state was kept (lowest validation loss).
    best_validation_loss : float
        That loss (scaled L1 over available labels).
    epochs : int
        Epochs trained.
    stopped_early : bool
        True when the patience ran out before ``max_epochs``.
    history : tuple of tuple
        ``(epoch, mean training loss, validation loss)`` per epoch.
    """

    best_epoch: int
    best_validation_loss: float
    epochs: int
    stopped_early: bool
    history: tuple[tuple[int, float, float], ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, for the model card."""
        return {
            "best_epoch": self.best_epoch,
            "best_validation_loss_scaled_l1": self.best_validation_loss,
            "epochs": self.epochs,
            "stopped_early": self.stopped_early,
            "history": [list(h) for h in self.history],
        }


@dataclass(frozen=True)
class TrainingResult:
    """A finished run: the weights file (one part), the fit, the label scales and the card."""

    path: Path
    model: str
    fit: FitResult
    label_scales: dict[str, float]
    label_counts: dict[str, int]
    card: dict[str, Any]


def label_scales(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output training-set spread (module docstring) and label counts of ``(N, 7)`` labels.

    Raises
    ------
    ValueError
        If an output has labels but no spread (one value, or all equal).
    """
    labels = np.asarray(labels, dtype=np.float64)
    counts = np.isfinite(labels).sum(axis=0)
    scales = np.ones(labels.shape[1])
    for k in np.flatnonzero(counts):
        spread = float(np.std(labels[np.isfinite(labels[:, k]), k]))
        if not spread > 0:
            raise ValueError(f"label {OUTPUTS[k]} has {counts[k]} value(s) without spread: cannot scale it")
        scales[k] = spread
    return scales, counts


def masked_l1_loss(predicted: Tensor, scaled_targets: Tensor) -> Tensor:
    """Mean ``|predicted - target|`` over the entries whose target is finite (NaN = missing).

    A missing target contributes neither to the value nor to the gradient; with no target at
    all the loss is 0 (with a zero gradient).
    """
    available = torch.isfinite(scaled_targets)
    difference = torch.where(available, predicted - torch.nan_to_num(scaled_targets), torch.zeros_like(predicted))
    return difference.abs().sum() / available.sum().clamp(min=1)


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.random.get_rng_state(), cuda


def _set_rng_state(state: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    torch.random.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


@contextmanager
def _running_stats_restored(module: nn.Module) -> Iterator[None]:
    """BatchNorm running statistics as before the block (Algorithm 1's first pass must not update them)."""
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    saved = [
        {k: v.clone() for k, v in m.state_dict().items() if k.startswith(("running_", "num_batches"))} for m in norms
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for norm, buffers in zip(norms, saved, strict=True):
                for name, value in buffers.items():
                    getattr(norm, name).copy_(value)


def algorithm1_backward(
    model: RegionSumRegressor, inputs: Tensor, scaled_targets: Tensor, virtual_batch_size: int = 2
) -> Tensor:
    """Gradients of the masked L1 loss of model B with Algorithm 1 (T§2.4.5), accumulated in ``.grad``.

    Parameters
    ----------
    model : RegionSumRegressor
        Model B (any number of regions), in the mode it should train in.
    inputs : torch.Tensor
        ``(S, R, C, D, H, W)`` region images of ``S`` scans, already augmented and replicated.
    scaled_targets : torch.Tensor
        ``(S, O)`` labels divided by their scales, NaN where missing.
    virtual_batch_size : int
        Region images per virtual mini-batch (2 in the thesis).

    Returns
    -------
    torch.Tensor
        The loss (detached).

    Raises
    ------
    ValueError
        For a non-positive virtual batch size or inputs that do not fit the model.
    """
    if virtual_batch_size < 1:
        raise ValueError(f"virtual_batch_size must be positive, got {virtual_batch_size}")
    if inputs.ndim < 4 or inputs.shape[1] != model.num_regions:
        raise ValueError(f"expected (S, {model.num_regions}, C, ...) inputs, got {tuple(inputs.shape)}")
    scans, regions = inputs.shape[:2]
    images = inputs.flatten(0, 1)
    scan_of = torch.arange(scans, device=inputs.device).repeat_interleave(regions)
    chunks = [
        slice(i, min(i + virtual_batch_size, scans * regions)) for i in range(0, scans * regions, virtual_batch_size)
    ]
    states = []
    cached = []
    # Lines 1-3: features of every mini-batch without a graph.
    with torch.no_grad(), _running_stats_restored(model.backbone):
        for chunk in chunks:
            states.append(_rng_state(inputs.device))
            cached.append(model.backbone(images[chunk]))
    # Lines 4-6: z_s = sum of the scan's features; the head, its gradient and dL/dz_s.
    z = torch.cat(cached).reshape(scans, regions, -1).sum(dim=1).requires_grad_(True)
    loss = masked_l1_loss(model.head(z), scaled_targets)
    torch.autograd.backward(loss)
    grad_z = z.grad
    if grad_z is None:
        raise RuntimeError("no gradient reached the summed features")
    # Lines 7-12: recompute each mini-batch with a graph; dL/dh~_i = dL/dz_{Q(i)} because the
    # other lobes' cached features enter z~_i as constants.
    for chunk, state in zip(chunks, states, strict=True):
        _set_rng_state(state, inputs.device)
        features = model.backbone(images[chunk])
        torch.autograd.backward(features, grad_tensors=grad_z[scan_of[chunk]])
    return loss.detach()


def _batch_tensors(cases: Sequence[I3drCase], scales: np.ndarray, device: torch.device) -> tuple[Tensor, Tensor]:
    """One-channel inputs ``(S, R, 1, D, H, W)`` and scaled targets ``(S, 7)`` on ``device``."""
    inputs = torch.from_numpy(np.stack([np.asarray(c.blocks, dtype=np.float32) for c in cases]))[:, :, None]
    targets = torch.from_numpy(np.stack([c.labels / scales for c in cases]))
    return inputs.to(device), targets.to(device, torch.float32)


def _augment(inputs: Tensor, config: AugmentationConfig, generator: torch.Generator) -> Tensor:
    """One random transform per region image, two images per call (bounds the sampling grid's memory)."""
    images = inputs.flatten(0, 1)
    ct = torch.ones(2, 1, dtype=torch.bool, device=inputs.device)
    out = torch.cat([augment_batch(part, ct[: part.shape[0]], config, generator) for part in torch.split(images, 2)])
    return out.reshape(inputs.shape)


def predict_cases(model: RegionSumRegressor, cases: Sequence[I3drCase], device: torch.device) -> np.ndarray:
    """Raw (scaled) patient outputs ``(N, 7)`` of ``model`` (switched to eval mode), in order."""
    model.eval()
    outputs = []
    with torch.inference_mode():
        for case in cases:
            x = torch.from_numpy(np.asarray(case.blocks, dtype=np.float32))[None, :, None].to(device)
            outputs.append(model(replicate_channels(x)).double().cpu().numpy()[0])
    return np.asarray(outputs).reshape(len(cases), -1)


def _validation_loss(
    model: RegionSumRegressor, cases: Sequence[I3drCase], scales: np.ndarray, device: torch.device
) -> float:
    predicted = predict_cases(model, cases, device)
    targets = np.stack([c.labels / scales for c in cases])
    available = np.isfinite(targets)
    return float(np.abs(predicted - np.nan_to_num(targets))[available].sum() / max(1, available.sum()))


def fit(
    model: RegionSumRegressor,
    train: Sequence[I3drCase],
    validation: Sequence[I3drCase],
    scales: np.ndarray,
    recipe: TrainingRecipe,
    device: torch.device | str = "cpu",
    on_improvement: Callable[[RegionSumRegressor, int, float], None] | None = None,
) -> FitResult:
    """Train ``model`` in place with early stopping on the validation loss; it ends with the best state.

    Parameters
    ----------
    model : RegionSumRegressor
        Model A (one region) or B (its regions trained with Algorithm 1 when
        ``recipe.virtual_batch_size`` is set).
    train, validation : sequence of I3drCase
        Cases whose blocks have ``model.num_regions`` regions.
    scales : numpy.ndarray
        ``(7,)`` label scales (:func:`label_scales` of the training labels).
    recipe : TrainingRecipe
        Optimisation settings.
    device : torch.device or str
        Where to train.
    on_improvement : callable, optional
        Called with the model, the epoch and the validation loss whenever the loss improves
        (to write a checkpoint).

    Returns
    -------
    FitResult
        Best epoch and loss, epochs run, and the per-epoch history.

    Raises
    ------
    ValueError
        For an empty split or cases that do not fit the model.
    """
    if not train or not validation:
        raise ValueError(f"need training and validation cases, got {len(train)} and {len(validation)}")
    for case in (*train, *validation):
        if case.blocks.shape[0] != model.num_regions:
            raise ValueError(f"case {case.name} has {case.blocks.shape[0]} regions, the model {model.num_regions}")
    device = torch.device(device)
    model.to(device)
    optimiser = torch.optim.Adam(
        model.parameters(), lr=recipe.learning_rate, betas=recipe.betas, weight_decay=recipe.weight_decay
    )
    rng = np.random.default_rng(recipe.seed)
    generator = torch.Generator(device=device).manual_seed(recipe.seed)
    best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(model.state_dict())
    history: list[tuple[int, float, float]] = []
    stopped_early = False
    epoch = 0
    for epoch in range(1, recipe.max_epochs + 1):
        model.train()
        losses = []
        order = rng.permutation(len(train))
        for start in range(0, len(order), recipe.batch_size):
            inputs, targets = _batch_tensors(
                [train[i] for i in order[start : start + recipe.batch_size]], scales, device
            )
            if recipe.augmentation is not None:
                inputs = _augment(inputs, recipe.augmentation, generator)
            inputs = replicate_channels(inputs)
            optimiser.zero_grad(set_to_none=True)
            if model.num_regions > 1 and recipe.virtual_batch_size is not None:
                loss = algorithm1_backward(model, inputs, targets, recipe.virtual_batch_size)
            else:
                loss = masked_l1_loss(model(inputs), targets)
                torch.autograd.backward(loss)
            optimiser.step()
            losses.append(float(loss.detach()))
        validation_loss = _validation_loss(model, validation, scales, device)
        history.append((epoch, float(np.mean(losses)), validation_loss))
        logger.info("epoch %d: training loss %.4f, validation loss %.4f", epoch, history[-1][1], validation_loss)
        if validation_loss < best_loss:
            best_loss, best_epoch, best_state = validation_loss, epoch, copy.deepcopy(model.state_dict())
            if on_improvement is not None:
                on_improvement(model, epoch, validation_loss)
        elif epoch - best_epoch >= recipe.patience_epochs:
            stopped_early = True
            break
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_epoch, best_loss, epoch, stopped_early, tuple(history))


def _label(path: Path, line: int, name: str, text: str | None) -> float:
    text = (text or "").strip()
    if not text:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path}:{line}: {name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{path}:{line}: {name} {text!r} is not finite (leave the cell empty when missing)")
    return value


def read_csv(path: Path) -> list[I3drCsvRow]:
    """Rows of a training CSV (module docstring), validated.

    Raises
    ------
    ValueError
        For a missing ``image`` column or file, a label that is not a finite number, or an unknown split.
    """
    base = path.resolve().parent
    rows: list[I3drCsvRow] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "image" not in (reader.fieldnames or ()):
            raise ValueError(f"{path}: missing column 'image'")
        for line, record in enumerate(reader, start=2):
            image = optional_path(base, record["image"])
            if image is None or not image.exists():
                raise ValueError(f"{path}:{line}: image {record['image']!r} does not exist")
            split = (record.get("split") or "").strip() or None
            if split is not None and split not in SPLITS:
                raise ValueError(f"{path}:{line}: split {split!r} is not one of {SPLITS}")
            labels = np.array([_label(path, line, name, record.get(name)) for name in OUTPUTS])
            rows.append(
                I3drCsvRow(
                    image=image,
                    lung_mask=optional_path(base, record.get("lung_mask")),
                    lobe_mask=optional_path(base, record.get("lobe_mask")),
                    labels=labels,
                    split=split,
                    patient=(record.get("patient") or "").strip() or f"row{line}",
                )
            )
    if not rows:
        raise ValueError(f"{path}: no cases")
    return rows


def split_rows(
    rows: Sequence[I3drCsvRow], validation_fraction: float, seed: int
) -> tuple[list[I3drCsvRow], list[I3drCsvRow]]:
    """Training and validation rows: the ``split`` column when every row has one, otherwise a
    random split of patients (T§2.4.3: "performed at a subject level").

    Raises
    ------
    ValueError
        If only some rows have a split, or a split comes out empty.
    """

    def at_random(rows: Sequence[I3drCsvRow]) -> set[str]:
        patients = sorted({row.patient for row in rows})
        np.random.default_rng(seed).shuffle(patients)
        return set(patients[: max(1, round(validation_fraction * len(patients)))])

    return split_by_patient(rows, at_random)


def _regions_and_labels(
    row: I3drCsvRow, model: str, config: I3drPreprocessingConfig, derive_volume_labels: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed float16 blocks ``(R, D, H, W)`` and labels of one row."""
    volume = read_image(row.image)
    lobes: dict[str, np.ndarray] = {}
    if row.lobe_mask is not None:
        label_map = np.rint(read_mask(row.lobe_mask, volume)).astype(np.int64)
        lobes = {name: label_map == index + 1 for index, name in enumerate(LOBE_NAMES)}
    if row.lung_mask is not None:
        lungs = read_mask(row.lung_mask, volume) > 0
    elif lobes:
        lungs = np.logical_or.reduce(list(lobes.values()))
    else:
        segmentation = segment_lungs(volume)
        lungs = segmentation.left | segmentation.right
    labels = row.labels.copy()
    if derive_volume_labels and not np.isfinite(labels[:2]).all():
        measured = measure_region(volume.hu, lungs, volume.geometry, "lungs")
        if measured.fpv_ml is None:
            raise ValueError(f"{row.image}: the lung mask is empty")
        for k, value in enumerate((measured.volume_ml, measured.fpv_ml)):
            if not np.isfinite(labels[k]):
                labels[k] = value / 1000.0
    if model == "a":
        regions = {"lungs": lungs}
    elif not lobes:
        raise ValueError(f"{row.image}: model B needs a lobe_mask")
    else:
        regions = lobes
    inputs = preprocess_regions(volume, regions, config)
    blocks = np.stack([inputs[name].image for name in regions]).astype(np.float16)
    return blocks, labels


def _cache_key(row: I3drCsvRow, model: str, config: I3drPreprocessingConfig, derive: bool) -> str:
    facts = [model, str(derive), json.dumps(config.as_dict(), sort_keys=True)]
    for path in (row.image, row.lung_mask, row.lobe_mask):
        facts.append(str(path))
        if path is not None and path.exists():
            facts.append(str(path.stat().st_mtime_ns))
    return hashlib.sha256("\n".join(facts).encode()).hexdigest()[:32]


def load_cases(
    rows: Sequence[I3drCsvRow],
    model: str,
    config: I3drPreprocessingConfig,
    *,
    derive_volume_labels: bool = True,
    cache_dir: Path | None = None,
) -> list[I3drCase]:
    """Preprocess every row once (T§2.4.4) for model ``"a"`` or ``"b"``; rows without any label are skipped.

    With ``cache_dir``, blocks are kept as memory-mapped ``.npy`` files (with the derived labels
    beside them) and reused while the source files are unchanged.  float16 resolves the [0, 1]
    scale to better than 0.001 (about 1.4 HU), far below the augmentation noise.
    """
    cases = []
    for row in rows:
        if cache_dir is None:
            blocks, labels = _regions_and_labels(row, model, config, derive_volume_labels)
        else:
            cache_dir.mkdir(parents=True, exist_ok=True)
            stem = cache_dir / _cache_key(row, model, config, derive_volume_labels)
            if not stem.with_suffix(".npy").exists():
                blocks, labels = _regions_and_labels(row, model, config, derive_volume_labels)
                np.save(stem.with_suffix(".npy"), blocks)
                stem.with_suffix(".json").write_text(json.dumps([None if np.isnan(v) else v for v in labels]))
            blocks = np.load(stem.with_suffix(".npy"), mmap_mode="r")
            stored = json.loads(stem.with_suffix(".json").read_text())
            labels = np.array([math.nan if v is None else float(v) for v in stored])
        if not np.isfinite(labels).any():
            logger.warning("skipping %s: it has no label", row.image)
            continue
        cases.append(I3drCase(str(row.image), blocks, labels))
    return cases


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def train_i3dr(config: I3drTrainingConfig) -> TrainingResult:
    """Train model A or B of ``config`` and write ``i3dr_<model>.safetensors`` (module docstring).

    The file holds one part (``a.`` or ``b.`` keys) and its model card with the label scales;
    :meth:`models.i3dr.inference.I3dr.from_parts` joins an A file and a B file.  It is rewritten
    at every improvement of the validation loss, so an interrupted run leaves its best state.

    Raises
    ------
    ValueError
        For an invalid CSV, an empty split, a label without spread, unreadable images, or
        (model B) a row without a lobe mask.
    """
    rows = read_csv(config.csv_path)
    train_rows, validation_rows = split_rows(rows, config.validation_fraction, config.split_seed)
    logger.info("preparing %d training and %d validation CTs", len(train_rows), len(validation_rows))
    train, validation = (
        load_cases(
            part,
            config.model,
            config.preprocessing,
            derive_volume_labels=config.derive_volume_labels,
            cache_dir=config.cache_dir,
        )
        for part in (train_rows, validation_rows)
    )
    scales, counts = label_scales(np.stack([case.labels for case in train]))
    torch.manual_seed(config.recipe.seed)
    model = build_model_a(config.backbone) if config.model == "a" else build_model_b(config.backbone)
    if config.pretrained_backbone is not None:
        load_state(model.backbone, config.pretrained_backbone)
    config.output_dir.mkdir(parents=True, exist_ok=True)
    path = config.output_dir / f"i3dr_{config.model}.safetensors"
    provenance: dict[str, Any] = {
        "data": {
            "csv": str(config.csv_path),
            "csv_sha256": _sha256(config.csv_path),
            "train_cases": len(train),
            "validation_cases": len(validation),
            "label_counts_train": {name: int(c) for name, c in zip(OUTPUTS, counts, strict=True)},
        },
        "training": {
            **config.recipe.as_dict(),
            "pretrained_backbone": str(config.pretrained_backbone) if config.pretrained_backbone else None,
            "derive_volume_labels": config.derive_volume_labels,
            "device": config.device,
            "started_utc": datetime.now(UTC).isoformat(),
        },
    }
    scale_map = {name: float(s) for name, s in zip(OUTPUTS, scales, strict=True)}
    trained = [name for name, c in zip(OUTPUTS, counts, strict=True) if c > 0]

    def card_with(metrics: Mapping[str, Any]) -> dict[str, Any]:
        part = make_part_card(
            config.model,
            backbone=config.backbone,
            label_scales=scale_map,
            trained_outputs=trained,
            metrics=dict(metrics),
            **provenance,
        )
        return make_model_card(config.preprocessing, {config.model: part})

    def checkpoint(improved: RegionSumRegressor, epoch: int, loss: float) -> None:
        save_i3dr_file(path, {config.model: improved}, card_with({"epoch": epoch, "validation_loss_scaled_l1": loss}))

    result = fit(model, train, validation, scales, config.recipe, config.device, checkpoint)
    provenance["training"]["finished_utc"] = datetime.now(UTC).isoformat()
    card = card_with(result.as_dict())
    save_i3dr_file(path, {config.model: model}, card)
    return TrainingResult(
        path=path,
        model=config.model,
        fit=result,
        label_scales=scale_map,
        label_counts={name: int(c) for name, c in zip(OUTPUTS, counts, strict=True)},
        card=card,
    )
