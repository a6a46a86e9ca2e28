"""The uaux2 member: a bag of 3D DenseNet-121 severity models with metadata, and a 3-class ResNet-34.

What ran at inference (UX ``inference/process.py``, ``inference/algorithm/aucmedi/inference.py``,
``omtrta/densenet.py``, ``lungseg/apply.py``, ``ilr/inference.py``; AUCMEDI 0.4.0 subfunctions;
classification_models_3D 1.0.x backbones; models spec sections 1 and 4; thesis 4.3.3):

Severity (``predict_cv_meta``), for every model of the bag:

1. SimpleITK resampling to 1.48 x 1.48 x 2.10 mm (x, y, z) as the baseline's ``resample()``;
2. HU clipped to [-1024, 100]; AUCMEDI ``Standardize("grayscale")``: the volume's own minimum and
   maximum onto [0, 255], rounded; ``Padding(mode="constant")`` with 0 and a centre ``Crop`` to
   148 x 224 x 224 (z, y, x); grey copied to RGB; Keras ``preprocess_input(mode="torch")``
   (/255, then ImageNet mean (0.485, 0.456, 0.406) and sd (0.229, 0.224, 0.225) per channel);
3. metadata ``[age, sex, ILR]``: age ``(bin - 35) / 50``, sex 0 for "F" and 1 otherwise, and the
   infection-to-lung ratio ``|lesion| / (|lesion| + |lung without lesion|)``;
4. the network: a 3D DenseNet-121 (classification_models_3D: 7^3 stride-2 stem, 3^3 stride-2 max
   pool, 3^3 dense convolutions, 2^3 average-pool transitions, BN eps 1.001e-5), ReLU, global
   average pool, ``Dense(512)`` (linear) and dropout, the metadata concatenated, ``Dense(512)``,
   dropout, LeakyReLU(0.1), ``Dense(256)``, dropout, LeakyReLU(0.1), ``Dense(2)``, softmax;
   ``P(severe)`` is the mean over the bag of ``softmax[1]``.

COVID-19 (``predict_mc``), one fixed model: the resampled CT with everything outside the lung
mask set to -1024 HU, cropped to the mask's extent (as in the repository, the crop stops just
before the mask's last slice, row and column: ``volume[first:last]``), then the same clip and grey scaling,
padding and centre crop to 148 x 180 x 224, RGB and ``mode="tf"`` (x / 127.5 - 1); a
pre-activation 3D ResNet-34 (classification_models_3D ``resnet34``: input BN without scale,
7^3 stride-2 stem, BN-ReLU-conv blocks, final BN-ReLU) with AUCMEDI's head (global average pool,
``Dense(512)``, dropout, ``Dense(3)``, softmax over negative / positive / severe); ``P(COVID-19) =
p(positive) + p(severe)``.

Both networks differ from the zoo's (HZ-inflated DenseNet with a 1x7x7 stem; post-activation
kenshohara ResNets) and are built here; the DenseNet backbone is MONAI's, which has exactly the
classification_models_3D layout.  Substitutions, all recorded in ``notes``: the lesion mask given
to this member replaces uaux2's MIScnn U-Net (whose ILR came from an 80 x 160 x 160 centre crop
at 1.58 x 1.58 x 2.70 mm; here the whole scan on its own grid), and the pipeline's lung mask,
resampled linearly and thresholded at 0.5, replaces their lung U-Net.  Missing inputs: without a
lesion mask there is no ILR and the member does not run (:class:`MemberUnavailable`); uaux2's
code read PatientAge and PatientSex unconditionally, so an unknown age gives no P(severe) (the
COVID-19 model does not use it), and an unknown sex takes the "not F" value 1, as any sex other
than "F" did.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets.densenet import DenseNet as MonaiDenseNet
from monai.transforms.compose import Compose
from monai.transforms.transform import MapTransform
from monai.transforms.utility.dictionary import CopyItemsd
from torch import Tensor, nn

from models.device import inference_context, to_device
from models.stoic.member import MemberInputs, MemberOutput, MemberUnavailable
from models.stoic.volumes import (
    GEOMETRY,
    IMAGE,
    LUNGS,
    RECORD,
    AsChannelTensord,
    ClipIntensityd,
    MemberConfig,
    PadCentreCropd,
    PreparedInput,
    SideInputFlops,
    SimpleItkResampled,
    VolumeMember,
    check_inputs,
    run_transforms,
    stoic_age_fraction,
    summary_row,
)

__all__ = [
    "COVID_IMAGE",
    "DESCRIPTION",
    "IMAGENET_MEAN",
    "IMAGENET_SD",
    "NAME",
    "VERSION",
    "ChannelAffined",
    "GreyscaleStandardised",
    "LungOnlyCropd",
    "StoicUaux2",
    "Uaux2Config",
    "Uaux2DenseNet",
    "Uaux2ResNet34",
    "infection_lung_ratio",
    "summary",
    "uaux2_input",
    "uaux2_metadata",
    "uaux2_transforms",
]

NAME = "stoic_uaux2"
VERSION = "1.0.0"
DESCRIPTION = (
    "uaux2: bag of 3D DenseNet-121 models with age, sex and infection-to-lung ratio for P(severe); 3-class "
    "3D ResNet-34 on the lung-only CT for P(COVID-19) (thesis 4.3.3)"
)
#: Key of the COVID-19 model's input in the transforms' dictionary.
COVID_IMAGE = "covid_image"
#: ImageNet statistics of Keras ``preprocess_input(mode="torch")``.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_SD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: AUCMEDI ``Standardize`` smoothing term.
_SMOOTH = 1e-6
#: Lung voxels outside the mask, after ``np.clip(volume, -1024)`` (UX ``lungseg/apply.py``).
_OUTSIDE_LUNG_HU = -1024.0


@dataclass(frozen=True)
class Uaux2Config(MemberConfig):
    """uaux2's inputs and networks (defaults: UX ``inference.py``, ``densenet.py``; module docstring).

    Attributes
    ----------
    spacing_mm : tuple of float
        Resampled voxel size ``(z, y, x)`` ((2.10, 1.48, 1.48)).
    clip : tuple of float
        HU range ([-1024, 100]).
    severity_shape, covid_shape : tuple of int
        Padded/cropped inputs ``(z, y, x)`` ((148, 224, 224) and (148, 180, 224)).
    growth_rate, block_config, init_features, bn_size
        DenseNet-121 (32, (6, 12, 24, 16), 64, 4).
    head : tuple of int
        Widths of the severity head's dense layers (512, 512, 256).
    resnet_layers : tuple of int
        Blocks per stage of the COVID-19 ResNet (3, 4, 6, 3: ResNet-34).
    resnet_width : int
        Channels of its first stage (64; doubled per stage).
    bag : int
        Severity models held (the final phase trained as many 95/5 splits as fitted in 120 h;
        the Qualification phase 5 folds).
    """

    spacing_mm: tuple[float, float, float] = (2.10, 1.48, 1.48)
    clip: tuple[float, float] = (-1024.0, 100.0)
    severity_shape: tuple[int, int, int] = (148, 224, 224)
    covid_shape: tuple[int, int, int] = (148, 180, 224)
    growth_rate: int = 32
    block_config: tuple[int, ...] = (6, 12, 24, 16)
    init_features: int = 64
    bn_size: int = 4
    head: tuple[int, int, int] = (512, 512, 256)
    resnet_layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    resnet_width: int = 64
    bag: int = 5

    def __post_init__(self) -> None:
        if len(self.spacing_mm) != 3 or min(self.spacing_mm) <= 0 or self.bag < 1:
            raise ValueError(f"invalid uaux2 configuration: {self}")
        if min(*self.severity_shape, *self.covid_shape) < 1 or not self.clip[0] < self.clip[1]:
            raise ValueError(f"invalid uaux2 shapes or clip range: {self}")


class LungOnlyCropd(MapTransform):
    """Set voxels outside the lung mask to -1024 HU and crop to the mask (UX ``lung_segmentation``).

    Per axis the crop is ``[first, last)`` where ``first`` and ``last`` are the first and last
    indices holding lung: UX ``identify_position`` finds both and the slice ``first:last`` leaves
    the last one out.  An empty mask leaves the whole volume.  The record gets ``lung_crop``
    (``(start, stop)`` per axis).
    """

    def __init__(self, keys: Sequence[str], mask_key: str = LUNGS) -> None:
        super().__init__(keys)
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Lung-only, cropped arrays."""
        d = dict(data)
        mask = np.asarray(d[self.mask_key], dtype=bool)
        crop: list[tuple[int, int]] = []
        for axis in range(3):
            hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
            crop.append((int(hits[0]), int(hits[-1])) if hits.size else (0, mask.shape[axis]))
        index = tuple(slice(start, stop) for start, stop in crop)
        for key in self.key_iterator(d):
            array = np.maximum(np.asarray(d[key], dtype=np.float32), np.float32(_OUTSIDE_LUNG_HU))
            d[key] = np.where(mask, array, np.float32(_OUTSIDE_LUNG_HU))[index]
        d[RECORD] = {**d.get(RECORD, {}), "lung_crop": tuple(crop)}
        return d


