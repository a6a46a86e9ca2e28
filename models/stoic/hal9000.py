"""hal9000: 2D MobileNetV3-Large and ResNet-18 on 32 slices, top-5 pooling, nine test-time views.

Thesis section 4.3.3 and Table 4.1 (AUC severe 0.788, COVID 0.829 on test set B).  What the
public final-phase code ran at inference (HAL ``inference/process.py``,
``algorithm/cnn_baseline/preprocess_tta.py``, ``trainers/example_model.py``; models spec
section 1, row "hal9000") and this module reproduces:

* **Slices.**  Every ``floor(N / 33)``-th slice from the first, the first 32 of those kept
  (``input_image[:, :, 0:depth:step][:32]``).  With fewer than 33 slices the step is 0 and the
  authors' code fails; here the step is then 1 (all slices, noted).  On a 64-slice series the
  step is 1, so slices 0-31 (the first half along the array's z axis) are used, as there.
* **Intensities.**  Window level -600 / width 1500, i.e. clipped to [-1350, 150] HU; min-max
  over the 32 slices; ``* 255`` and ``astype(uint8)`` (truncation); grey repeated to 3 channels;
  albumentations ``Resize(256, 256)`` (bilinear, uint8 result) and ``Normalize(0.5, 0.5)``:
  ``(x / 255 - 0.5) / 0.5``.
* **Network** (per model): the backbone on each slice (960 MobileNetV3-Large features or 512
  ResNet-18 features), per feature the mean of its 5 largest values over the 32 slices
  (``torch.topk(outputs, 5, dim=1).values.mean(1)``; the thesis says the embeddings were
  averaged), ``Linear(features, 2)``, sigmoid: index 1 is P(COVID-19), index 0 P(severe).
* **Test-time augmentation**, on the normalised 256 x 256 slices, nine views averaged per
  model: the uncropped 256 x 256 slices; four 166 x 166 crops at offsets (0, 0), (58, 58),
  (0, 58), (58, 0) (row, column) resized to 224 (offsets relative to 224, not 256, as coded:
  ``h - h_crop`` with ``h = 224``); the 224 centre crop; and the centre crop rotated by -5,
  -10 and +5 degrees with albumentations 1.1.0 ``safe_rotate`` (rotation about the centre onto
  an enlarged canvas ``int(w cos + h sin)`` wide, zero border, i.e. mid-grey after
  normalisation, then resized back to 224).  The thesis lists -5, +5 and +10 degrees; the code
  uses -5, -10, +5 (positive = counter-clockwise, OpenCV's convention), which this follows.
* **Ensemble**: 5 MobileNetV3-Large and 5 ResNet-18 models, probabilities averaged.

OpenCV is not used: its bilinear resize and warp are reproduced with ``torch`` (same sampling
positions and zero border; OpenCV's fixed-point arithmetic differs in the last bits).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms.compose import Compose
from monai.transforms.transform import MapTransform
from torch import Tensor, nn

from models.device import folded_for_inference, inference_context, place_network, to_device
from models.stoic.member import MemberInputs, MemberOutput, MemberUnavailable
from models.stoic.mobilenet import MobileNetV3Large
from models.stoic.storage import MEMBER_CARD_FORMAT, prefixed, read_member_file, write_member_file
from models.stoic.volumes import summary_row
from models.zoo import ResNet, count_parameters

__all__ = [
    "DESCRIPTION",
    "NAME",
    "VERSION",
    "HalConfig",
    "Hal9000Member",
    "HalInput",
    "NetworkKind",
    "ResizeSlicesd",
    "SampleEquidistantSlicesd",
    "SliceTopKNet",
    "ToNormalisedTensord",
    "WindowMinMaxUint8d",
    "build_network",
    "build_transforms",
    "equidistant_slices",
    "PUBLISHED_PARAMETERS",
    "safe_rotate",
    "summary",
    "tta_views",
]

NAME = "stoic_hal9000"
VERSION = "1.0.0"
DESCRIPTION = (
    "STOIC2021 hal9000: 5 MobileNetV3-Large + 5 ResNet-18 on 32 slices, top-5 slice pooling, "
    "nine test-time views (thesis 4.3.3, Table 4.1)"
)

NetworkKind = Literal["mobilenet_v3_large", "resnet18"]
IMAGE, SLICES, RECORD = "image", "slices", "record"


@dataclass(frozen=True)
class HalConfig:
    """Networks and input of the member; the defaults are what HAL's inference code ran.

    Attributes
    ----------
    mobilenets, resnets : int
        Models per architecture (5 and 5; HAL ``process.py``).
    mobilenet_width_mult : float
        MobileNetV3 width multiplier (1.0; smaller only for tests).
    resnet_widths : tuple of 4 int
        ResNet-18 stage widths (64, 128, 256, 512; smaller only for tests).
    slices : int
        Slices per series (32; HAL ``preprocess_tta.py``).
    step_divisor : int
        The slice step is ``N // step_divisor`` (33).
    top_k : int
        Largest slice values averaged per feature (5; HAL ``example_model.py``).
    window_hu : tuple of float
        HU window (level -600, width 1500).
    resize : int
        Side after the first resize (256).
    crop : int
        Side of the centre crop, of the views and of the corner-crop frame (224).
    corner_crop : int
        Side of the four corner crops (166).
    rotations_deg : tuple of float
        Rotations of the centre crop (-5, -10, +5).
    """

    mobilenets: int = 5
    resnets: int = 5
    mobilenet_width_mult: float = 1.0
    resnet_widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    slices: int = 32
    step_divisor: int = 33
    top_k: int = 5
    window_hu: tuple[float, float] = (-1350.0, 150.0)
    resize: int = 256
    crop: int = 224
    corner_crop: int = 166
    rotations_deg: tuple[float, ...] = (-5.0, -10.0, 5.0)

    def __post_init__(self) -> None:
        if min(self.mobilenets, self.resnets) < 0 or self.mobilenets + self.resnets < 1:
            raise ValueError(f"need at least one network, got {self.mobilenets} + {self.resnets}")
        if not 1 <= self.top_k <= self.slices or self.step_divisor < 1:
            raise ValueError(f"need 1 <= top_k <= slices and a positive divisor, got {self}")
        if not 1 <= self.corner_crop <= self.crop <= self.resize:
            raise ValueError(f"need corner_crop <= crop <= resize, got {self.corner_crop}, {self.crop}, {self.resize}")
        if not self.window_hu[0] < self.window_hu[1]:
            raise ValueError(f"window must be increasing, got {self.window_hu}")

    @property
    def kinds(self) -> tuple[NetworkKind, ...]:
        """Architecture of each network in ensemble order (MobileNets first, as HAL's model list)."""
        mobile: NetworkKind = "mobilenet_v3_large"
        resnet: NetworkKind = "resnet18"
        return (mobile,) * self.mobilenets + (resnet,) * self.resnets

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, for model cards."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HalConfig:
        """Inverse of :meth:`as_dict`."""
        return cls(
            mobilenets=int(data["mobilenets"]),
            resnets=int(data["resnets"]),
            mobilenet_width_mult=float(data["mobilenet_width_mult"]),
            resnet_widths=cast(tuple[int, int, int, int], tuple(int(v) for v in data["resnet_widths"])),
            slices=int(data["slices"]),
            step_divisor=int(data["step_divisor"]),
            top_k=int(data["top_k"]),
            window_hu=(float(data["window_hu"][0]), float(data["window_hu"][1])),
            resize=int(data["resize"]),
            crop=int(data["crop"]),
            corner_crop=int(data["corner_crop"]),
            rotations_deg=tuple(float(v) for v in data["rotations_deg"]),
        )


class SliceTopKNet(nn.Module):
    """A 2D backbone on every slice, the mean of each feature's ``top_k`` largest slice values, a linear layer.

    Module names (``net``, ``classifier``) are HAL's ``ExampleModel``'s.

    Parameters
    ----------
    backbone : torch.nn.Module
        ``(N, C, H, W) -> (N, num_features)`` pooled features.
    num_features : int
        Feature width (960 for MobileNetV3-Large, 512 for ResNet-18).
    out_channels : int
        Logits (2: index 0 severe, index 1 COVID-19).
    top_k : int
        Largest values averaged per feature (5).

    Raises
    ------
    ValueError
        For non-positive sizes.
    """

    def __init__(self, backbone: nn.Module, num_features: int, out_channels: int = 2, top_k: int = 5) -> None:
        super().__init__()
        if min(num_features, out_channels, top_k) < 1:
            raise ValueError(f"sizes must be positive, got {num_features}, {out_channels}, {top_k}")
        self.net = backbone
        self.num_features = num_features
        self.top_k = top_k
        self.classifier = nn.Linear(num_features, out_channels)

    def pool(self, features: Tensor) -> Tensor:
        """``(B, N, F)`` slice features to ``(B, F)``: mean of the ``top_k`` largest per feature."""
        pooled: Tensor = torch.topk(features, self.top_k, dim=1).values.mean(1)
        return pooled

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``(B, out_channels)`` of slice stacks ``(B, N, C, H, W)``.

        Raises
        ------
        ValueError
            For a tensor that is not 5-D or has fewer than ``top_k`` slices.
        """
        if images.ndim != 5 or images.shape[1] < self.top_k:
            raise ValueError(f"expected (B, N >= {self.top_k}, C, H, W) slice stacks, got {tuple(images.shape)}")
        b, n = images.shape[:2]
        features = self.net(images.reshape(b * n, *images.shape[2:])).reshape(b, n, self.num_features)
        logits: Tensor = self.classifier(self.pool(features))
        return logits


def build_network(kind: NetworkKind, config: HalConfig) -> SliceTopKNet:
    """One ensemble network of ``kind`` with freshly initialised weights.

    Raises
    ------
    ValueError
        For an unknown kind.
    """
    backbone: MobileNetV3Large | ResNet
    if kind == "mobilenet_v3_large":
        backbone = MobileNetV3Large(3, None, width_mult=config.mobilenet_width_mult)
    elif kind == "resnet18":
        backbone = ResNet(2, 3, None, block="basic", layers=(2, 2, 2, 2), widths=config.resnet_widths)
    else:
        raise ValueError(f"unknown hal9000 network {kind!r}")
    return SliceTopKNet(backbone, backbone.num_features, 2, config.top_k)


def equidistant_slices(count: int, slices: int = 32, divisor: int = 33) -> np.ndarray:
    """HAL's slice indices: ``range(0, count, count // divisor)[:slices]`` (step 1 when that is 0).

    Raises
    ------
    ValueError
        For an empty series.
    """
    if count < 1:
        raise ValueError("a series without slices")
    step = max(count // divisor, 1)
    return np.arange(0, count, step)[:slices]


class SampleEquidistantSlicesd(MapTransform):
    """Keep :func:`equidistant_slices` of the array (z first); indices and step recorded."""

    def __init__(self, keys: Sequence[str], slices: int, divisor: int) -> None:
        super().__init__(keys)
        self.slices, self.divisor = slices, divisor

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Arrays of at most ``slices`` slices."""
        d = dict(data)
        count = np.asarray(d[self.first_key(d)]).shape[0]
        chosen = equidistant_slices(count, self.slices, self.divisor)
        for key in self.key_iterator(d):
            d[key] = np.asarray(d[key])[chosen]
        d[RECORD] = {**d.get(RECORD, {}), "slices": tuple(int(i) for i in chosen), "step": count // self.divisor}
        return d


class WindowMinMaxUint8d(MapTransform):
    """Clip to the window, min-max over the whole stack, ``* 255`` truncated to uint8 (HAL ``tta_first``)."""

    def __init__(self, keys: Sequence[str], window: tuple[float, float]) -> None:
        super().__init__(keys)
        self.low, self.high = window

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """uint8 stacks."""
        d = dict(data)
        for key in self.key_iterator(d):
            clipped = np.clip(np.asarray(d[key], dtype=np.float64), self.low, self.high)
            low, high = float(clipped.min()), float(clipped.max())
            if high <= low:
                raise MemberUnavailable("the sampled slices are uniform after windowing; hal9000 cannot normalise them")
            d[key] = ((clipped - low) / (high - low) * 255.0).astype(np.uint8)
        return d


def _bilinear(images: Tensor, size: int) -> Tensor:
    """OpenCV ``INTER_LINEAR`` resize of ``(N, C, H, W)`` to ``size x size`` (half-pixel centres, no antialiasing)."""
    resized: Tensor = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return resized


class ResizeSlicesd(MapTransform):
    """albumentations ``Resize(size, size)`` on uint8 slices: bilinear, rounded back to uint8."""

    def __init__(self, keys: Sequence[str], size: int) -> None:
        super().__init__(keys)
        self.size = size

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """uint8 stacks of ``size x size``."""
        d = dict(data)
        for key in self.key_iterator(d):
            stack = torch.from_numpy(np.asarray(d[key], dtype=np.float32))[:, None]
            resized = _bilinear(stack, self.size)[:, 0]
            d[key] = torch.clamp(torch.floor(resized + 0.5), 0, 255).to(torch.uint8).numpy()
        return d


class ToNormalisedTensord(MapTransform):
    """``Normalize(mean=0.5, std=0.5)`` of uint8 grey slices, repeated to 3 channels: ``(N, 3, H, W)`` float32."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Tensors in [-1, 1]."""
        d = dict(data)
        for key in self.key_iterator(d):
            grey = torch.from_numpy(np.asarray(d[key], dtype=np.float32)) / 255.0
            d[key] = ((grey - 0.5) / 0.5)[:, None].expand(-1, 3, -1, -1).contiguous()
        return d


def build_transforms(config: HalConfig) -> Compose:
    """The chain of the module docstring on a dict with ``image`` (HU ``[z, y, x]``)."""
    return Compose(
        [
            SampleEquidistantSlicesd([IMAGE], config.slices, config.step_divisor),
            WindowMinMaxUint8d([IMAGE], config.window_hu),
            ResizeSlicesd([IMAGE], config.resize),
            ToNormalisedTensord([IMAGE]),
        ]
    )


def safe_rotate(images: Tensor, angle_deg: float) -> Tensor:
    """albumentations 1.1.0 ``safe_rotate`` with zero border on ``(N, C, H, W)``.

    OpenCV's ``getRotationMatrix2D((w / 2, h / 2), angle, 1)`` shifted to the centre of an
    enlarged canvas of ``int(w cos + h sin)`` columns and ``int(w sin + h cos)`` rows,
    ``warpAffine`` (bilinear, pixel centres at integer coordinates, constant 0 outside), then a
    bilinear resize back to ``h x w``.  Positive angles turn counter-clockwise on screen.
    """
    h, w = images.shape[-2:]
    cx, cy = w / 2.0, h / 2.0
    folded = math.radians(abs(angle_deg) % 90)
    r_cols = w * math.cos(folded) + h * math.sin(folded)
    r_rows = w * math.sin(folded) + h * math.cos(folded)
    new_rows, new_cols = (int(r_cols), int(r_rows)) if abs(angle_deg) > 90 else (int(r_rows), int(r_cols))
    alpha, beta = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    shift_x = (1 - alpha) * cx - beta * cy + new_cols / 2.0 - cx
    shift_y = beta * cx + (1 - alpha) * cy + new_rows / 2.0 - cy
    ys, xs = torch.meshgrid(
        torch.arange(new_rows, dtype=torch.float64), torch.arange(new_cols, dtype=torch.float64), indexing="ij"
    )
    dx, dy = xs - shift_x, ys - shift_y
    source_x = alpha * dx - beta * dy
    source_y = beta * dx + alpha * dy
    grid = torch.stack((2.0 * source_x / (w - 1) - 1.0, 2.0 * source_y / (h - 1) - 1.0), dim=-1)
    grid = grid.to(images.dtype)[None].expand(images.shape[0], -1, -1, -1)
    rotated = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    resized: Tensor = F.interpolate(rotated, size=(h, w), mode="bilinear", align_corners=False)
    return resized


def tta_views(slices: Tensor, config: HalConfig) -> list[tuple[str, Tensor]]:
    """The nine views of HAL ``process.py`` (module docstring), as ``(name, (N, C, H, W))`` pairs."""
    size, corner, crop = slices.shape[-1], config.corner_crop, config.crop
    offset = crop - corner
    views: list[tuple[str, Tensor]] = [("original", slices)]
    for row, column in ((0, 0), (offset, offset), (0, offset), (offset, 0)):
        part = slices[..., row : row + corner, column : column + corner]
        views.append((f"crop_r{row}_c{column}", _bilinear(part, crop)))
    start = (size - crop) // 2
    centre = slices[..., start : start + crop, start : start + crop]
    views.append(("centre", centre))
    views.extend((f"rotate_{angle:+g}", safe_rotate(centre, angle)) for angle in config.rotations_deg)
    return views


@dataclass(frozen=True)
class HalInput:
    """The normalised slice stack ``(N, 3, resize, resize)`` and what was done (``record``, ``notes``)."""

    slices: Tensor
    record: Mapping[str, Any]
    notes: tuple[str, ...]


class Hal9000Member:
    """The hal9000 member: its networks, input construction and nine-view averaging.

    Parameters
    ----------
    networks : sequence of SliceTopKNet
        In :attr:`HalConfig.kinds` order.
    config : HalConfig
        Architecture and input.
    card : mapping
        Model card (``"demo": true`` for generated weights).
    device : torch.device or str, optional
        Where the networks run (CPU by default); the views are made on the host, as the authors'
        OpenCV code made them, and copied there.

    Raises
    ------
    ValueError
        If the number of networks differs from the configuration.
    """

    NAME: ClassVar[str] = NAME
    VERSION: ClassVar[str] = VERSION
    DESCRIPTION: ClassVar[str] = DESCRIPTION

    def __init__(
        self,
        networks: Sequence[SliceTopKNet],
        config: HalConfig,
        card: Mapping[str, Any],
        *,
        device: torch.device | str | None = None,
    ) -> None:
        if len(networks) != len(config.kinds):
            raise ValueError(f"{len(networks)} networks for a configuration of {len(config.kinds)}")
        self.name = NAME
        self.config = config
        self.card: dict[str, Any] = dict(card)
        self.device = torch.device(device or "cpu")
        self.networks = [place_network(network.eval().requires_grad_(False), self.device) for network in networks]

    @staticmethod
    def make_card(config: HalConfig, *, demo: bool, **provenance: Any) -> dict[str, Any]:
        """A model card: configuration, output definition, provenance."""
        return {
            "format": MEMBER_CARD_FORMAT,
            "member": NAME,
            "version": VERSION,
            "description": DESCRIPTION,
            "config": config.as_dict(),
            "networks": list(config.kinds),
            "output": "mean over networks and 9 views of sigmoid(logits); index 1 = P(COVID-19), index 0 = P(severe)",
            "source": "HAL inference/process.py, cnn_baseline/preprocess_tta.py, trainers/example_model.py",
            "demo": demo,
            **provenance,
        }

    @classmethod
    def parameter_count(cls, config: HalConfig | None = None) -> int:
        """Parameters of all networks (full size: 5 x 2 973 874 + 5 x 11 177 538), on the meta device."""
        config = config or HalConfig()
        with torch.device("meta"):
            return sum(count_parameters(build_network(kind, config)) for kind in config.kinds)

    @classmethod
    def demo(cls, seed: int, *, device: torch.device | str | None = None, **small_overrides: Any) -> Hal9000Member:
        """Generated, deterministic, untrained weights (card ``"demo": true``) on ``device``: never clinical.

        Network ``i`` gets its architecture's initialisation under torch seed ``1000 * seed + i``
        (the caller's random state is untouched).  ``small_overrides`` are :class:`HalConfig`
        fields (e.g. ``mobilenets=1, resnets=1, mobilenet_width_mult=0.25``).
        """
        config = HalConfig(**small_overrides)
        networks = []
        for i, kind in enumerate(config.kinds):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1000 * seed + i)
                networks.append(build_network(kind, config))
        card = cls.make_card(
            config,
            demo=True,
            seed=seed,
            provenance="generated demonstration weights: never trained, no clinical meaning",
        )
        return cls(networks, config, card, device=device)

    @classmethod
    def from_safetensors(cls, path: Path | str, *, device: torch.device | str | None = None) -> Hal9000Member:
        """Load a file written by :meth:`save` (network ``i`` under ``net{i}.``), to run on ``device``.

        Raises
        ------
        ValueError
            For a file of another member or format, or tensors that do not fit the card.
        """
        tensors, card = read_member_file(Path(path), NAME)
        config = HalConfig.from_dict(card["config"])
        networks = []
        for i, kind in enumerate(config.kinds):
            network = build_network(kind, config)
            network.load_state_dict(prefixed(tensors, f"net{i}"), strict=True)
            networks.append(network)
        return cls(networks, config, card, device=device)

    def save(self, path: Path | str) -> Path:
        """Write all networks and the card to one safetensors file."""
        tensors = {f"net{i}.{k}": v for i, net in enumerate(self.networks) for k, v in net.state_dict().items()}
        return write_member_file(Path(path), tensors, self.card)

    def preprocess(self, inputs: MemberInputs) -> HalInput:
        """The normalised ``(slices, 3, 256, 256)`` stack of one series (module docstring).

        Raises
        ------
        MemberUnavailable
            For fewer slices than ``top_k`` or a uniform image.
        """
        count = inputs.volume.hu.shape[0]
        if count < self.config.top_k:
            raise MemberUnavailable(f"{count} slices; hal9000 pools the top {self.config.top_k} of its slices")
        try:
            out = cast(dict[Hashable, Any], build_transforms(self.config)({IMAGE: inputs.volume.hu}))
        except RuntimeError as error:  # MONAI's Compose wraps a transform's exception; unwrap ours
            if isinstance(error.__cause__, MemberUnavailable):
                raise error.__cause__ from None
            raise
        notes = []
        if count < self.config.step_divisor:
            notes.append(
                f"{count} slices (< {self.config.step_divisor}): the authors' slice step would be 0; every slice used"
            )
        return HalInput(slices=out[IMAGE], record=dict(out[RECORD]), notes=tuple(notes))

    def network_probabilities(self, prepared: HalInput) -> Tensor:
        """``(networks, 2)`` float32 sigmoid outputs on the CPU, each the mean over the nine views."""
        views = [to_device(view[None], self.device) for _, view in tta_views(prepared.slices, self.config)]
        rows = []
        with inference_context(self.device, bf16=False):
            for placed in self.networks:
                network = folded_for_inference(placed)  # one copy at a time (models.device)
                rows.append(torch.stack([torch.sigmoid(network(view).float())[0] for view in views]).mean(0))
        return torch.stack(rows).cpu()

    def predict(self, inputs: MemberInputs) -> MemberOutput:
        """P(COVID-19) (index 1) and P(severe) (index 0), averaged over networks and views."""
        prepared = self.preprocess(inputs)
        per_network = self.network_probabilities(prepared).double()
        mean = per_network.mean(0)
        details: dict[str, float] = {
            "slices": float(prepared.slices.shape[0]),
            "views": 1.0 + 4 + 1 + len(self.config.rotations_deg),
        }
        for kind in ("mobilenet_v3_large", "resnet18"):
            chosen = [i for i, k in enumerate(self.config.kinds) if k == kind]
            if chosen:
                details[f"{kind}_p_covid"] = float(per_network[chosen, 1].mean())
                details[f"{kind}_p_severe"] = float(per_network[chosen, 0].mean())
        notes = prepared.notes
        if self.card.get("demo"):
            notes = ("demonstration weights: the probabilities have no clinical meaning", *notes)
        return MemberOutput(p_covid=float(mean[1]), p_severe=float(mean[0]), notes=notes, details=details)


#: torchvision's published counts of the two backbones *with* their ImageNet heads; hal9000
#: replaces those heads by ``Identity`` and adds ``Linear(features, 2)`` (tests check the difference).
PUBLISHED_PARAMETERS: dict[NetworkKind, int] = {"mobilenet_v3_large": 5_483_032, "resnet18": 11_689_512}


def summary(config: HalConfig | None = None) -> list[dict[str, Any]]:
    """Parameters and FLOPs of one network of each kind for one view of ``slices x 3 x crop x crop``.

    A prediction runs every network on nine views (the first at 256 x 256, the others at 224 x
    224), so ``forward_passes_per_prediction`` is 9 x the networks of that kind.
    """
    config = config or HalConfig()
    counts: dict[NetworkKind, int] = {"mobilenet_v3_large": config.mobilenets, "resnet18": config.resnets}
    rows = []
    for kind, count in counts.items():
        with torch.device("meta"):
            network = build_network(kind, config)
        rows.append(
            summary_row(
                f"{NAME}_{kind}",
                network,
                (config.slices, 3, config.crop, config.crop),
                forward_passes=9 * count,
                source=(
                    f"HAL trainers/example_model.py: torchvision {kind} without its head + Linear(features, 2) + "
                    f"top-5 pooling; torchvision publishes {PUBLISHED_PARAMETERS[kind]} with the ImageNet head"
                ),
            )
        )
    return rows
