"""Training (thesis 2.4.5): Algorithm 1's gradients, missing-label masking, label scaling, the CSV path."""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from safetensors import safe_open
from torch import Tensor, nn

from models.corads.augmentation import AugmentationConfig
from models.findings import LOBE_NAMES, Geometry
from models.i3dr.inference import I3dr
from models.i3dr.lobar_benchmark import SyntheticCase, synthetic_case
from models.i3dr.model import OUTPUTS, RegionSumRegressor, SmallBackbone3d, build_model_a, build_model_b
from models.i3dr.training import (
    I3drTrainingConfig,
    TrainingRecipe,
    algorithm1_backward,
    label_scales,
    load_cases,
    masked_l1_loss,
    read_csv,
    train_i3dr,
)
from models.qct.measurements import measure_region
from tests.models.i3dr.conftest import SMALL_BACKBONE, SMALL_INPUT


class _NormalisedBackbone(nn.Module):
    """A convolution, BatchNorm and dropout: the layers that make Algorithm 1 delicate."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 6, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm3d(6)
        self.dropout = nn.Dropout(0.3)
        self.num_features = 6

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.dropout(torch.relu(self.norm(self.conv(x)))).mean(dim=(2, 3, 4))
        return out


def _targets() -> Tensor:
    targets = torch.randn(3, len(OUTPUTS), dtype=torch.float64)
    targets[0, 3] = targets[1, :2] = targets[2, 6] = float("nan")
    return targets


def _gradients(model: nn.Module) -> list[Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


@pytest.mark.parametrize("kind", ["no_norm", "batchnorm_eval", "batchnorm_train"])
def test_algorithm1_gives_the_gradients_of_plain_backpropagation(kind: str) -> None:
    """Algorithm 1 equals back-propagation through all five lobes of every scan.

    Without normalisation, or with BatchNorm in eval mode, a lobe's features do not depend on
    its batch mates, so the reference is one plain pass over all 15 lobe images.  With BatchNorm
    in training mode, the batch statistics are those of each virtual mini-batch of two images in
    both passes of Algorithm 1, so the reference computes the features per mini-batch; dropout
    draws the same masks in both passes, and the running statistics are updated once.
    """
    torch.manual_seed(0)
    backbone: nn.Module = SmallBackbone3d(3, (4, 6)) if kind == "no_norm" else _NormalisedBackbone()
    model = RegionSumRegressor(backbone, 6, len(OUTPUTS), len(LOBE_NAMES)).double()
    model.train(kind != "batchnorm_eval")
    with torch.no_grad():
        model.head.bias.uniform_(-1.0, 1.0)
    inputs = torch.rand(3, len(LOBE_NAMES), 3, 8, 8, 8, dtype=torch.float64)
    targets = _targets()
    checkpointed, plain = copy.deepcopy(model), copy.deepcopy(model)

    torch.manual_seed(7)
    loss = algorithm1_backward(checkpointed, inputs, targets, virtual_batch_size=2)
    torch.manual_seed(7)
    if kind == "batchnorm_train":
        images = inputs.flatten(0, 1)
        features = torch.cat([plain.backbone(images[i : i + 2]) for i in range(0, len(images), 2)])
        reference = masked_l1_loss(plain.head(features.reshape(3, len(LOBE_NAMES), -1).sum(dim=1)), targets)
    else:
        reference = masked_l1_loss(plain(inputs), targets)
    torch.autograd.backward(reference)

    assert float(loss) == pytest.approx(float(reference.detach()), rel=1e-12)
    for (name, _), ours, theirs in zip(
        model.named_parameters(), _gradients(checkpointed), _gradients(plain), strict=True
    ):
        assert theirs.abs().max() > 0, name  # every parameter gets a gradient
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12, msg=name)
    for (name, ours), theirs in zip(checkpointed.named_buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(ours, theirs, msg=name)  # BN statistics updated once, as plain training does


def test_missing_labels_contribute_no_gradient() -> None:
    torch.manual_seed(1)
    model = build_model_a(SMALL_BACKBONE).double()
    inputs = torch.rand(3, 1, 3, 8, 8, 8, dtype=torch.float64)
    targets = _targets()
    targets[:, 4] = float("nan")  # output 4 is missing for every scan
    loss = masked_l1_loss(model(inputs), targets)
    torch.autograd.backward(loss)
    assert model.head.weight.grad is not None and model.head.bias.grad is not None
    assert not model.head.weight.grad[4].any() and model.head.bias.grad[4] == 0
    assert model.head.weight.grad[5].abs().sum() > 0
    # The loss is the mean over the available labels only.
    with torch.no_grad():
        predicted = model(inputs)
    available = torch.isfinite(targets)
    expected = (predicted - targets)[available].abs().mean()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-12)
    # Whatever stands in a missing cell, the gradient is the same.
    other = targets.clone()
    other[~available] = 1e6
    model.zero_grad()
    torch.autograd.backward(masked_l1_loss(model(inputs), torch.where(available, other, targets)))
    first = model.head.weight.grad.clone()
    model.zero_grad()
    torch.autograd.backward(masked_l1_loss(model(inputs), targets))
    torch.testing.assert_close(model.head.weight.grad, first)
    # Model B through Algorithm 1 masks the same way.
    model_b = build_model_b(SMALL_BACKBONE).double()
    algorithm1_backward(model_b, torch.rand(3, 5, 3, 8, 8, 8, dtype=torch.float64), targets)
    assert model_b.head.weight.grad is not None and not model_b.head.weight.grad[4].any()


def test_label_scales_are_training_set_standard_deviations() -> None:
    labels = np.full((5, len(OUTPUTS)), np.nan)
    labels[:, 0] = [4.0, 5.0, 6.0, 7.0, 8.0]
    labels[:3, 6] = [10.0, 20.0, 30.0]
    scales, counts = label_scales(labels)
    assert scales[0] == pytest.approx(np.sqrt(2.0))  # population SD of 4..8
    assert scales[6] == pytest.approx(np.std([10.0, 20.0, 30.0]))  # only the CTs that have the label
    assert scales[1] == 1.0 and counts.tolist() == [5, 0, 0, 0, 0, 0, 3]
    labels[0, 1] = 3.0
    with pytest.raises(ValueError, match="fpv_l"):
        label_scales(labels)


def _write(array: np.ndarray, geometry: Geometry, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(reversed(geometry.spacing)))  # type: ignore[no-untyped-call]
    image.SetOrigin(geometry.origin)  # type: ignore[no-untyped-call]
    image.SetDirection(tuple(v for row in geometry.direction for v in row))  # type: ignore[no-untyped-call]
    sitk.WriteImage(image, str(path))


def _write_cases(folder: Path, cases: list[tuple[SyntheticCase, str]]) -> Path:
    """NIfTI cases and a CSV; the first training case has no PV/FPV (to be derived), all have FEV1."""
    path = folder / "cases.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "lung_mask", "lobe_mask", "split", "pv_l", "fpv_l", "fev1_pre_l"])
        for index, (case, split) in enumerate(cases):
            lobes = np.zeros(case.volume.hu.shape, dtype=np.uint8)
            for value, name in enumerate(LOBE_NAMES, start=1):
                lobes[case.lobes[name]] = value
            _write(case.volume.hu, case.volume.geometry, folder / f"ct{index}.nii.gz")
            _write(case.lungs.astype(np.uint8), case.volume.geometry, folder / f"lungs{index}.nii.gz")
            _write(lobes, case.volume.geometry, folder / f"lobes{index}.nii.gz")
            pv, fpv = ("", "") if index == 0 else case.patient
            writer.writerow(
                [f"ct{index}.nii.gz", f"lungs{index}.nii.gz", f"lobes{index}.nii.gz", split, pv, fpv, 2.0 + index]
            )
    return path


def test_train_i3dr_from_csv_writes_one_part_with_its_label_scales(tmp_path: Path) -> None:
    cases = [(synthetic_case(100 + i), "train" if i < 4 else "validation") for i in range(6)]
    csv_path = _write_cases(tmp_path, cases)
    rows = read_csv(csv_path)
    assert np.isnan(rows[0].labels[:2]).all() and np.isnan(rows[0].labels[3:]).all()

    # A missing PV and FPV is measured from the lung mask (T2.4.3).
    (derived,) = load_cases(rows[:1], "a", SMALL_INPUT)
    first = cases[0][0]
    measured = measure_region(first.volume.hu, first.lungs, first.volume.geometry, "lungs")
    assert measured.fpv_ml is not None
    assert derived.labels[:3].tolist() == pytest.approx([measured.volume_ml / 1000, measured.fpv_ml / 1000, 2.0])
    assert derived.blocks.shape == (1, 32, 32, 32) and derived.blocks.dtype == np.float16

    recipe = TrainingRecipe(
        max_epochs=2,
        learning_rate=1e-3,
        augmentation=AugmentationConfig(
            zoom=0.0, translation_voxels=(0.0, 2.0, 2.0), elastic_sd_voxels=0.5, elastic_control_points=(3, 3, 3)
        ),
    )
    results = {}
    parts: tuple[Literal["a", "b"], ...] = ("a", "b")
    for part in parts:
        config = I3drTrainingConfig(
            csv_path=csv_path,
            output_dir=tmp_path / "run",
            model=part,
            backbone=SMALL_BACKBONE,
            preprocessing=SMALL_INPUT,
            recipe=recipe,
            cache_dir=tmp_path / "cache",
        )
        results[part] = train_i3dr(config)
    result = results["b"]
    with safe_open(str(result.path), framework="pt") as handle:
        assert {key.split(".", 1)[0] for key in handle.keys()} == {"b"}
    train_labels = np.array([[*case.patient, 2.0 + i] for i, (case, _) in enumerate(cases[:4])])
    train_labels[0, :2] = derived.labels[:2]
    part_card = result.card["parts"]["b"]
    assert part_card["label_scales"]["pv_l"] == pytest.approx(np.std(train_labels[:, 0]))
    assert part_card["label_scales"]["fev1_pre_l"] == pytest.approx(np.std(train_labels[:, 2]))
    assert part_card["label_scales"]["dlco"] == 1.0
    assert part_card["trained_outputs"] == ["pv_l", "fpv_l", "fev1_pre_l"]
    assert result.label_counts["pv_l"] == 4 and result.label_counts["dlco"] == 0
    assert part_card["training"]["virtual_batch_size"] == 2 and part_card["training"]["weight_decay"] == 1e-2
    assert len(result.fit.history) == 2 and len(list((tmp_path / "cache").glob("*.npy"))) == 12

    model = I3dr.from_parts(results["a"].path, result.path)
    case = cases[5][0]
    prediction = model.predict(case.volume, case.lungs, case.lobes)
    assert set(prediction.to_result().patient) == {"pv_l", "fpv_l", "fev1_pre_l"}  # untrained outputs withheld
    assert "not trained" in prediction.not_rescaled["dlco"]
    found = prediction.to_result()
    assert set(found.lobes["LUL"]) == set(found.lobes_unscaled["RML"]) == {"pv_l", "fpv_l", "fev1_pre_l"}
    assert any(note.startswith("not estimated: fev1_post_l") for note in found.notes)


def test_csv_is_validated(tmp_path: Path) -> None:
    (tmp_path / "ct.nii.gz").write_bytes(b"")
    bad = tmp_path / "bad.csv"
    bad.write_text("image,pv_l\nct.nii.gz,lots\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a number"):
        read_csv(bad)
    bad.write_text("image,dlco\nct.nii.gz,nan\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not finite"):
        read_csv(bad)
    bad.write_text("image,split\nct.nii.gz,test\n", encoding="utf-8")
    with pytest.raises(ValueError, match="split"):
        read_csv(bad)
    bad.write_text("image\nmissing.nii.gz\n", encoding="utf-8")
    with pytest.raises(ValueError, match="does not exist"):
        read_csv(bad)
