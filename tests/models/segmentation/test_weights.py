"""Weights: strict safetensors loading with named mismatches, and deterministic demo weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from models.segmentation.nnunet import GenericUNet
from models.segmentation.resnet_unet import R3D18Encoder
from models.segmentation.weights import StateMismatchError, demo_state, load_state, save_state


def _small() -> GenericUNet:
    return GenericUNet(3, 1, 3, (4, 8, 16), ((2, 2, 2), (2, 2, 2)))


def test_saved_weights_load_back_and_give_the_same_output(tmp_path: Path) -> None:
    source, target = _small(), _small()
    demo_state(source, seed=3)
    save_state(source, tmp_path / "w.safetensors", {"architecture": "GenericUNet"})
    load_state(target, tmp_path / "w.safetensors")
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        assert torch.equal(source.eval()(x), target.eval()(x))


def test_loader_names_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = {k: v.clone() for k, v in _small().state_dict().items()}
    del state["tu.0.weight"]
    state["head.extra"] = torch.zeros(2)
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(StateMismatchError, match=r"missing: tu\.0\.weight.*unexpected: head\.extra") as info:
        load_state(_small(), tmp_path / "w.safetensors")
    assert info.value.missing == ["tu.0.weight"] and info.value.unexpected == ["head.extra"]


def test_loader_names_keys_of_the_wrong_shape(tmp_path: Path) -> None:
    other = GenericUNet(3, 1, 5, (4, 8, 16), ((2, 2, 2), (2, 2, 2)))  # 5 classes instead of 3
    save_state(other, tmp_path / "w.safetensors")
    with pytest.raises(StateMismatchError, match=r"wrong shape: seg_outputs\.0\.weight \(5, 8, 1, 1, 1\)"):
        load_state(_small(), tmp_path / "w.safetensors")


def test_loader_refuses_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_state(_small(), tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_state(_small(), tmp_path / "junk.safetensors")


def test_demo_weights_are_deterministic_per_seed() -> None:
    first, second, third = _small(), _small(), _small()
    demo_state(first, seed=7)
    demo_state(second, seed=7)
    demo_state(third, seed=8)
    a, b, c = first.state_dict(), second.state_dict(), third.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(
        a["conv_blocks_context.0.blocks.0.conv.weight"], c["conv_blocks_context.0.blocks.0.conv.weight"]
    )
    assert torch.equal(a["conv_blocks_context.0.blocks.0.instnorm.weight"], torch.ones(4))


def test_demo_weights_set_batchnorm_statistics_to_the_identity() -> None:
    encoder = R3D18Encoder()
    demo_state(encoder, seed=0)
    state = encoder.state_dict()
    assert torch.equal(state["stem.1.running_var"], torch.ones(64))
    assert torch.equal(state["stem.1.running_mean"], torch.zeros(64))
    assert int(state["stem.1.num_batches_tracked"]) == 0
    std = float(state["layer4.1.conv2.0.weight"].std())
    assert std == pytest.approx((2.0 / (1 + 1e-4)) ** 0.5 / (512 * 27) ** 0.5, rel=0.01)  # He-normal
