"""The Kinetics I3D file maps tensor by tensor onto our I3D backbone (models/published/kinetics_i3d.py).

The committed JSONs are the authors' names and shapes, dumped in their order from BL
``algorithm/i3d/i3dpt.py`` ``I3D(input_channels=3)`` without ``linear`` (what
``pre_trained=True`` loads) and from piergiaj/pytorch-i3d ``InceptionI3d(400, in_channels=3)``.
Each test writes a file in that layout with distinct values and checks where every value lands.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor

from models.card_file import read_card_file
from models.i3dr.model import BackboneSpec
from models.published.format import PublishedFormatError
from models.published.importer import import_published
from models.published.kinetics_i3d import (
    BACKBONE_CARD_FORMAT,
    FORMAT,
    I3DPT,
    PYTORCH_I3D,
    KineticsLayout,
    backbone_names,
    expected_state,
    kinetics_backbone_state,
    our_backbone_shapes,
)
from models.segmentation.weights import load_state
from models.stoic.baseline import BaselineI3D
from models.weights import WeightStore
from models.zoo import InceptionV1
from tests.models.published.layouts import authors_names, distinct_state

JSONS = {I3DPT.name: "i3d_kinetics_rgb_i3dpt", PYTORCH_I3D.name: "i3d_kinetics_rgb_pytorch_i3d"}
LAYOUTS = (I3DPT, PYTORCH_I3D)


def authors_state(layout: KineticsLayout, seed: int = 0) -> dict[str, Tensor]:
    """The authors' tensors of ``layout`` (committed JSON), with distinct random values."""
    return distinct_state(authors_names(JSONS[layout.name]), seed)


def write(state: dict[str, Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
def test_mapping_covers_both_sides_with_equal_shapes(layout: KineticsLayout) -> None:
    shapes = authors_names(JSONS[layout.name])
    names = backbone_names(layout)
    ours = our_backbone_shapes()
    assert expected_state(layout) == shapes
    assert set(shapes) == set(names) | set(layout.logits_shapes())
    assert sorted(names.values()) == sorted(ours)
    assert all(shapes[theirs] == ours[our_name] for theirs, our_name in names.items())


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
def test_every_tensor_lands_in_its_place(layout: KineticsLayout, tmp_path: Path) -> None:
    state = authors_state(layout)
    file = write(state, tmp_path / "model_rgb.pth")

    backbone_state = kinetics_backbone_state(file)

    names = backbone_names(layout)
    assert set(backbone_state) == set(our_backbone_shapes())
    for theirs, ours in names.items():
        assert torch.equal(backbone_state[ours], state[theirs]), theirs
    backbone = InceptionV1(3, 3, None)
    backbone.load_state_dict(backbone_state, strict=True)
    assert torch.equal(backbone.conv1.conv.weight, state[f"{layout.stem[0]}.conv3d.weight"])
    assert backbone.conv1.conv.weight.shape[1] == 3  # RGB kernel kept: the CT is copied into 3 channels


def test_file_without_batch_counters_gets_zeros(tmp_path: Path) -> None:
    state = {k: v for k, v in authors_state(I3DPT).items() if not k.endswith("num_batches_tracked")}
    file = write(state, tmp_path / "model_rgb.pth")
    state = kinetics_backbone_state(file)
    counters = [value for key, value in state.items() if key.endswith("num_batches_tracked")]
    assert len(counters) == 57 and all(int(value) == 0 for value in counters)


def test_data_parallel_prefix_and_half_precision_are_read(tmp_path: Path) -> None:
    state = authors_state(I3DPT)
    prefixed = {f"module.{k}": (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    loaded = kinetics_backbone_state(write(prefixed, tmp_path / "model_rgb.pth"))
    weight = loaded["inception5b.branch4.1.conv.weight"]
    assert weight.dtype == torch.float32
    assert torch.equal(weight, state["mixed_5c.branch_3.1.conv3d.weight"].half().float())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("mixed_4b.branch_1.1.conv3d.weight"), "1 missing (mixed_4b.branch_1.1.conv3d.weight)"),
        (lambda s: s.update({"extra.weight": torch.zeros(1)}), "1 unexpected (extra.weight)"),
        (lambda s: s.update({"conv3d_1a_7x7.conv3d.weight": torch.zeros(64, 1, 7, 7, 7)}), "shape [64, 1, 7, 7, 7]"),
        (lambda s: s.pop("conv3d_0c_1x1.conv3d.bias"), "missing (conv3d_0c_1x1.conv3d.bias)"),
        (lambda s: s.pop("mixed_3b.branch_0.batch3d.num_batches_tracked"), "missing"),
    ],
    ids=["missing", "unexpected", "shape", "logits", "some-counters"],
)
def test_incomplete_files_are_refused_naming_the_difference(
    change: Callable[[dict[str, Tensor]], object], message: str, tmp_path: Path
) -> None:
    state = authors_state(I3DPT)
    change(state)
    with pytest.raises(PublishedFormatError, match=re.escape(message)):
        kinetics_backbone_state(write(state, tmp_path / "model_rgb.pth"))


def test_other_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PublishedFormatError, match="not a Kinetics I3D state dict"):
        kinetics_backbone_state(write({"conv1.weight": torch.zeros(1)}, tmp_path / "model_rgb.pth"))
    with pytest.raises(PublishedFormatError, match="no model_rgb.pth"):
        kinetics_backbone_state(tmp_path / "empty")


def test_format_writes_an_init_file_for_i3dr_and_the_baseline(tmp_path: Path) -> None:
    state = authors_state(I3DPT)
    repository = tmp_path / "repo"
    folder = repository / "inference" / "algorithm" / "i3d"
    write(state, folder / "model_rgb.pth")
    assert not FORMAT.installable and FORMAT.model == "i3dr"
    assert FORMAT.detect(folder) and FORMAT.detect(folder / "model_rgb.pth")
    assert not FORMAT.detect(repository)  # a repository root belongs to its member's format
    assert FORMAT.sources(folder) == [folder / "model_rgb.pth"]
    assert {f.sha256 for f in FORMAT.published} == {"a63083d52a96302d64a44bebc9b6ec50f9a0d9306751f56f0312d8f14087d964"}

    out = FORMAT.convert(folder, tmp_path / "init" / "i3d_kinetics.safetensors", {"files": ["x"]})

    tensors, card = read_card_file(out, BACKBONE_CARD_FORMAT, "an I3D initialisation")
    assert card["layout"] == "i3dpt" and card["imported_from"] == {"files": ["x"]}
    assert card["dropped"] == ["conv3d_0c_1x1.conv3d.bias", "conv3d_0c_1x1.conv3d.weight"]
    i3dr_backbone = BackboneSpec()()
    load_state(i3dr_backbone, out)  # what `lungcds train i3dr` does with pretrained_backbone
    baseline = BaselineI3D()
    load_state(baseline.backbone, out)
    expected = state["mixed_4f.branch_2.0.batch3d.running_var"]
    assert torch.equal(tensors["inception4e.branch3.0.bn.running_var"], expected)
    assert torch.equal(baseline.state_dict()["backbone.inception4e.branch3.0.bn.running_var"], expected)


def test_installing_it_as_a_model_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("models.published.importer.published_formats", lambda: {FORMAT.name: FORMAT})
    file = write(authors_state(I3DPT), tmp_path / "model_rgb.pth")
    with pytest.raises(PublishedFormatError, match="--init"):
        import_published(file, WeightStore(tmp_path / "weights"), format_name=FORMAT.name)