class GreyscaleStandardised(MapTransform):
    """AUCMEDI ``Standardize(mode="grayscale")``: ``round(255 * (x - min + e) / (max - min + e))``
    with the array's own minimum and maximum and ``e = 1e-6``."""

    def __init__(self, keys: Sequence[str]) -> None:
        super().__init__(keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Arrays on the grey scale 0-255."""
        d = dict(data)
        for key in self.key_iterator(d):
            array = np.asarray(d[key], dtype=np.float32)
            low, high = float(array.min()), float(array.max())
            scaled = (array - low + _SMOOTH) / (high - low + _SMOOTH)
            d[key] = np.around(scaled * 255.0).astype(np.float32)
        return d


class ChannelAffined(MapTransform):
    """``(x / divisor - mean[c]) / sd[c]`` per channel of ``(C, ...)`` tensors.

    Keras ``preprocess_input``: ``mode="torch"`` is divisor 255 with the ImageNet statistics;
    ``mode="tf"`` is divisor 127.5, mean 1, sd 1 (i.e. ``x / 127.5 - 1``).
    """

    def __init__(self, keys: Sequence[str], divisor: float, mean: Sequence[float], sd: Sequence[float]) -> None:
        super().__init__(keys)
        if divisor <= 0 or len(mean) != len(sd) or min(sd) <= 0:
            raise ValueError(f"invalid channel statistics: divisor {divisor}, mean {mean}, sd {sd}")
        self.divisor = float(divisor)
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.sd = torch.tensor(sd, dtype=torch.float32)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Normalised tensors."""
        d = dict(data)
        for key in self.key_iterator(d):
            x: Tensor = d[key]
            shape = (-1,) + (1,) * (x.ndim - 1)
            d[key] = (x / self.divisor - self.mean.view(shape)) / self.sd.view(shape)
        return d


def uaux2_transforms(config: Uaux2Config) -> Compose:
    """Both inputs from ``{"image": HU, "lungs": bool, "geometry"}``: ``image`` for the severity bag
    and ``covid_image`` for the COVID-19 model (module docstring)."""
    low, high = config.clip
    grey_scale = (IMAGE, COVID_IMAGE)
    return Compose(
        [
            SimpleItkResampled([IMAGE, LUNGS], config.spacing_mm),
            CopyItemsd([IMAGE], names=[COVID_IMAGE]),
            LungOnlyCropd([COVID_IMAGE]),
            ClipIntensityd(grey_scale, low, high),
            GreyscaleStandardised(grey_scale),
            PadCentreCropd([IMAGE], config.severity_shape, 0.0, record_key="severity_crop_start"),
            PadCentreCropd([COVID_IMAGE], config.covid_shape, 0.0, record_key="covid_crop_start"),
            AsChannelTensord(grey_scale, channels=3),
            ChannelAffined([IMAGE], 255.0, IMAGENET_MEAN, IMAGENET_SD),
            ChannelAffined([COVID_IMAGE], 127.5, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0)),
        ]
    )


