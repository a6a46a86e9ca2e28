"""The CO-RADS ensemble (thesis 3.3.6): averaging, demo weights, the safetensors file, prediction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from models.corads.ensemble import CARD_FORMAT, CoradsEnsemble, make_model_card
from models.corads.preprocessing import PreprocessingConfig
from tests.models.corads.conftest import SMALL_DENSENET, SMALL_INPUT
from tests.models.corads.synthetic import synthetic_case


class _Constant(nn.Module):
    """A stand-in member whose logit is fixed."""

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.tensor(logit))

    def forward(self, x: Tensor) -> Tensor:
        return self.logit.expand(x.shape[0], 1)


def _logit(p: float) -> float:
    return float(torch.logit(torch.tensor(p, dtype=torch.float64)))


def _small_demo(seed: int, members: int = 2) -> CoradsEnsemble:
    return CoradsEnsemble.demo(seed, members, architecture_overrides=SMALL_DENSENET, preprocessing=SMALL_INPUT)


def test_members_are_averaged_before_rounding() -> None:
    card = make_model_card(architecture="densenet201_3d", members=3, preprocessing=SMALL_INPUT)
    ensemble = CoradsEnsemble([_Constant(_logit(p)) for p in (0.15, 0.15, 0.0001)], card)
    (result,) = ensemble.predict_inputs(torch.zeros(1, *SMALL_INPUT.input_shape))
    assert [round(p, 4) for p in result.members] == [0.15, 0.15, 0.0001]
    assert result.score == pytest.approx((0.15 + 0.15 + 0.0001) / 3, abs=1e-6)
    assert result.category == 1  # two of three members alone would say CO-RADS 2


def test_demo_weights_are_deterministic(tmp_path: Path) -> None:
    x = torch.rand(2, *SMALL_INPUT.input_shape)
    first = _small_demo(7).member_probabilities(x)
    assert torch.equal(first, _small_demo(7).member_probabilities(x))
    assert not torch.equal(first, _small_demo(8).member_probabilities(x))
    assert first.shape == (2, 2)
    assert not torch.equal(first[:, 0], first[:, 1])  # members differ


def test_safetensors_round_trip_with_model_card(tmp_path: Path) -> None:
    ensemble = _small_demo(3, members=3)
    path = ensemble.save(tmp_path / "corads.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        card = json.loads(handle.metadata()["model_card"])
        keys = list(handle.keys())
    assert card["format"] == CARD_FORMAT and card["demo"] is True and card["members"] == 3
    assert card["preprocessing"] == SMALL_INPUT.as_dict()
    assert {key.split(".", 1)[0] for key in keys} == {"member0", "member1", "member2"}
    loaded = CoradsEnsemble.from_safetensors(path)
    x = torch.rand(1, *SMALL_INPUT.input_shape)
    assert torch.equal(loaded.member_probabilities(x), ensemble.member_probabilities(x))
    assert loaded.card == ensemble.card
    assert loaded.preprocessing == SMALL_INPUT


def test_broken_files_are_refused(tmp_path: Path) -> None:
    path = _small_demo(3).save(tmp_path / "good.safetensors")
    tensors = load_file(str(path))
    save_file(tensors, str(tmp_path / "no_card.safetensors"))
    with pytest.raises(ValueError, match="model_card"):
        CoradsEnsemble.from_safetensors(tmp_path / "no_card.safetensors")
    card = json.loads(safe_open(str(path), framework="pt").metadata()["model_card"])  # type: ignore[no-untyped-call]
    only_one = {k: v for k, v in tensors.items() if k.startswith("member0.")}
    save_file(only_one, str(tmp_path / "short.safetensors"), metadata={"model_card": json.dumps(card)})
    with pytest.raises(ValueError, match="2 members"):
        CoradsEnsemble.from_safetensors(tmp_path / "short.safetensors")


def test_predict_on_a_series() -> None:
    ensemble = _small_demo(5, members=3)
    volume, lungs, lesions = synthetic_case(np.random.default_rng(0), corads=3)
    result = ensemble.predict(volume, lungs, lesions.astype(np.float32))
    assert len(result.members) == 3
    assert result.score == pytest.approx(sum(result.members) / 3)
    assert result.category == int(4 * result.score + 0.5) + 1
    with pytest.raises(ValueError, match="expected inputs"):
        ensemble.member_probabilities(torch.zeros(1, 3, 8, 8, 8))


def test_deployed_configuration() -> None:
    card = make_model_card(architecture="densenet201_3d", members=10, preprocessing=PreprocessingConfig())
    assert card["preprocessing"]["slices"] == 128 and card["preprocessing"]["crop_size"] == [240, 240]
    ensemble = CoradsEnsemble.demo(0, members=1)  # built, not run
    assert ensemble.preprocessing.input_shape == (3, 128, 240, 240)
    assert sum(p.numel() for p in ensemble.members[0].parameters()) == 25_320_193
