"""Flying Bird's ten published folds import as they are, every tensor in its place.

``formats/flyingbird_resnet.json`` lists the parameter names and shapes of the authors' own
network, dumped from FB ``inference/classification/resnet.py`` (``resnet(in_channels=1,
out_channels=2, layers=[2, 2, 2, 2])``, the call of ``interface_severe.py``); the checkpoints are
written as FB ``training/train.py`` writes them: ``torch.save({'state_dict': ..., 'auc_severe':
numpy float})`` (the AUC from scikit-learn is a numpy scalar, which the import must read without
unpickling anything else).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from models.published.flyingbird import FORMAT, expected_state
from models.published.format import PublishedFormatError
from models.published.importer import import_published, resolve_format
from models.stoic.flyingbird import TASKS, StoicFlyingBird
from models.weights import WeightStore
from tests.models.published.layouts import authors_names, distinct_state

AUTHORS = authors_names("flyingbird_resnet")


def _write_folds(root: Path, prefix: str = "") -> dict[tuple[str, int], dict[str, Tensor]]:
    """The authors' folder ``root/weight_{task}/split{i}/{task}_best.pkl``; returns what was written."""
    written = {}
    for t, task in enumerate(TASKS):
        for split in range(5):
            state = distinct_state(AUTHORS, seed=10 * t + split)
            folder = root / f"weight_{task}" / f"split{split}"
            folder.mkdir(parents=True)
            saved = {f"{prefix}{k}": v for k, v in state.items()}
            torch.save({"state_dict": saved, f"auc_{task}": np.float64(0.8)}, folder / f"{task}_best.pkl")
            written[(task, split)] = state
    return written


@pytest.fixture(scope="module")
def authors_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[tuple[str, int], dict[str, Tensor]]]:
    root = tmp_path_factory.mktemp("flyingbird") / "inference" / "classification"
    return root, _write_folds(root)


def test_our_network_has_exactly_the_authors_names_and_shapes() -> None:
    assert expected_state() == AUTHORS


def test_every_tensor_arrives_in_its_fold(
    authors_folder: tuple[Path, dict[tuple[str, int], dict[str, Tensor]]], tmp_path: Path
) -> None:
    root, written = authors_folder
    repository_root = root.parent.parent
    assert resolve_format(repository_root) is FORMAT  # found from the repository root too
    result = import_published(repository_root, WeightStore(tmp_path / "weights"))
    member = StoicFlyingBird.from_safetensors(result.installed.path)
    for (task, split), state in written.items():
        loaded = member.networks[task][split].state_dict()
        assert set(loaded) == set(state)
        for key, value in state.items():
            assert torch.equal(loaded[key], value), (task, split, key)
    origin = result.installed.origin
    assert origin is not None and origin["format"] == "flyingbird-folds" and origin["licence"] == "MIT"
    assert [f["path"] for f in origin["files"]] == [
        f"inference/classification/weight_{task}/split{s}/{task}_best.pkl" for task in TASKS for s in range(5)
    ]
    assert origin["published_bytes"] == "none"  # random tensors are not the published files
    assert member.card["imported_from"]["files"] == origin["files"]
    assert member.card["demo"] is False


def test_a_dataparallel_prefix_is_removed(tmp_path: Path) -> None:
    written = _write_folds(tmp_path / "fb", prefix="module.")
    result = import_published(tmp_path / "fb", WeightStore(tmp_path / "weights"), format_name="flyingbird-folds")
    member = StoicFlyingBird.from_safetensors(result.installed.path)
    key = "layer1.0.conv1.weight"
    assert torch.equal(member.networks["severe"][3].state_dict()[key], written[("severe", 3)][key])


def _one_fold_changed(tmp_path: Path, change: str) -> Path:
    root = tmp_path / "fb"
    _write_folds(root)
    target = root / "weight_covid" / "split2" / "covid_best.pkl"
    checkpoint = torch.load(target, weights_only=False)
    state = checkpoint["state_dict"]
    if change == "missing":
        del state["layer2.0.bn1.running_mean"]
    elif change == "unexpected":
        state["layer9.weight"] = torch.zeros(1)
    elif change == "shape":
        state["fc_img_info.weight"] = torch.zeros(3, 3)
    elif change == "fold":
        target.unlink()
        return root
    torch.save(checkpoint, target)
    return root


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("missing", "1 missing (layer2.0.bn1.running_mean)"),
        ("unexpected", "1 unexpected (layer9.weight)"),
        ("shape", "fc_img_info.weight has shape [3, 3], expected [2, 3]"),
        ("fold", "missing weight_covid/split2/covid_best.pkl"),
    ],
)
def test_a_file_that_is_not_the_authors_network_is_refused_by_name(tmp_path: Path, change: str, said: str) -> None:
    root = _one_fold_changed(tmp_path, change)
    store = WeightStore(tmp_path / "weights")
    with pytest.raises(PublishedFormatError, match=re.escape(said)):
        import_published(root, store)
    assert store.get("stoic_flyingbird") is None  # nothing half-installed
