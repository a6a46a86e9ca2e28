"""Code 1055's submission checkpoint: written here as the authors' trainer writes it (names and
shapes from the committed list, distinct random values), imported, and found in our folds."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
import torch

from models.published.code1055 import FORMAT, RESAVE_HINT, checkpoint_path, expected_state
from models.published.format import PublishedFormatError
from models.stoic.code1055 import StoicCode1055
from models.stoic.volumes import load_member_file

LAYOUT: dict[str, list[int]] = json.loads(
    (Path(__file__).parent / "formats" / "code1055_convnext_tiny.json").read_text()
)
#: What the trainer stores beside the weights, as plain data (its real config also holds a datetime).
_CONFIG = {"MODEL_NAME": "convnext", "modelconfig": {"loss_fn": "bce_sev", "size": "tiny", "in_chan": 1}}
_TRANSFORMS = [{"name": "LoadSimpleITKImage", "params": {"key": "img"}}]


def fold_state(seed: int) -> dict[str, torch.Tensor]:
    """One fold's EMA state dict in the authors' names, distinct random values."""
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.rand(shape, generator=generator) - 0.5 for key, shape in LAYOUT.items()}


def write_checkpoint(path: Path, folds: list[dict[str, torch.Tensor]], config: object = None) -> Path:
    """The aggregated checkpoint of C1055 ``Trainer.save_checkpoint``."""
    torch.save({"config": config or _CONFIG, "data_transforms": _TRANSFORMS, "models": folds}, path)
    return path


def test_list_is_our_network_with_the_authors_prefix() -> None:
    """187 tensors, 31 916 450 values, every name ``main_model.`` + ours, in the same order."""
    assert len(LAYOUT) == 187 and sum(torch.Size(s).numel() for s in LAYOUT.values()) == 31_916_450
    assert list(expected_state().items()) == list(LAYOUT.items())


def test_folds_land_in_order(tmp_path: Path) -> None:
    """Each fold of the ``models`` list becomes our fold of the same index, every tensor equal (read
    back from the member file; :func:`test_resaved_state_dicts_alone_are_accepted` loads a member)."""
    folds = [fold_state(seed) for seed in (1, 2)]
    file = write_checkpoint(tmp_path / "forwards-2022-05-02T09:00:00.pt", folds)
    assert FORMAT.detect(file) and FORMAT.sources(file) == [file]
    out = FORMAT.convert(file, tmp_path / "member.safetensors", {"format": FORMAT.name})
    states, card = load_member_file(out, StoicCode1055.NAME)
    assert card["config"]["folds"] == 2 and card["imported_from"] == {"format": FORMAT.name}
    for fold, state in zip(folds, states["fold"], strict=True):
        assert set(state) == {key.removeprefix("main_model.") for key in fold}
        for key, value in fold.items():
            assert torch.equal(state[key.removeprefix("main_model.")], value), key


def test_folder_gives_the_newest_checkpoint(tmp_path: Path) -> None:
    """In an artifact folder the submission's choice: newest by the name after the run prefix."""
    artifact = tmp_path / "inference" / "artifact"
    artifact.mkdir(parents=True)
    fold = [fold_state(3)]
    write_checkpoint(artifact / "forwards-2022-05-01T10:00:00.pt", fold)
    newest = write_checkpoint(artifact / "backwards-2022-05-02T08:00:00.pt", fold)
    assert checkpoint_path(tmp_path) == newest and FORMAT.detect(tmp_path)


def test_pickled_config_is_refused_with_the_resave_lines(tmp_path: Path) -> None:
    """The trainer's real config holds a datetime: refused unread, and told how to keep the weights alone."""
    file = write_checkpoint(tmp_path / "forwards-x.pt", [fold_state(4)], {"created": datetime.datetime(2022, 5, 1)})
    with pytest.raises(PublishedFormatError) as error:
        FORMAT.convert(file, tmp_path / "member.safetensors", {})
    assert RESAVE_HINT in str(error.value) and 'torch.save({"models": ckpt["models"]}' in RESAVE_HINT


def test_resaved_state_dicts_alone_are_accepted(tmp_path: Path) -> None:
    """``{"models": [...]}`` as the hint writes it converts like the original."""
    file = tmp_path / "code1055-models.pt"
    state = fold_state(5)
    torch.save({"models": [state]}, file)
    member = StoicCode1055.from_safetensors(FORMAT.convert(file, tmp_path / "m.safetensors", {}))
    assert member.config.folds == 1
    loaded = member.networks["fold"][0].state_dict()
    assert all(torch.equal(loaded[key.removeprefix("main_model.")], value) for key, value in state.items())


def test_wrong_contents_are_refused(tmp_path: Path) -> None:
    """A missing tensor is named; a file without ``models`` or of another team is not this format."""
    fold = fold_state(6)
    del fold["main_model.head.bias"]
    broken = write_checkpoint(tmp_path / "a-1.pt", [fold])
    with pytest.raises(PublishedFormatError, match=r"fold 0: 1 missing \(main_model.head.bias\)"):
        FORMAT.convert(broken, tmp_path / "m.safetensors", {})
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, other)
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint")
    assert not FORMAT.detect(other) and not FORMAT.detect(text) and not FORMAT.detect(tmp_path / "nothing")
    no_models = tmp_path / "b-1.pt"
    torch.save({"config": _CONFIG, "model": {"main_model.downsample_layers.0.0.weight": torch.zeros(1)}}, no_models)
    with pytest.raises(PublishedFormatError, match="no non-empty 'models' list"):
        FORMAT.convert(no_models, tmp_path / "m.safetensors", {})