def infection_lung_ratio(lesions: np.ndarray, lungs: np.ndarray) -> float:
    """``|lesion| / (|lesion| + |lung without lesion|)``, 0 without lesion (UX ``compute_ilr_from_mask``)."""
    lesion = np.asarray(lesions, dtype=bool)
    infected = int(np.count_nonzero(lesion))
    if infected == 0:
        return 0.0
    healthy = int(np.count_nonzero(np.asarray(lungs, dtype=bool) & ~lesion))
    return infected / (infected + healthy)


def uaux2_metadata(inputs: MemberInputs) -> tuple[Tensor | None, tuple[str, ...]]:
    """``[age, sex, ILR]`` (None without an age) and notes on how each was obtained.

    Raises
    ------
    MemberUnavailable
        Without a lesion mask (no ILR).
    """
    if inputs.lesions is None:
        raise MemberUnavailable(
            "needs a lesion mask: uaux2's severity models take the infection-to-lung ratio, which "
            "comes from a lesion segmentation"
        )
    ilr = infection_lung_ratio(inputs.lesions, inputs.lungs)
    sex = 0.0 if (inputs.sex or "").upper() == "F" else 1.0
    notes = [
        f"infection-to-lung ratio {ilr:.4f} from the given lesion mask (in place of uaux2's MIScnn U-Net)",
        f"sex {inputs.sex or 'unknown'} entered as {sex:g} (uaux2: 0 for F, 1 otherwise)",
    ]
    age = stoic_age_fraction(inputs.age_years)
    if age is None:
        notes.append("age unknown: uaux2 needs it (its code read PatientAge unconditionally), so no P(severe)")
        return None, tuple(notes)
    notes.append(f"age {inputs.age_years:g} years entered as STOIC bin {35 + 50 * age:.0f} -> {age:.1f}")
    return torch.tensor([age, sex, ilr], dtype=torch.float32), tuple(notes)


