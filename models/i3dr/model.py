"""The networks of I3Dr (thesis section 2.3.1): models A and B, one class, and their backbones.

Model A maps a lung-masked CT ``x`` to a patient estimate, ``y_A = W_A f_A(x) + b_A``.  Model B
processes the ``L`` lobe images of a CT with one shared feature extractor, sums the feature
vectors and applies its linear layer, ``y_B = W_B sum_l f_B(x_l) + b_B`` (T§2.3.1, "Lobe level
model", training).  At inference the sum and the linear layer are swapped, which leaves ``y_B``
unchanged and gives one estimate per lobe, ``y_B^l = W_B f_B(x_l) + b_B / L`` with
``y_B = sum_l y_B^l`` (T§2.3.1, "Inference").

Both are :class:`RegionSumRegressor`: a backbone applied to each of ``num_regions`` regions, the
features summed, one linear head.  Model A is the case ``num_regions = 1`` (the sum is the
identity and ``b / 1 = b``), model B the case ``num_regions = 5``; the bag-of-digits experiment
of T§2.4.1 is the same class with a 2D extractor and ``num_regions`` = bag size.

Backbones are named by a :class:`BackboneSpec`, so that a weights file's model card can say how
to rebuild them: ``inception_v1_3d`` is I3D without its final layer (T§2.4.5; 1024 features,
12 287 264 parameters, models spec section 5), ``small_3d`` a few strided convolutions for CPU
tests and benchmarks.  Heads are ``Linear(1024 -> 7)`` for the seven outputs of T§2.4.3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from models.findings import LOBE_NAMES
from models.zoo import build_features

__all__ = [
    "BACKBONES",
    "NUM_LOBES",
    "OUTPUTS",
    "OUTPUT_UNITS",
    "BackboneSpec",
    "RegionSumRegressor",
    "SmallBackbone3d",
    "build_model_a",
    "build_model_b",
]

#: Outputs of both heads, in head order (T§2.4.3: PV, FPV, FEV1 and FVC pre/post
#: bronchodilator, DLCO); the names are those of result.json's ``i3dr`` entry.
OUTPUTS: tuple[str, ...] = ("pv_l", "fpv_l", "fev1_pre_l", "fev1_post_l", "fvc_pre_l", "fvc_post_l", "dlco")
#: Unit of each output (architecture spec: L, and mL/min/mmHg for DLCO).
OUTPUT_UNITS: Mapping[str, str] = MappingProxyType(
    {name: ("mL/min/mmHg" if name == "dlco" else "L") for name in OUTPUTS}
)
#: L = 5 regions for model B, one per anatomical lobe (T§2.3.1).
NUM_LOBES = len(LOBE_NAMES)
#: Backbone names a model card may use.
BACKBONES: tuple[str, ...] = ("inception_v1_3d", "small_3d")


class SmallBackbone3d(nn.Module):
    """A small 3D feature extractor: strided 3x3x3 convolutions with ReLU, global average pooling.

    It stands in for I3D where a full-size network cannot run (CPU tests, the benchmarks of
    T§2.4.2-2.4.3 reproduced on phantoms).  It has no normalisation layers on purpose: its
    features then do not depend on which images share a batch, whereas BatchNorm statistics over
    a batch of two scans (T§2.4.5) or of two lobe images (Algorithm 1) would change the output of
    a lobe with its batch mates.

    Parameters
    ----------
    in_channels : int
        Input channels (3: the CT replicated, T§2.4.5).
    widths : sequence of int
        Output channels of each stride-2 convolution; the last is the feature count.

    Raises
    ------
    ValueError
        For non-positive channel counts or no layer.
    """

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (8, 16, 32)) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if in_channels < 1 or not widths or min(widths) < 1:
            raise ValueError(f"need positive in_channels and widths, got {in_channels}, {widths}")
        layers: list[nn.Module] = []
        previous = in_channels
        for width in widths:
            layers += [nn.Conv3d(previous, width, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            previous = width
        self.layers = nn.Sequential(*layers)
        self.num_features = widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features ``(N, num_features)`` of inputs ``(N, C, D, H, W)``."""
        out: Tensor = self.layers(x).mean(dim=(2, 3, 4))
        return out


