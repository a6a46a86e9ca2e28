"""models.qct.quality: the lung-mask gate passes sound masks and refuses broken ones, saying why."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from models.findings import Volume
from models.phantom import Phantom, chest_phantom
from models.qct.lungmask import segment_lungs
from models.qct.quality import assess_lung_mask
from models.volume import load_series


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return chest_phantom((40, 160, 160), (8.0, 2.4, 2.4))


def _crop(phantom: Phantom, keep: slice) -> tuple[Volume, np.ndarray, np.ndarray]:
    """The phantom's volume and truth masks with only the slices ``keep`` (field of view cut)."""
    hu = np.ascontiguousarray(phantom.hu[keep])
    first = keep.start or 0
    geometry = dataclasses.replace(
        phantom.geometry, origin=phantom.geometry.index_to_patient((first, 0.0, 0.0)), shape=hu.shape
    )
    volume = Volume(hu=hu, geometry=geometry, source_sop_instance_uids=("",) * hu.shape[0])
    return volume, phantom.left[keep], phantom.right[keep]


def test_truth_and_segmentation_of_a_phantom_pass(phantom: Phantom) -> None:
    volume = phantom.volume()
    assert assess_lung_mask(volume, phantom.left, phantom.right).plausible
    lungs = segment_lungs(volume)
    result = assess_lung_mask(volume, lungs.left, lungs.right)
    assert result.plausible and result.reasons == ()


def test_one_lung_removed(phantom: Phantom) -> None:
    result = assess_lung_mask(phantom.volume(), phantom.left, np.zeros_like(phantom.right))
    assert not result.plausible
    assert result.reasons == ("the right lung is missing from the mask",)


def test_one_lung_too_small(phantom: Phantom) -> None:
    right = phantom.right.copy()
    right[: right.shape[0] * 3 // 4] = False  # keep only the apex of the right lung
    result = assess_lung_mask(phantom.volume(), phantom.left, right)
    assert not result.plausible
    assert len(result.reasons) == 1
    assert result.reasons[0].startswith("the right lung is 0.")
    assert "% of the total lung volume (at least 15 % expected)" in result.reasons[0]


def test_cut_at_the_top(phantom: Phantom) -> None:
    # the phantom's slice index grows towards the head: dropping the last slices cuts the apex
    sections = (phantom.left | phantom.right).sum(axis=(1, 2))
    top = int(np.nonzero(sections >= 0.5 * sections.max())[0].max())
    volume, left, right = _crop(phantom, slice(0, top + 1))
    result = assess_lung_mask(volume, left, right)
    assert not result.plausible
    assert len(result.reasons) == 1
    assert result.reasons[0].startswith("the lungs are cut at the top (head end) of the field of view")
    # cutting only through the tip of the apex is no reason to refuse
    tip = int(np.nonzero(sections)[0].max())
    volume, left, right = _crop(phantom, slice(0, tip))
    assert assess_lung_mask(volume, left, right).plausible


def test_cut_at_the_top_of_a_feet_first_scan() -> None:
    phantom = chest_phantom((40, 160, 160), (8.0, 2.4, 2.4), patient_position="FFS")
    # feet first: slice index grows towards the feet, so the head end is the first slice
    sections = (phantom.left | phantom.right).sum(axis=(1, 2))
    top = int(np.nonzero(sections >= 0.5 * sections.max())[0].min())
    volume, left, right = _crop(phantom, slice(top, None))
    result = assess_lung_mask(volume, left, right)
    assert [reason.split(":")[0] for reason in result.reasons] == [
        "the lungs are cut at the top (head end) of the field of view"
    ]


def test_empty_mask(phantom: Phantom) -> None:
    empty = np.zeros_like(phantom.left)
    result = assess_lung_mask(phantom.volume(), empty, empty)
    assert not result.plausible
    assert result.reasons == ("the lung mask is empty: no lung was found in this series",)


def test_implausible_volume(phantom: Phantom) -> None:
    sz, sy, sx = phantom.geometry.spacing
    small = dataclasses.replace(phantom.geometry, spacing=(sz / 2.0, sy / 2.0, sx / 2.0))
    volume = Volume(hu=phantom.hu, geometry=small, source_sop_instance_uids=("",) * phantom.hu.shape[0])
    result = assess_lung_mask(volume, phantom.left, phantom.right)
    assert not result.plausible
    litres = (phantom.left | phantom.right).sum() * small.voxel_volume_ml / 1000.0
    assert result.reasons == (f"lung volume {litres:.1f} L is outside the plausible 1-10 L",)


def test_mask_leaving_the_body(phantom: Phantom) -> None:
    left = phantom.left.copy()
    left[:, :12, :] = True  # the air in front of the patient
    result = assess_lung_mask(phantom.volume(), left, phantom.right)
    assert not result.plausible
    assert any(reason.endswith("lies outside the patient's body") for reason in result.reasons)


def test_swapped_sides(phantom: Phantom) -> None:
    result = assess_lung_mask(phantom.volume(), phantom.right, phantom.left)
    assert result.reasons == ("the lung labelled left is not on the patient's left of the lung labelled right",)


def test_refuses_bad_arguments(phantom: Phantom) -> None:
    with pytest.raises(ValueError, match="boolean"):
        assess_lung_mask(phantom.volume(), phantom.left.astype(np.uint8), phantom.right)
    with pytest.raises(ValueError, match="shape"):
        assess_lung_mask(phantom.volume(), phantom.left[1:], phantom.right)


def test_abdomen_series_is_flagged(real_series: Callable[[str], list[Path]]) -> None:
    volume = load_series(real_series("abdomen-jpeg2000-3mm"))
    lungs = segment_lungs(volume)
    result = assess_lung_mask(volume, lungs.left, lungs.right)
    assert not result.plausible
    assert result.reasons == ("the lung mask is empty: no lung was found in this series",)
