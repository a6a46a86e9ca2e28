"""MobileNetV3-Large (Howard et al. 2019) as torchvision builds it, for hal9000's slice encoders.

hal9000 (thesis section 4.3.3; HAL ``cnn_baseline/trainers/example_model.py``) takes
``torchvision.models.mobilenet_v3_large`` and replaces its classifier by ``nn.Identity``, so a
slice becomes the 960 globally pooled features of the last 1x1 convolution.  This module
rebuilds that network with torchvision's module names (``features.{i}.block.{j}``,
``...fc1``/``fc2`` of the squeeze-excitation, ``classifier.0``/``classifier.3``), so ImageNet and
hal9000 state dicts load unchanged, and with torchvision's choices that change numbers:
BatchNorm eps 0.001, squeeze width ``make_divisible(expanded / 4, 8)`` with ReLU and
hard-sigmoid, "same" padding ``(k - 1) // 2``, residuals only where stride 1 keeps the width.

``num_classes=None`` builds the backbone (``forward`` returns the pooled features) as hal9000
uses it; an integer adds torchvision's head (Linear 960 -> 1280, hard-swish, dropout, Linear).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

__all__ = ["MOBILENET_V3_LARGE", "BlockSetting", "MobileNetV3Large", "make_divisible"]


class BlockSetting(NamedTuple):
    """One inverted-residual block of Table 1 of the paper (torchvision ``bneck_conf``)."""

    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    squeeze_excite: bool
    hard_swish: bool
    stride: int


#: The 15 blocks of MobileNetV3-Large (torchvision ``_mobilenet_v3_conf("mobilenet_v3_large")``).
MOBILENET_V3_LARGE: tuple[BlockSetting, ...] = (
    BlockSetting(16, 3, 16, 16, False, False, 1),
    BlockSetting(16, 3, 64, 24, False, False, 2),
    BlockSetting(24, 3, 72, 24, False, False, 1),
    BlockSetting(24, 5, 72, 40, True, False, 2),
    BlockSetting(40, 5, 120, 40, True, False, 1),
    BlockSetting(40, 5, 120, 40, True, False, 1),
    BlockSetting(40, 3, 240, 80, False, True, 2),
    BlockSetting(80, 3, 200, 80, False, True, 1),
    BlockSetting(80, 3, 184, 80, False, True, 1),
    BlockSetting(80, 3, 184, 80, False, True, 1),
    BlockSetting(80, 3, 480, 112, True, True, 1),
    BlockSetting(112, 3, 672, 112, True, True, 1),
    BlockSetting(112, 5, 672, 160, True, True, 2),
    BlockSetting(160, 5, 960, 160, True, True, 1),
    BlockSetting(160, 5, 960, 160, True, True, 1),
)
_STEM_CHANNELS = 16
_LAST_CHANNEL = 1280
_BN_EPS = 0.001
_BN_MOMENTUM = 0.01


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, never going more than 10 % below it
    (torchvision ``_make_divisible``, from the TensorFlow reference)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class _ConvNormActivation(nn.Sequential):
    """Convolution without bias, BatchNorm, optional activation (torchvision ``Conv2dNormActivation``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        groups: int,
        activation: type[nn.Module] | None,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels, eps=_BN_EPS, momentum=_BN_MOMENTUM),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)


class _SqueezeExcitation(nn.Module):
    """Channel gating: global average, 1x1 squeeze with ReLU, 1x1 excite with hard-sigmoid."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.activation = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        """``x`` scaled per channel."""
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        out: Tensor = x * scale
        return out


class _InvertedResidual(nn.Module):
    """Expand (1x1), depthwise (k x k), optional squeeze-excitation, project (1x1, linear)."""

    def __init__(self, setting: BlockSetting) -> None:
        super().__init__()
        activation: type[nn.Module] = nn.Hardswish if setting.hard_swish else nn.ReLU
        layers: list[nn.Module] = []
        if setting.expanded != setting.in_channels:
            layers.append(_ConvNormActivation(setting.in_channels, setting.expanded, 1, 1, 1, activation))
        layers.append(
            _ConvNormActivation(
                setting.expanded, setting.expanded, setting.kernel, setting.stride, setting.expanded, activation
            )
        )
        if setting.squeeze_excite:
            layers.append(_SqueezeExcitation(setting.expanded, make_divisible(setting.expanded // 4, 8)))
        layers.append(_ConvNormActivation(setting.expanded, setting.out_channels, 1, 1, 1, None))
        self.block = nn.Sequential(*layers)
        self.use_residual = setting.stride == 1 and setting.in_channels == setting.out_channels

    def forward(self, x: Tensor) -> Tensor:
        """The block, plus the input where shapes allow."""
        out: Tensor = self.block(x)
        return out + x if self.use_residual else out


def _scaled(setting: BlockSetting, width_mult: float) -> BlockSetting:
    """Channel counts multiplied by ``width_mult`` and made divisible by 8 (torchvision ``adjust_channels``)."""
    return setting._replace(
        in_channels=make_divisible(setting.in_channels * width_mult),
        expanded=make_divisible(setting.expanded * width_mult),
        out_channels=make_divisible(setting.out_channels * width_mult),
    )


class MobileNetV3Large(nn.Module):
    """MobileNetV3-Large, optionally without its classifier.

    Parameters
    ----------
    in_channels : int
        Input channels (3: hal9000 repeats the grey slice).
    num_classes : int or None
        Outputs of torchvision's classifier (1000 for ImageNet); ``None`` omits the classifier,
        as hal9000 does, and ``forward`` returns ``num_features`` pooled features.
    width_mult : float
        Channel multiplier (1.0 as published; smaller only for quick tests).
    dropout : float
        Dropout before the last linear layer (0.2 in torchvision).

    Raises
    ------
    ValueError
        For non-positive channel counts or multiplier, or a dropout outside [0, 1).
    """

    def __init__(
        self, in_channels: int = 3, num_classes: int | None = 1000, *, width_mult: float = 1.0, dropout: float = 0.2
    ) -> None:
        super().__init__()
        if in_channels < 1 or (num_classes is not None and num_classes < 1) or width_mult <= 0:
            raise ValueError(
                f"channels and width multiplier must be positive, got in {in_channels}, classes {num_classes}, "
                f"width {width_mult}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        settings = [_scaled(s, width_mult) for s in MOBILENET_V3_LARGE]
        stem = make_divisible(_STEM_CHANNELS * width_mult)
        layers: list[nn.Module] = [_ConvNormActivation(in_channels, stem, 3, 2, 1, nn.Hardswish)]
        layers.extend(_InvertedResidual(s) for s in settings)
        self.num_features = 6 * settings[-1].out_channels
        layers.append(_ConvNormActivation(settings[-1].out_channels, self.num_features, 1, 1, 1, nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier: nn.Sequential | None = None
        if num_classes is not None:
            last = make_divisible(_LAST_CHANNEL * width_mult)
            self.classifier = nn.Sequential(
                nn.Linear(self.num_features, last),
                nn.Hardswish(),
                nn.Dropout(p=dropout),
                nn.Linear(last, num_classes),
            )
        self._initialise()

    def _initialise(self) -> None:
        """torchvision's initialisation: He-normal (fan-out) convolutions, unit BN, N(0, 0.01) linears."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes)``, or pooled features ``(N, num_features)`` without a classifier."""
        pooled: Tensor = self.avgpool(self.features(x)).flatten(1)
        return pooled if self.classifier is None else self.classifier(pooled)
