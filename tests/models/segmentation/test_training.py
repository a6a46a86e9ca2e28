"""The lobe training command on a tiny synthetic dataset written as NIfTI.

A small network configuration (features 8-16-32, two poolings) at 4 mm voxels learns the five
synthetic lobes within about ten short epochs on two CPU cores; the full-size network would need
hours, so this tests the recipe (data reading, sampling, loss, validation, early stopping,
checkpoint and model card), not the full-size network's accuracy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from models.findings import LOBE_NAMES
from models.phantom import write_ct_series
from models.segmentation.lobes import LobeSettings, build_lobe_network, segment_lobes
from models.segmentation.training import LobeTrainingConfig, TrainingError, read_case, read_pairs, train_lobes
from models.segmentation.weights import load_state
from models.weights import sha256_of

from .conftest import SyntheticChest

FEATURES = (8, 16, 32)
SETTINGS = LobeSettings(spacing_mm=(4.0, 4.0, 4.0), patch=(32, 32, 48), overlap=0.25)


def _write(array: np.ndarray, spacing: tuple[float, float, float], path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing[::-1])  # type: ignore[no-untyped-call]
    sitk.WriteImage(image, str(path))


@pytest.fixture
def dataset(tmp_path: Path, chest_factory: Callable[..., SyntheticChest]) -> Path:
    """Five synthetic cases (the fifth for validation) and their pairs CSV."""
    rows = ["image,label,split"]
    for seed in range(5):
        chest = chest_factory(seed)
        _write(chest.volume.hu, chest.volume.geometry.spacing, tmp_path / f"ct{seed}.nii.gz")
        # Labels on disk use other values than ours, mapped back through label_values.
        _write((chest.labels * 10).astype(np.uint8), chest.volume.geometry.spacing, tmp_path / f"lobes{seed}.nii.gz")
        rows.append(f"ct{seed}.nii.gz,lobes{seed}.nii.gz,{'validation' if seed == 4 else 'train'}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return tmp_path / "pairs.csv"


def test_training_learns_lobes_of_held_out_volumes(
    dataset: Path, tmp_path: Path, chest_factory: Callable[..., SyntheticChest]
) -> None:
    config = LobeTrainingConfig(
        pairs_csv=dataset,
        output_dir=tmp_path / "run",
        seed=0,
        features=FEATURES,
        settings=SETTINGS,
        label_values=(10, 20, 30, 40, 50),
        batch_size=2,
        iterations_per_epoch=10,
        max_epochs=8,
        patience=4,
        learning_rate=3e-3,
    )
    result = train_lobes(config)
    assert result.epochs_run == len(result.history) <= 8
    assert set(result.per_lobe_dice) == set(LOBE_NAMES)
    assert result.best_mean_dice >= 0.6

    card = json.loads(result.model_card_path.read_text(encoding="utf-8"))
    assert card["weights_sha256"] == sha256_of(result.weights_path)
    assert card["seed"] == 0 and card["validated"] is False
    assert card["data"]["validation"] == [str(dataset.parent / "ct4.nii.gz")]
    assert card["metrics"]["best_mean_dice"] == pytest.approx(result.best_mean_dice)
    assert card["architecture"]["features"] == list(FEATURES)
    assert card["code_version"]["pipeline_version"]

    network = build_lobe_network(FEATURES)
    load_state(network, result.weights_path)
    scores = []
    for seed in (100, 101):  # volumes never seen in training or validation
        chest = chest_factory(seed)
        masks = segment_lobes(chest.volume, chest.lung_left, chest.lung_right, network, settings=SETTINGS)
        for value, name in enumerate(LOBE_NAMES, start=1):
            truth = chest.labels == value
            scores.append(2 * np.count_nonzero(masks[name] & truth) / (masks[name].sum() + truth.sum()))
    assert float(np.mean(scores)) >= 0.7, scores


def test_pairs_csv_is_checked(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("ct,lobes\na,b\n", encoding="utf-8")
    with pytest.raises(TrainingError, match="columns 'image' and 'label'"):
        read_pairs(tmp_path / "bad.csv")
    (tmp_path / "missing.csv").write_text("image,label\nabsent.nii.gz,absent.nii.gz\nx,y\n", encoding="utf-8")
    with pytest.raises(TrainingError, match="does not exist"):
        read_pairs(tmp_path / "missing.csv")
    with pytest.raises(TrainingError, match="validation_fraction"):
        LobeTrainingConfig(pairs_csv=tmp_path / "x.csv", output_dir=tmp_path, validation_fraction=1.5)


def test_a_dicom_series_and_a_label_in_another_orientation_line_up(
    tmp_path: Path, chest_factory: Callable[..., SyntheticChest]
) -> None:
    chest = chest_factory(3, shape=(6, 24, 32))
    geometry = chest.volume.geometry
    write_ct_series(
        chest.volume.hu,
        geometry,
        tmp_path / "series",
        patient_id="SYN-3",
        patient_name="Synthetic^Chest",
        patient_age="050Y",
        patient_sex="O",
        slice_thickness=geometry.spacing[0],
    )
    # The label file runs right-to-left: its x axis points to the patient's right.
    label = sitk.GetImageFromArray(np.ascontiguousarray(chest.labels[:, :, ::-1]))
    label.SetSpacing(geometry.spacing[::-1])  # type: ignore[no-untyped-call]
    label.SetDirection((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))  # type: ignore[no-untyped-call]
    label.SetOrigin((geometry.origin[0] + (32 - 1) * geometry.spacing[2], *geometry.origin[1:]))  # type: ignore[no-untyped-call]
    sitk.WriteImage(label, str(tmp_path / "lobes.nii.gz"))

    hu, labels, spacing, direction = read_case(tmp_path / "series", tmp_path / "lobes.nii.gz")
    assert np.array_equal(labels, chest.labels)
    assert np.allclose(hu, chest.volume.hu, atol=1.0)  # stored as integers in the DICOM files
    assert spacing == pytest.approx(geometry.spacing) and direction == geometry.direction