def uaux2_input(config: Uaux2Config, inputs: MemberInputs) -> PreparedInput:
    """``image`` ``(3, 148, 224, 224)``, ``covid_image`` ``(3, 148, 180, 224)`` and, with an age,
    ``metadata`` ``(3,)`` for one series.

    Raises
    ------
    MemberUnavailable
        Without a lesion mask.
    """
    check_inputs(inputs)
    metadata, notes = uaux2_metadata(inputs)
    data: dict[Hashable, Any] = {IMAGE: inputs.volume.hu, LUNGS: inputs.lungs, GEOMETRY: inputs.volume.geometry}
    out = run_transforms(uaux2_transforms(config), data)
    tensors = {"image": out[IMAGE], "covid_image": out[COVID_IMAGE]}
    if metadata is not None:
        tensors["metadata"] = metadata
    notes = (*notes, "lung mask from this pipeline, resampled to uaux2's grid, in place of uaux2's lung U-Net")
    return PreparedInput(tensors=tensors, record=out[RECORD], notes=notes)


class Uaux2DenseNet(nn.Module):
    """3D DenseNet-121 (classification_models_3D layout, MONAI's implementation) with uaux2's head.

    Parameters
    ----------
    in_channels : int
        Input channels (3: grey copied to RGB).
    meta_features : int
        Metadata entries concatenated after the first dense layer (3: age, sex, ILR).
    out_channels : int
        Classes (2: non-severe, severe).
    growth_rate, block_config, init_features, bn_size
        DenseNet sizes (DenseNet-121 by default).
    head : sequence of 3 int
        Widths of the three dense layers (512, 512, 256).
    dropout : float
        Dropout after each dense layer (0.3).
    """

    def __init__(
        self,
        in_channels: int = 3,
        meta_features: int = 3,
        out_channels: int = 2,
        *,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        init_features: int = 64,
        bn_size: int = 4,
        head: Sequence[int] = (512, 512, 256),
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if len(head) != 3 or min(*head, meta_features, out_channels) < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"invalid head {tuple(head)}, {meta_features} metadata, dropout {dropout}")
        backbone = MonaiDenseNet(
            3,
            in_channels,
            1,
            init_features=init_features,
            growth_rate=growth_rate,
            block_config=tuple(block_config),
            bn_size=bn_size,
            # Keras BatchNormalization: epsilon 1.001e-5 (classification_models_3D), momentum 0.99.
            norm=("batch", {"eps": 1.001e-5, "momentum": 0.01}),
        )
        self.features = backbone.features
        channels = init_features
        for i, count in enumerate(block_config):
            channels += count * growth_rate
            if i < len(block_config) - 1:
                channels //= 2  # transitions halve the channels
        self.num_features = channels
        self.image_fc = nn.Linear(self.num_features, head[0])
        self.fc1 = nn.Linear(head[0] + meta_features, head[1])
        self.fc2 = nn.Linear(head[1], head[2])
        self.out = nn.Linear(head[2], out_channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, metadata: Tensor) -> Tensor:
        """Logits ``(N, out_channels)`` of volumes ``(N, 3, D, H, W)`` and metadata ``(N, 3)``."""
        pooled = F.relu(self.features(x)).mean(dim=(2, 3, 4))
        h = torch.cat((self.dropout(self.image_fc(pooled)), metadata.to(pooled.dtype)), dim=1)
        h = F.leaky_relu(self.dropout(self.fc1(h)), 0.1)
        h = F.leaky_relu(self.dropout(self.fc2(h)), 0.1)
        out: Tensor = self.out(h)
        return out


