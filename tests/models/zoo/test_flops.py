"""The FLOP convention of Table 3.3 (models.zoo.flops) on networks small enough to count by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.zoo import count_flops, count_parameters


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 4, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm3d(4)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool3d(2)
        self.gap = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.relu(self.bn(self.conv(x))))
        x = F.relu(x)  # functional: not counted
        x = self.relu(x)  # a module called a second time: counted again
        out: Tensor = self.fc(self.gap(x).flatten(1))
        return out


def test_count_matches_the_hand_count() -> None:
    model = _Tiny()
    conv = 4 * 4**3 * (2 * 27) + 4 * 4**3  # MACs per output element, plus the bias
    bn = 2 * 4 * 4**3
    relu = 4 * 4**3 + 4 * 2**3
    pools = 4 * 4**3 + 4 * 2**3  # max pool and global average pool: their input elements
    linear = 3 * 4 + 3
    assert count_flops(model, (2, 4, 4, 4)) == 2 * (conv + bn + relu + pools + linear)


def test_counting_neither_moves_nor_runs_the_model() -> None:
    model = _Tiny().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_flops(model, (2, 4, 4, 4))
    assert model.training
    assert all(not p.is_meta for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # BN running statistics untouched


def test_batchnorm_can_be_left_out_of_the_parameter_count() -> None:
    model = _Tiny()
    assert count_parameters(model) == (2 * 4 * 27 + 4) + 2 * 4 + (4 * 3 + 3)
    assert count_parameters(model, include_batchnorm=False) == count_parameters(model) - 8


def test_bad_input_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="input_shape"):
        count_flops(_Tiny(), (2, 0, 4, 4))
