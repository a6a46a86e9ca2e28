"""A baseline.pth written by the authors' training code imports onto BaselineI3D (models/published/baseline.py).

``formats/baseline_i3dpt.json`` is the authors' ``I3D(nr_outputs=2).state_dict()`` (BL
``algorithm/i3d/i3dpt.py``), names and shapes in their order: what fastai's
``SaveModelCallback`` writes to ``inference/artifact/baseline.pth`` and BL ``process.py`` loads.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.published.baseline import FORMAT, expected_checkpoint, our_names
from models.published.format import PublishedFormatError
from models.published.importer import import_published
from models.stoic.baseline import BaselineI3D, StoicBaseline
from models.weights import WeightStore
from tests.models.published.layouts import authors_names, distinct_state

SHAPES = authors_names("baseline_i3dpt")
LOGITS = ["conv3d_0c_1x1.conv3d.bias", "conv3d_0c_1x1.conv3d.weight"]


def test_mapping_covers_both_sides_with_equal_shapes() -> None:
    ours = {key: list(value.shape) for key, value in BaselineI3D().state_dict().items()}
    names = our_names()
    assert expected_checkpoint() == SHAPES
    assert set(SHAPES) == set(names) | set(LOGITS)
    assert sorted(names.values()) == sorted(ours)
    assert all(SHAPES[theirs] == ours[our_name] for theirs, our_name in names.items())
    assert names["linear.weight"] == "fc.weight" and names["linear.bias"] == "fc.bias"


def test_every_tensor_lands_in_its_place(tmp_path: Path) -> None:
    checkpoint = distinct_state(SHAPES, seed=1)
    root = tmp_path / "stoic2021-baseline-finalphase"
    (root / "inference" / "artifact").mkdir(parents=True)
    torch.save(checkpoint, root / "inference" / "artifact" / "baseline.pth")
    assert FORMAT.installable and FORMAT.model == StoicBaseline.NAME and FORMAT.published == ()
    assert FORMAT.detect(root) and FORMAT.sources(root) == [root / "inference/artifact/baseline.pth"]

    out = FORMAT.convert(root, tmp_path / "stoic_baseline.safetensors", {"files": ["baseline.pth"]})

    member = StoicBaseline.from_safetensors(out)
    state = member.networks["model"][0].state_dict()
    for theirs, ours in our_names().items():
        assert torch.equal(state[ours], checkpoint[theirs]), theirs
    assert member.card["imported_from"] == {"files": ["baseline.pth"]}
    assert member.card["dropped_tensors"] == LOGITS
    assert not member.card["demo"]


def test_a_file_of_another_name_is_read_when_given(tmp_path: Path) -> None:
    checkpoint = {f"module.{k}": v for k, v in distinct_state(SHAPES, seed=1).items()}
    file = tmp_path / "my_experiment.pth"
    torch.save(checkpoint, file)
    assert not FORMAT.detect(file)
    member = StoicBaseline.from_safetensors(FORMAT.convert(file, tmp_path / "out.safetensors", {}))
    assert torch.equal(member.networks["model"][0].state_dict()["fc.bias"], checkpoint["module.linear.bias"])


def test_other_layouts_are_refused(tmp_path: Path) -> None:
    checkpoint = distinct_state(SHAPES, seed=1)
    del checkpoint["linear.weight"]
    torch.save(checkpoint, tmp_path / "baseline.pth")
    with pytest.raises(PublishedFormatError, match=r"1 missing \(linear.weight\)"):
        FORMAT.convert(tmp_path, tmp_path / "out.safetensors", {})
    # fastai's learn.save default (with_opt=True) nests the model: not what BL process.py loads.
    torch.save({"model": distinct_state(SHAPES, seed=1), "opt": {}}, tmp_path / "baseline.pth")
    with pytest.raises(PublishedFormatError, match="346 missing"):
        FORMAT.convert(tmp_path, tmp_path / "out.safetensors", {})
    with pytest.raises(PublishedFormatError, match="no baseline.pth"):
        FORMAT.sources(tmp_path / "nothing")


def test_install_records_where_the_file_came_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("models.published.importer.published_formats", lambda: {FORMAT.name: FORMAT})
    checkpoint = distinct_state(SHAPES, seed=2)
    torch.save(checkpoint, tmp_path / "baseline.pth")
    result = import_published(tmp_path, WeightStore(tmp_path / "weights"))
    assert result.format is FORMAT
    origin = result.installed.origin
    assert origin is not None and origin["format"] == "stoic-baseline-checkpoint" and origin["licence"] == "MIT"
    assert [f["path"] for f in origin["files"]] == ["baseline.pth"]
    assert origin["published_bytes"] == "none"  # nothing of the baseline is published
    member = StoicBaseline.from_safetensors(result.installed.path)
    assert member.card["imported_from"]["files"] == origin["files"]
    assert torch.equal(member.networks["model"][0].state_dict()["fc.weight"], checkpoint["linear.weight"])
