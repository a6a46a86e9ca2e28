"""The shared STOIC training CSV: validation, and cases loaded as a member receives them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.stoic.dataset import case_inputs, read_stoic_csv
from tests.models.corads.synthetic import write_nifti
from tests.models.stoic.synthetic import GEOMETRY, synthetic_case


def test_training_csv_is_validated(tmp_path: Path) -> None:
    (tmp_path / "ct.nii.gz").write_bytes(b"")
    header = "image,age,sex,covid,severe\n"
    for body, message in [
        ("ct.nii.gz,60,M,0,1\n", "severe without COVID-19"),
        ("ct.nii.gz,sixty,M,1,0\n", "not a number"),
        ("missing.nii.gz,60,M,1,0\n", "does not exist"),
        ("ct.nii.gz,60,M,2,0\n", "must be 0 or 1"),
        ("", "no cases"),
    ]:
        (tmp_path / "cases.csv").write_text(header + body)
        with pytest.raises(ValueError, match=message):
            read_stoic_csv(tmp_path / "cases.csv")
    (tmp_path / "cases.csv").write_text("image,covid\nct.nii.gz,1\n")
    with pytest.raises(ValueError, match="missing column"):
        read_stoic_csv(tmp_path / "cases.csv")
    (tmp_path / "cases.csv").write_text(header + "ct.nii.gz,,o,1,1\n")
    case = read_stoic_csv(tmp_path / "cases.csv")[0]
    assert (case.age_years, case.sex, case.lung_mask, case.lesion_mask) == (None, "O", None, None)
    (tmp_path / "cases.csv").write_text("image,covid,severe\nct.nii.gz,1,0\n")  # age and sex columns optional
    assert read_stoic_csv(tmp_path / "cases.csv")[0].age_years is None


def test_binary_and_r231_lung_masks_give_the_same_left_and_right_lungs(tmp_path: Path) -> None:
    """R231 labels (1 right, 2 left) are taken as they are; a binary mask is split by side, so
    that it does not become one "right" lung."""
    volume, right, left, lesions = synthetic_case(np.random.default_rng(0), covid=1, severe=1)
    write_nifti(volume.hu, GEOMETRY, tmp_path / "ct.nii.gz")
    write_nifti(right.astype(np.uint8) + 2 * left.astype(np.uint8), GEOMETRY, tmp_path / "r231.nii.gz")
    write_nifti((left | right).astype(np.uint8), GEOMETRY, tmp_path / "binary.nii.gz")
    write_nifti(lesions.astype(np.uint8), GEOMETRY, tmp_path / "lesions.nii.gz")
    (tmp_path / "cases.csv").write_text(
        "image,lung_mask,lesion_mask,age,sex,covid,severe\n"
        "ct.nii.gz,r231.nii.gz,lesions.nii.gz,61,f,1,1\n"
        "ct.nii.gz,binary.nii.gz,,,,1,0\n"
    )
    labelled, binary = (case_inputs(case) for case in read_stoic_csv(tmp_path / "cases.csv"))
    for inputs in (labelled, binary):
        assert np.array_equal(inputs.lung_left, left) and np.array_equal(inputs.lung_right, right)
        assert np.array_equal(inputs.lungs, left | right)
        assert np.allclose(inputs.volume.hu, volume.hu)
    assert labelled.lesions is not None and np.array_equal(labelled.lesions, lesions)
    assert (labelled.age_years, labelled.sex) == (61.0, "F")
    assert (binary.lesions, binary.age_years, binary.sex) == (None, None, None)