@dataclass(frozen=True)
class BackboneSpec:
    """A named backbone and its options: a factory that a model card can record.

    Attributes
    ----------
    name : str
        ``"inception_v1_3d"`` (I3D without its final layer, T§2.4.5) or ``"small_3d"``.
    options : mapping
        Keyword arguments: for I3D those of :func:`models.zoo.build_features` (e.g.
        ``gradient_checkpointing``); for ``small_3d`` those of :class:`SmallBackbone3d`.
    """

    name: str = "inception_v1_3d"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in BACKBONES:
            raise ValueError(f"unknown backbone {self.name!r}; known: {', '.join(BACKBONES)}")

    def __call__(self) -> nn.Module:
        """A freshly initialised backbone mapping ``(N, 3, D, H, W)`` to ``(N, num_features)``."""
        if self.name == "inception_v1_3d":
            return build_features("inception_v1_3d", in_channels=3, **dict(self.options))
        return SmallBackbone3d(in_channels=3, **dict(self.options))

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (tuples become lists)."""
        options = {k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()}
        return {"name": self.name, "options": options}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BackboneSpec:
        """Inverse of :meth:`as_dict`."""
        return cls(name=str(data["name"]), options=dict(data.get("options", {})))


class RegionSumRegressor(nn.Module):
    """A shared backbone on each region, features summed, one linear layer (T§2.3.1).

    Inputs are ``(N, R, C, *spatial)``: ``N`` scans (or bags), ``R = num_regions`` region images
    each.  :meth:`forward` is the training form ``W sum_r f(x_r) + b``; :meth:`region_outputs`
    the swapped inference form ``W f(x_r) + b / R``, whose sum over regions equals
    :meth:`forward` up to floating-point rounding.

    Parameters
    ----------
    backbone : torch.nn.Module
        Maps ``(M, C, *spatial)`` to ``(M, num_features)``.
    num_features : int
        Its feature count (1024 for I3D).
    num_outputs : int
        Outputs of the head (7 for I3Dr).
    num_regions : int
        Regions per scan: 1 for model A, 5 lobes for model B.

    Raises
    ------
    ValueError
        For non-positive sizes.
    """

    def __init__(self, backbone: nn.Module, num_features: int, num_outputs: int, num_regions: int) -> None:
        super().__init__()
        if min(num_features, num_outputs, num_regions) < 1:
            raise ValueError(
                f"sizes must be positive, got features {num_features}, outputs {num_outputs}, regions {num_regions}"
            )
        self.backbone = backbone
        self.head = nn.Linear(num_features, num_outputs)
        self.num_features = num_features
        self.num_outputs = num_outputs
        self.num_regions = num_regions

    def _check(self, x: Tensor) -> None:
        if x.ndim < 4 or x.shape[1] != self.num_regions:
            raise ValueError(f"expected (N, {self.num_regions}, C, ...) inputs, got {tuple(x.shape)}")

    def features(self, x: Tensor) -> Tensor:
        """Per-region features ``(N, R, num_features)``: the backbone on every region image."""
        self._check(x)
        n, r = x.shape[:2]
        out: Tensor = self.backbone(x.flatten(0, 1)).reshape(n, r, self.num_features)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Patient (bag) estimates ``(N, num_outputs)``: ``W sum_r f(x_r) + b`` (training form)."""
        out: Tensor = self.head(self.features(x).sum(dim=1))
        return out

    def outputs_from_features(self, features: Tensor) -> Tensor:
        """The swapped form on region features ``(..., F)``: ``W f_r + b / R``, shape ``(..., O)``.

        ``R`` is this model's ``num_regions``: the bias is split over the number of regions the
        model was trained with (T§2.3.1), so the outputs of a scan's ``R`` regions sum to the
        training-form output.  One region's output does not depend on the others, which is what
        lets T§2.4.1 evaluate a bag model on single digits.
        """
        if features.shape[-1] != self.num_features:
            raise ValueError(f"expected (..., {self.num_features}) features, got {tuple(features.shape)}")
        out: Tensor = F.linear(features, self.head.weight) + self.head.bias / self.num_regions
        return out

    def region_outputs(self, x: Tensor) -> Tensor:
        """Per-region estimates ``(N, R, num_outputs)`` (inference form, T§2.3.1)."""
        return self.outputs_from_features(self.features(x))


def _num_features(backbone: nn.Module) -> int:
    count = getattr(backbone, "num_features", None)
    if not isinstance(count, int):
        raise ValueError(f"backbone {type(backbone).__name__} has no integer num_features attribute")
    return count


def build_model_a(backbone: BackboneSpec | None = None, num_outputs: int = len(OUTPUTS)) -> RegionSumRegressor:
    """Model A: one lung-masked image per scan (T§2.3.1, "Patient level model")."""
    network = (backbone or BackboneSpec())()
    return RegionSumRegressor(network, _num_features(network), num_outputs, 1)


def build_model_b(backbone: BackboneSpec | None = None, num_outputs: int = len(OUTPUTS)) -> RegionSumRegressor:
    """Model B: five lobe images per scan through one shared backbone (T§2.3.1, "Lobe level model")."""
    network = (backbone or BackboneSpec())()
    return RegionSumRegressor(network, _num_features(network), num_outputs, NUM_LOBES)


def summary() -> list[dict[str, Any]]:
    """Rows for ``lungcds models summary``: models A and B at the T§2.4.4 input, built on the meta device.

    Both are the I3D backbone (the zoo's ``inception_v1_3d`` features) with one Linear(1024 -> 7)
    head (T§2.3.1); A runs once per CT on the lungs, B once per lobe.  Their reference count is
    computed, not published: chapter 2 prints none, so it is the I3D backbone counted from
    pytorch-i3d (:data:`models.zoo.catalog.I3D_BACKBONE_PARAMETERS`) plus that head.  Thesis Table
    3.3's 12.29 M already includes a 5-way head, so adding the I3Dr head to it would count a head twice.
    """
    import torch

    from models.zoo import count_flops, count_parameters
    from models.zoo.catalog import I3D_BACKBONE_PARAMETERS, ParameterReference

    reference = ParameterReference.computed(
        I3D_BACKBONE_PARAMETERS + 1024 * len(OUTPUTS) + len(OUTPUTS),
        "pytorch-i3d pytorch_i3d.py InceptionI3d without its logits (12 287 264, counted by the lungcds "
        "developers, models spec section 5) + Linear(1024 -> 7) of thesis 2.3.1; not published",
    )
    shape = [3, 240, 240, 240]
    rows: list[dict[str, Any]] = []
    with torch.device("meta"):
        networks = (("i3dr_model_a", build_model_a(), 1), ("i3dr_model_b", build_model_b(), NUM_LOBES))
        for name, network, passes in networks:
            params = count_parameters(network)
            rows.append(
                {
                    "name": name,
                    "parameters": params,
                    "input_shape": shape,
                    "flops": count_flops(network.backbone, shape),
                    "forward_passes_per_prediction": passes,
                    **reference.fields(params),
                    "source": "thesis 2.3.1: I3D features (Table 3.3 prints 12.29 M with a 5-way head) "
                    "+ Linear(1024 -> 7)",
                }
            )
    return rows