class _ShiftOnlyBatchNorm3d(nn.BatchNorm3d):
    """BatchNorm with a learned shift and no learned scale (Keras ``scale=False``: ``bn_data``)."""

    def __init__(self, channels: int, eps: float, momentum: float) -> None:
        super().__init__(channels, eps=eps, momentum=momentum, affine=False)
        self.shift = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        """Normalised ``x`` plus the shift."""
        out: Tensor = super().forward(x) + self.shift.view(1, -1, 1, 1, 1)
        return out


class _PreActivationBlock(nn.Module):
    """BN-ReLU, 3^3 conv (strided), BN-ReLU, 3^3 conv, plus the input or a 1^3 projection of the
    pre-activated input (classification_models_3D ``residual_conv_block``, cut "pre"/"post")."""

    def __init__(self, inplanes: int, planes: int, stride: int, project: bool, eps: float, momentum: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm3d(inplanes, eps=eps, momentum=momentum)
        self.conv1 = nn.Conv3d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes, eps=eps, momentum=momentum)
        self.conv2 = nn.Conv3d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv3d(inplanes, planes, 1, stride, bias=False) if project else None

    def forward(self, x: Tensor) -> Tensor:
        """``conv2(relu(bn2(conv1(a)))) + (x or shortcut(a))`` with ``a = relu(bn1(x))``."""
        a = F.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(a)
        out: Tensor = self.conv2(F.relu(self.bn2(self.conv1(a)))) + residual
        return out


class Uaux2ResNet34(nn.Module):
    """Pre-activation 3D ResNet-34 (classification_models_3D) with AUCMEDI's classification head.

    Parameters
    ----------
    in_channels : int
        Input channels (3).
    out_channels : int
        Classes (3: negative, positive, severe).
    layers : sequence of 4 int
        Blocks per stage (3, 4, 6, 3).
    width : int
        Channels of the first stage (64), doubled per stage.
    head_width : int
        The dense layer before the output (512).
    dropout : float
        Dropout after it (0.3).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        layers: Sequence[int] = (3, 4, 6, 3),
        width: int = 64,
        head_width: int = 512,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or min(*layers, width, head_width, in_channels, out_channels) < 1:
            raise ValueError(f"invalid ResNet-34 sizes: layers {tuple(layers)}, width {width}, head {head_width}")
        # classification_models_3D ResNet: BatchNormalization epsilon 2e-5, momentum 0.99.
        eps, momentum = 2e-5, 0.01
        self.bn_data = _ShiftOnlyBatchNorm3d(in_channels, eps, momentum)
        self.conv0 = nn.Conv3d(in_channels, width, 7, 2, 3, bias=False)
        self.bn0 = nn.BatchNorm3d(width, eps=eps, momentum=momentum)
        self.pool0 = nn.MaxPool3d(3, 2, 1)
        blocks: list[nn.Module] = []
        inplanes = width
        for stage, count in enumerate(layers):
            planes = width * 2**stage
            for j in range(count):
                stride = 2 if stage > 0 and j == 0 else 1
                blocks.append(_PreActivationBlock(inplanes, planes, stride, j == 0, eps, momentum))
                inplanes = planes
        self.blocks = nn.Sequential(*blocks)
        self.bn1 = nn.BatchNorm3d(inplanes, eps=eps, momentum=momentum)
        self.num_features = inplanes
        self.fc = nn.Linear(inplanes, head_width)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(head_width, out_channels)
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")  # Keras "he_uniform"

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, out_channels)``."""
        x = self.pool0(F.relu(self.bn0(self.conv0(self.bn_data(x)))))
        x = F.relu(self.bn1(self.blocks(x)))
        out: Tensor = self.out(self.dropout(self.fc(x.mean(dim=(2, 3, 4)))))
        return out


