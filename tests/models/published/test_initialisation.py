"""``--init``: the authors' published files become what each training recipe loads, or are refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from models.i3dr.model import build_model_a, build_model_b
from models.published.format import PublishedFormatError
from models.published.initialisation import initialisation
from models.published.torchvision_densenet import expected_state, imagenet_state
from models.segmentation.weights import load_state
from models.stoic.baseline import BaselineI3D
from models.stoic.flyingbird import StoicFlyingBird
from server.cli.main import app
from tests.models.published.layouts import authors_names, distinct_state
from tests.models.published.test_flyingbird import _write_folds


@pytest.fixture(scope="module")
def model_rgb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A Kinetics I3D file with hassony2's names (the STOIC2021 teams' model_rgb.pth), random values."""
    state = distinct_state(authors_names("i3d_kinetics_rgb_i3dpt"), seed=4)
    path = tmp_path_factory.mktemp("i3d") / "model_rgb.pth"
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("recipe", ["i3dr", "stoic_baseline"])
def test_kinetics_weights_start_the_i3d_recipes(
    model_rgb: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path, recipe: str
) -> None:
    path, state = model_rgb
    init = initialisation(path, recipe, tmp_path / "init")
    assert init.kind == "i3d_backbone" and init.record is not None
    assert init.record["files"][0]["sha256"] and init.record["format"] == "kinetics-i3d-rgb"
    backbones = [build_model_a().backbone, build_model_b().backbone] if recipe == "i3dr" else [BaselineI3D().backbone]
    for backbone in backbones:  # each recipe's own loader: exact keys and shapes
        load_state(backbone, init.path)
        assert torch.equal(backbone.conv1.conv.weight, state["conv3d_1a_7x7.conv3d.weight"])


def test_a_file_for_another_recipe_is_refused(model_rgb: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path) -> None:
    with pytest.raises(PublishedFormatError, match="initialises i3dr, stoic_baseline, not corads"):
        initialisation(model_rgb[0], "corads", tmp_path / "init")


def test_a_members_published_checkpoint_starts_its_own_recipe(tmp_path: Path) -> None:
    written = _write_folds(tmp_path / "fb")
    init = initialisation(tmp_path / "fb", "stoic_flyingbird", tmp_path / "init")
    assert init.kind == "member"
    member = StoicFlyingBird.from_safetensors(init.path)
    key = "layer3.1.conv2.weight"
    assert torch.equal(member.networks["covid"][4].state_dict()[key], written[("covid", 4)][key])


def test_a_lungcds_file_is_given_to_the_recipe_as_it_is(tmp_path: Path) -> None:
    own = tmp_path / "backbone.safetensors"
    own.write_bytes(b"checked by the recipe when it loads it")
    init = initialisation(own, "i3dr", tmp_path / "init")
    assert init.kind == "as_given" and init.path == own and init.record is None


def _torchvision_2017_keys(names: dict[str, list[int]]) -> dict[str, list[int]]:
    """torchvision's pre-0.3 DenseNet key pattern (``denselayer1.norm.1.weight``), as its ImageNet file has."""
    pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))([12])\.(.*)$")
    return {pattern.sub(r"\1.\2.\3", key): shape for key, shape in names.items()}


def test_torchvisions_imagenet_densenet_is_renamed_and_checked(tmp_path: Path) -> None:
    old = distinct_state(_torchvision_2017_keys(expected_state()), seed=9)
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    path = tmp_path / "densenet201-c1103571.pth"
    torch.save(old, path)
    state = imagenet_state(path)
    assert torch.equal(
        state["features.denseblock1.denselayer1.norm1.weight"], old["features.denseblock1.denselayer1.norm.1.weight"]
    )
    assert set(state) == set(expected_state())
    # These random bytes are not torchvision's file: their SHA-256 lacks the prefix in its name.
    with pytest.raises(PublishedFormatError, match="does not start with c1103571"):
        initialisation(path, "corads", tmp_path / "init")


def test_train_refuses_an_init_for_another_member(
    model_rgb: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    csv = tmp_path / "cases.csv"
    csv.write_text("image,covid,severe\n")
    result = CliRunner().invoke(
        app,
        [
            "train",
            "stoic",
            str(csv),
            "--member",
            "stoic_code1055",
            "--out",
            str(tmp_path / "out"),
            "--init",
            str(model_rgb[0]),
        ],
    )
    assert result.exit_code == 2 and "not stoic_code1055" in result.output
