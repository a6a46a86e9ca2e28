"""The deakin_team member: one 3D DenseNet-201 on the baseline's input (Table 4.1: AUC 0.741 / 0.820).

Thesis section 4.3.3 ("deakin_team"): "The input CT scans were resampled to an isotropic spacing
of 1.6 mm. A center crop of 240 x 240 x 240 voxels was extracted from the CT, using zero padding
when necessary. The voxel values were clipped between -1100 and 300 HU and rescaled to the range
[0,1]. [...] A 3D DenseNet-201 [...] Inference was performed by a forward pass through the trained
DenseNet-201 model."  The preprocessing text repeats the baseline's word for word, and the team's
Qualification algorithm is listed as grand-challenge "baseline-13", so we take it that the team
started from the baseline code: the input is built by the baseline's own transforms
(:func:`models.stoic.baseline.baseline_input`, including its last-240-slices crop and 0 HU
padding), and the outputs are the baseline's: two sigmoid units, [P(COVID-19), P(severe)] (both
were scored in Table 4.1).

No code was published (models spec section 4), so two choices are ours and are written in the
model card: the 3D DenseNet-201 layout is the thesis' own (chapter 3, :mod:`models.zoo.densenet`:
1x7x7 stem, 3x3x3 dense convolutions; 25.3 M parameters) with the single CT channel expanded to
its three input channels, as the baseline's I3D does; and age and sex are not used (the thesis
does not say that they were).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from models.device import inference_context, to_device
from models.stoic.baseline import baseline_input
from models.stoic.member import MemberInputs, MemberOutput
from models.stoic.volumes import MemberConfig, PreparedInput, VolumeMember, summary_row
from models.zoo import DenseNet

__all__ = ["DESCRIPTION", "NAME", "VERSION", "DeakinConfig", "DeakinDenseNet", "StoicDeakin", "summary"]

NAME = "stoic_deakin"
VERSION = "1.0.0"
DESCRIPTION = (
    "deakin_team: one 3D DenseNet-201 on the baseline's 1.6 mm, 240^3 input, sigmoid P(COVID-19) and "
    "P(severe) (thesis 4.3.3)"
)
#: DenseNet-201 blocks (Huang et al.; T§3.3.2).
_DENSENET201_BLOCKS: tuple[int, int, int, int] = (6, 12, 48, 32)


@dataclass(frozen=True)
class DeakinConfig(MemberConfig):
    """The baseline's input (T§4.3.3 repeats T§4.2.5) and a DenseNet-201.

    Attributes
    ----------
    spacing_mm, shape, window, pad_hu
        As :class:`models.stoic.baseline.BaselineConfig` (1.6 mm, 240^3, [-1100, 300], 0 HU).
    growth_rate, block_config, num_init_features, bn_size
        DenseNet-201 (32, (6, 12, 48, 32), 64, 4); smaller values for tests.
    """

    spacing_mm: float = 1.6
    shape: tuple[int, int, int] = (240, 240, 240)
    window: tuple[float, float] = (-1100.0, 300.0)
    pad_hu: float = 0.0
    growth_rate: int = 32
    block_config: tuple[int, ...] = _DENSENET201_BLOCKS
    num_init_features: int = 64
    bn_size: int = 4

    def __post_init__(self) -> None:
        if self.spacing_mm <= 0 or len(self.shape) != 3 or any(s < 2 or s % 2 for s in self.shape):
            raise ValueError(f"invalid deakin input: {self.spacing_mm} mm, shape {self.shape} (even sizes)")
        if not self.window[0] < self.window[1]:
            raise ValueError(f"window must be increasing, got {self.window}")


class DeakinDenseNet(nn.Module):
    """A 3D DenseNet (zoo layout) whose single-channel input is expanded to its channels.

    Parameters
    ----------
    in_channels : int
        Channels of the DenseNet (3, as the RGB-initialised baseline).
    out_channels : int
        Logits (2: COVID-19, severe).
    growth_rate, block_config, num_init_features, bn_size
        DenseNet sizes (:class:`models.zoo.DenseNet`).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 2,
        *,
        growth_rate: int = 32,
        block_config: Sequence[int] = _DENSENET201_BLOCKS,
        num_init_features: int = 64,
        bn_size: int = 4,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.network = DenseNet(
            3,
            in_channels,
            out_channels,
            growth_rate=growth_rate,
            block_config=block_config,
            num_init_features=num_init_features,
            bn_size=bn_size,
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, out_channels)`` of volumes ``(N, 1 or in_channels, D, H, W)``."""
        if x.shape[1] == 1 and self.in_channels > 1:
            x = x.expand(-1, self.in_channels, -1, -1, -1)
        out: Tensor = self.network(x)
        return out


class StoicDeakin(VolumeMember[DeakinConfig]):
    """deakin_team: sigmoid outputs of one DenseNet-201 forward pass (module docstring)."""

    NAME = NAME
    VERSION = VERSION
    DESCRIPTION = DESCRIPTION
    CONFIG = DeakinConfig

    @classmethod
    def network_groups(cls, config: DeakinConfig) -> dict[str, int]:
        """One network (T§4.3.3: "a forward pass through the trained DenseNet-201 model")."""
        return {"model": 1}

    @classmethod
    def build_network(cls, config: DeakinConfig, group: str) -> nn.Module:
        """A freshly initialised :class:`DeakinDenseNet`."""
        return DeakinDenseNet(
            growth_rate=config.growth_rate,
            block_config=config.block_config,
            num_init_features=config.num_init_features,
            bn_size=config.bn_size,
        )

    def preprocess(self, inputs: MemberInputs) -> PreparedInput:
        """The baseline's ``(1, 240, 240, 240)`` input in [0, 1]; no masks are used."""
        c = self.config
        return baseline_input(inputs, c.spacing_mm, c.shape, c.window, c.pad_hu)

    def predict(self, inputs: MemberInputs) -> MemberOutput:
        """Sigmoid of the two logits: index 0 COVID-19, index 1 severe; one forward pass."""
        image = to_device(self.preprocess(inputs).tensors["image"].unsqueeze(0), self.device)
        with inference_context(self.device, bf16=False):
            p_covid, p_severe = (float(v) for v in torch.sigmoid(self.networks["model"][0](image).float())[0])
        notes = (
            *self.weight_notes(),
            "age and sex not used: the thesis does not say deakin_team used them (4.3.3)",
            "architecture layout and output definition assumed (no deakin_team code was published)",
        )
        return MemberOutput(p_covid=p_covid, p_severe=p_severe, notes=notes, details={})


def summary() -> list[dict[str, Any]]:
    """Parameters and FLOPs of the deakin DenseNet-201 at 1 x 240^3 (meta device)."""
    with torch.device("meta"):
        network = DeakinDenseNet()
    return [
        summary_row(
            "stoic_deakin_densenet201_3d",
            network,
            (1, 240, 240, 240),
            forward_passes=1,
            source="thesis 4.3.3 (no code); zoo densenet201_3d layout with 2 outputs (ours)",
        )
    ]