class StoicUaux2(VolumeMember[Uaux2Config]):
    """uaux2: bag-mean severity with metadata and a 3-class COVID-19 model (module docstring)."""

    NAME = NAME
    VERSION = VERSION
    DESCRIPTION = DESCRIPTION
    CONFIG = Uaux2Config

    @classmethod
    def network_groups(cls, config: Uaux2Config) -> dict[str, int]:
        """The severity bag and one COVID-19 model (UX ``PATH_MODEL_AUCMEDI_MC``)."""
        return {"severe": config.bag, "covid": 1}

    @classmethod
    def build_network(cls, config: Uaux2Config, group: str) -> nn.Module:
        """A freshly initialised severity DenseNet or COVID-19 ResNet-34."""
        if group == "covid":
            return Uaux2ResNet34(layers=config.resnet_layers, width=config.resnet_width)
        return Uaux2DenseNet(
            growth_rate=config.growth_rate,
            block_config=config.block_config,
            init_features=config.init_features,
            bn_size=config.bn_size,
            head=config.head,
        )

    def preprocess(self, inputs: MemberInputs) -> PreparedInput:
        """``image``, ``covid_image`` and, with an age, ``metadata`` (:func:`uaux2_input`).

        Raises
        ------
        MemberUnavailable
            Without a lesion mask.
        """
        return uaux2_input(self.config, inputs)

    def predict(self, inputs: MemberInputs) -> MemberOutput:
        """P(COVID-19) = p(positive) + p(severe); P(severe) = mean over the bag of softmax[1]."""
        prepared = self.preprocess(inputs)
        details: dict[str, float] = {}
        with inference_context(self.device, bf16=False):
            covid_image = to_device(prepared.tensors["covid_image"].unsqueeze(0), self.device)
            covid = [torch.softmax(net(covid_image).float(), 1)[0] for net in self.networks["covid"]]
            p_covid = float(np.mean([float(p[1] + p[2]) for p in covid]))
            details.update(
                {f"covid_p_{name}": float(covid[0][i]) for i, name in enumerate(("negative", "positive", "severe"))}
            )
            p_severe: float | None = None
            metadata = prepared.tensors.get("metadata")
            if metadata is not None:
                image = to_device(prepared.tensors["image"].unsqueeze(0), self.device)
                side = to_device(metadata.unsqueeze(0), self.device)
                bag = [float(torch.softmax(net(image, side).float(), 1)[0, 1]) for net in self.networks["severe"]]
                p_severe = float(np.mean(bag))
                details.update({f"severe_model{i}": p for i, p in enumerate(bag)})
                details["infection_lung_ratio"] = float(metadata[2])
        return MemberOutput(
            p_covid=p_covid, p_severe=p_severe, notes=(*self.weight_notes(), *prepared.notes), details=details
        )


def summary() -> list[dict[str, Any]]:
    """Parameters and FLOPs of the uaux2 networks at their inputs (meta device)."""
    with torch.device("meta"):
        densenet = Uaux2DenseNet()
        resnet = Uaux2ResNet34()
    return [
        summary_row(
            "stoic_uaux2_densenet121_3d_metadata",
            SideInputFlops(densenet, 3),
            (3, 148, 224, 224),
            forward_passes=Uaux2Config().bag,
            source="UX aucmedi/omtrta/densenet.py (classification_models_3D DenseNet121 + metadata head)",
        ),
        summary_row(
            "stoic_uaux2_resnet34_3d",
            resnet,
            (3, 148, 180, 224),
            forward_passes=1,
            source="UX inference.py predict_mc (classification_models_3D ResNet34, AUCMEDI 0.4 head; 3 classes)",
        ),
    ]
