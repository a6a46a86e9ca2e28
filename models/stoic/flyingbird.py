"""The Flying Bird member: half-width 3D ResNet-18 folds with age, for COVID-19 and for severity.

What ran at inference (FB ``inference/classification/interface_severe.py``, ``interface_covid.py``,
``resnet.py``; models spec sections 1 and 4; thesis 4.3.3):

1. the lung mask (lungmask R231 in the repository; here the pipeline's lung mask) without
   face-connected objects of fewer than 100 voxels (``remove_small_objects(min_size=100)``);
2. its bounding box widened by ``round(6 mm / spacing)`` voxels per axis, clamped to the scan
   (the whole scan when no lung is found);
3. the box resized to 256^3 with ``scipy.ndimage.zoom(order=1)`` (trilinear, corners aligned);
4. HU clipped to [-1024, 512] and z-scored with mean -236.88525 and sd 404.0286 (the thesis
   rounds them to -237 and 404);
5. four views: the volume and its reversals along z, y and x; for each of the five fold models,
   ``softmax(logits)[1]`` averaged over the views, then over the folds.  Separate COVID-19 and
   severity models (``covid.{i}.``, ``severe.{i}.`` in the weight file) share this input.

The network (``resnet(in_channels=1, out_channels=2, layers=[2, 2, 2, 2])``) is a ResNet-18 of
half width (32-256 channels) with a 7^3 stride-2 stem in all three axes, which differs from the
zoo's 3D ResNet (stride (1, 2, 2), full width) and is built here; its two image logits are
concatenated with the age on [0, 1] (STOIC bin 35 -> 0, ..., 85 -> 1) and mapped by
``Linear(3, 2)``.  Sex is not used.  When the age is missing the authors used 1.0 (the oldest
bin; ``_get_side_info``), and so does this member.  Module names follow the authors' ``ResNet``,
so their ``state_dict`` loads as it is.  The thesis says age was "divided by 100"; the deployed
code used the bin mapping above.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from monai.transforms.compose import Compose
from monai.transforms.transform import MapTransform
from torch import Tensor, nn

from models.device import folded_for_inference, inference_context, to_device
from models.findings import Geometry
from models.stoic.member import MemberInputs, MemberOutput
from models.stoic.volumes import (
    GEOMETRY,
    IMAGE,
    LUNGS,
    RECORD,
    AsChannelTensord,
    ClipIntensityd,
    MemberConfig,
    PreparedInput,
    SideInputFlops,
    VolumeMember,
    ZoomToShaped,
    ZScored,
    bounding_box,
    check_inputs,
    remove_small_components,
    run_transforms,
    sex_note,
    stoic_age_fraction,
    summary_row,
)
from models.zoo.catalog import ParameterReference

__all__ = [
    "DESCRIPTION",
    "NAME",
    "COMPUTED_PARAMETERS",
    "TASKS",
    "VERSION",
    "FlyingBirdConfig",
    "FlyingBirdResNet",
    "LungBoxCropd",
    "StoicFlyingBird",
    "flip_views",
    "flyingbird_age",
    "flyingbird_input",
    "flyingbird_transforms",
    "summary",
]

NAME = "stoic_flyingbird"
VERSION = "1.0.0"
DESCRIPTION = (
    "Flying Bird: half-width 3D ResNet-18 folds with age on the lung box resized to 256^3, "
    "P(COVID-19) and P(severe), 4-view test-time augmentation (thesis 4.3.3)"
)
#: Half-width 3D ResNet-18 with the age head: about 8.30 M, counted by the lungcds developers from FB
#: ``inference/classification/resnet.py`` (models spec section 4).  Neither the thesis nor the
#: authors print a count, so it is a computed reference, not a published one.
COMPUTED_PARAMETERS = 8_300_000
#: The two model sets: COVID-19 presence and severity (FB ``interface_classification.py``).
TASKS: tuple[str, str] = ("covid", "severe")


@dataclass(frozen=True)
class FlyingBirdConfig(MemberConfig):
    """Flying Bird's input and networks (defaults: FB ``interface_severe.py``, ``resnet.py``).

    Attributes
    ----------
    shape : tuple of int
        The resized lung box ``(z, y, x)`` (256^3, ``shape_train``).
    margin_mm : float
        Margin around the lung box (6 mm).
    min_lung_component : int
        Lung-mask objects smaller than this many voxels are dropped first (100).
    clip : tuple of float
        HU range ([-1024, 512]).
    mean, sd : float
        Fixed z-score statistics in HU (-236.88525, 404.0286).
    widths : tuple of int
        Channels per stage (32, 64, 128, 256: half of ResNet-18's).
    layers : tuple of int
        Basic blocks per stage (2, 2, 2, 2).
    folds : int
        Models per task (5-fold cross-validation).
    missing_age : float
        Age input when the age is unknown (1.0, FB ``_get_side_info``).
    """

    shape: tuple[int, int, int] = (256, 256, 256)
    margin_mm: float = 6.0
    min_lung_component: int = 100
    clip: tuple[float, float] = (-1024.0, 512.0)
    mean: float = -236.88525
    sd: float = 404.0286
    widths: tuple[int, int, int, int] = (32, 64, 128, 256)
    layers: tuple[int, int, int, int] = (2, 2, 2, 2)
    folds: int = 5
    missing_age: float = 1.0

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or min(self.shape) < 1 or self.folds < 1 or self.sd <= 0 or self.margin_mm < 0:
            raise ValueError(f"invalid Flying Bird configuration: {self}")
        if not self.clip[0] < self.clip[1]:
            raise ValueError(f"clip must be increasing, got {self.clip}")


class LungBoxCropd(MapTransform):
    """Crop to the lung mask's bounding box plus ``margin_mm`` (FB ``_crop_and_zoom``).

    The mask under ``lungs`` first loses objects smaller than ``min_component`` voxels; the
    margin in voxels is ``int(np.around(margin_mm / spacing))`` per axis; the box is clamped to
    the scan and is the whole scan when no lung remains.  The record gets ``lung_box`` (inclusive
    ``(first, last)`` per axis, None when empty), ``crop_box`` and ``margin_voxels``.
    """

    def __init__(self, keys: Sequence[str], margin_mm: float, min_component: int, mask_key: str = LUNGS) -> None:
        super().__init__(keys)
        self.margin_mm = float(margin_mm)
        self.min_component = int(min_component)
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Cropped arrays."""
        d = dict(data)
        geometry: Geometry = d[GEOMETRY]
        mask = remove_small_components(np.asarray(d[self.mask_key], dtype=bool), self.min_component)
        box = bounding_box(mask)
        shape = mask.shape
        margins = tuple(int(np.around(self.margin_mm / s)) for s in geometry.spacing)
        if box is None:
            crop = tuple((0, n - 1) for n in shape)
        else:
            crop = tuple(
                (max(0, lo - m), min(n - 1, hi + m)) for (lo, hi), m, n in zip(box, margins, shape, strict=True)
            )
        index = tuple(slice(lo, hi + 1) for lo, hi in crop)
        for key in self.key_iterator(d):
            d[key] = np.asarray(d[key])[index]
        d[RECORD] = {**d.get(RECORD, {}), "lung_box": box, "crop_box": crop, "margin_voxels": margins}
        return d


def flyingbird_transforms(config: FlyingBirdConfig, margin_mm: float | None = None) -> Compose:
    """Flying Bird's preprocessing on ``{"image": HU, "lungs": bool, "geometry"}`` (module docstring);
    ``margin_mm`` replaces the 6 mm margin (training also used random 3-9 mm margins)."""
    low, high = config.clip
    return Compose(
        [
            LungBoxCropd([IMAGE], config.margin_mm if margin_mm is None else margin_mm, config.min_lung_component),
            ZoomToShaped([IMAGE], config.shape, order=1),
            ClipIntensityd([IMAGE], low, high),
            ZScored([IMAGE], config.mean, config.sd),
            AsChannelTensord([IMAGE]),
        ]
    )


def flyingbird_age(config: FlyingBirdConfig, age_years: float | None) -> tuple[float, str]:
    """The age input on [0, 1] (the default for an unknown age) and a note saying where it came from."""
    age = stoic_age_fraction(age_years)
    if age is None:
        return (
            config.missing_age,
            f"age unknown: Flying Bird's default {config.missing_age:g} (the 85-year bin) was used",
        )
    return age, f"age {age_years:g} years entered as STOIC bin {35 + 50 * age:.0f} -> {age:.1f}"


def flyingbird_input(config: FlyingBirdConfig, inputs: MemberInputs, margin_mm: float | None = None) -> PreparedInput:
    """Flying Bird's ``image`` ``(1, 256, 256, 256)`` and ``age`` ``(1,)`` for one series.

    ``margin_mm`` replaces the 6 mm margin (training also used random margins of 3-9 mm,
    FB ``preparation/generate_data.py``).
    """
    check_inputs(inputs)
    data: dict[Hashable, Any] = {IMAGE: inputs.volume.hu, LUNGS: inputs.lungs, GEOMETRY: inputs.volume.geometry}
    out = run_transforms(flyingbird_transforms(config, margin_mm), data)
    age, age_text = flyingbird_age(config, inputs.age_years)
    record = dict(out[RECORD])
    notes: tuple[str, ...] = (age_text, sex_note("Flying Bird", inputs.sex, used=False))
    if record["lung_box"] is None:
        notes = (*notes, "no lung voxels: Flying Bird used the whole scan")
    tensors = {"image": out[IMAGE], "age": torch.tensor([age], dtype=torch.float32)}
    return PreparedInput(tensors=tensors, record=record, notes=notes)


def flip_views(image: Tensor) -> list[Tensor]:
    """The four test-time views of a ``(C, D, H, W)`` input: itself, reversed along D, H and W
    (FB ``_generate_img_list``; the final phase dropped the 8 combined flips of the
    Qualification phase, T§4.3.3)."""
    return [image, image.flip(1), image.flip(2), image.flip(3)]


class _BasicBlock(nn.Module):
    """Two 3^3 convolutions with BN and a residual connection (torchvision ``BasicBlock`` in 3D)."""

    #: ``bn(conv(x))`` pairs, folded for inference (models.device.folded_for_inference).
    BATCHNORM_AFTER_CONV: ClassVar[tuple[tuple[str, str], ...]] = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv3d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm3d(planes))

    def forward(self, x: Tensor) -> Tensor:
        """``relu(x' + F(x))``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        result: Tensor = self.relu(out + identity)
        return result


class FlyingBirdResNet(nn.Module):
    """Flying Bird's 3D ResNet: image logits concatenated with side information, then a linear map.

    Parameters
    ----------
    in_channels : int
        Input channels (1).
    num_classes : int
        Classes (2; softmax index 1 is "COVID-19" or "severe").
    widths : sequence of 4 int
        Channels per stage (32, 64, 128, 256).
    layers : sequence of 4 int
        Basic blocks per stage (2, 2, 2, 2: ResNet-18).
    side_features : int
        Side inputs concatenated with the image logits (1: the age).

    Raises
    ------
    ValueError
        For a wrong number of stages or non-positive sizes.
    """

    #: ``bn(conv(x))`` pairs, folded for inference (models.device.folded_for_inference).
    BATCHNORM_AFTER_CONV: ClassVar[tuple[tuple[str, str], ...]] = (("conv1", "bn1"),)

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        widths: Sequence[int] = (32, 64, 128, 256),
        layers: Sequence[int] = (2, 2, 2, 2),
        side_features: int = 1,
    ) -> None:
        super().__init__()
        if len(widths) != 4 or len(layers) != 4 or min(*widths, *layers) < 1:
            raise ValueError(f"widths and layers need 4 positive entries, got {tuple(widths)} and {tuple(layers)}")
        if min(in_channels, num_classes, side_features) < 1:
            raise ValueError("in_channels, num_classes and side_features must be positive")
        self.conv1 = nn.Conv3d(in_channels, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm3d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, 2, 1)
        inplanes = widths[0]
        stages: list[nn.Sequential] = []
        for i, (planes, count) in enumerate(zip(widths, layers, strict=True)):
            blocks = [
                _BasicBlock(inplanes if j == 0 else planes, planes, 2 if i > 0 and j == 0 else 1) for j in range(count)
            ]
            stages.append(nn.Sequential(*blocks))
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc_img = nn.Linear(widths[-1], num_classes)
        self.fc_img_info = nn.Linear(num_classes + side_features, num_classes)
        self._initialise()

    def _initialise(self) -> None:
        """He-normal (fan-out) convolutions, unit BN, and the last BN of each block zeroed
        (``zero_init_residual=True`` in FB ``resnet()``)."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, _BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, x: Tensor, side: Tensor) -> Tensor:
        """Logits ``(N, num_classes)`` of volumes ``(N, C, D, H, W)`` and side inputs ``(N, side_features)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        logits = self.fc_img(self.avgpool(x).flatten(1))
        out: Tensor = self.fc_img_info(torch.cat((logits, side.to(logits.dtype)), dim=-1))
        return out


class StoicFlyingBird(VolumeMember[FlyingBirdConfig]):
    """Flying Bird: COVID-19 and severity folds, four views each, averaged (module docstring)."""

    NAME = NAME
    VERSION = VERSION
    DESCRIPTION = DESCRIPTION
    CONFIG = FlyingBirdConfig

    @classmethod
    def network_groups(cls, config: FlyingBirdConfig) -> dict[str, int]:
        """One ResNet per fold for each task."""
        return {task: config.folds for task in TASKS}

    @classmethod
    def build_network(cls, config: FlyingBirdConfig, group: str) -> nn.Module:
        """A freshly initialised :class:`FlyingBirdResNet`."""
        return FlyingBirdResNet(1, 2, config.widths, config.layers)

    def preprocess(self, inputs: MemberInputs) -> PreparedInput:
        """The ``(1, 256, 256, 256)`` lung-box ``image`` and the ``(1,)`` ``age`` input."""
        return flyingbird_input(self.config, inputs)

    def task_probability(self, task: str, image: Tensor, age: Tensor) -> tuple[float, list[float]]:
        """Mean over folds of the mean over the four views of ``softmax[1]``, and each fold's value.

        ``image`` and ``age`` are on the member's device (:meth:`predict` copies them there once;
        the flipped views are then made there).
        """
        side = age.unsqueeze(0)
        folds = []
        with inference_context(self.device, bf16=False):
            for placed in self.networks[task]:
                network = folded_for_inference(placed)  # one copy at a time (models.device)
                views = [
                    float(torch.softmax(network(v.unsqueeze(0), side).float(), 1)[0, 1]) for v in flip_views(image)
                ]
                folds.append(float(np.mean(views)))
        return float(np.mean(folds)), folds

    def predict(self, inputs: MemberInputs) -> MemberOutput:
        """P(COVID-19) and P(severe), each 5 folds x 4 views averaged."""
        prepared = self.preprocess(inputs)
        image = to_device(prepared.tensors["image"], self.device)
        age = to_device(prepared.tensors["age"], self.device)
        p_covid, covid_folds = self.task_probability("covid", image, age)
        p_severe, severe_folds = self.task_probability("severe", image, age)
        details = {f"covid_fold{i}": p for i, p in enumerate(covid_folds)}
        details.update({f"severe_fold{i}": p for i, p in enumerate(severe_folds)})
        notes = (*self.weight_notes(), *prepared.notes)
        return MemberOutput(p_covid=p_covid, p_severe=p_severe, notes=notes, details=details)


def summary() -> list[dict[str, Any]]:
    """Parameters and FLOPs of one Flying Bird network at 1 x 256^3 (40 passes per scan)."""
    with torch.device("meta"):
        network = FlyingBirdResNet()
    return [
        summary_row(
            "stoic_flyingbird_resnet18_half",
            SideInputFlops(network, 1),
            (1, 256, 256, 256),
            forward_passes=2 * 5 * 4,
            source="FB inference/classification/resnet.py (layers 2-2-2-2, 32-256 channels); models spec section 4",
            reference=ParameterReference.computed(
                COMPUTED_PARAMETERS,
                "FB inference/classification/resnet.py (layers 2-2-2-2, 32-256 channels, age head), counted by "
                "the lungcds developers to about 8.30 M (models spec section 4); not published",
            ),
        )
    ]
