"""The fourteen architectures of thesis Table 3.3 by name, and their published properties.

``build(name)`` returns the plain ``nn.Module``; ``summary()`` counts parameters and FLOPs at the
table's input (3 x 128 x 240 x 240, i.e. 128 axial slices of 240 x 240 after the preprocessing
of T§3.3.4) with the table's 5-output head (the architecture search used a categorical 5-class
output, T§3.3.2 and Fig. 3.1) and compares them with the published values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from models.zoo.densenet import DENSENET_CONFIGS, DenseNet
from models.zoo.flops import count_flops, count_parameters
from models.zoo.inception import InceptionV1
from models.zoo.resnet import RESNET_CONFIGS, ResNet
from models.zoo.slicewise import SliceMaxNet

__all__ = [
    "I3D_BACKBONE_PARAMETERS",
    "NO_REFERENCE",
    "TABLE_3_3",
    "TABLE_3_3_INPUT_SHAPE",
    "TABLE_3_3_OUTPUTS",
    "ParameterReference",
    "PublishedProperties",
    "ReferenceKind",
    "build",
    "build_features",
    "names",
    "summary",
]

#: Input of one sample in Table 3.3: 3 channels, 128 axial slices of 240 x 240 (T§3.3.4).
TABLE_3_3_INPUT_SHAPE: tuple[int, int, int, int] = (3, 128, 240, 240)
#: Outputs of the head in Table 3.3 (5 CO-RADS classes in the architecture search, T§3.3.2).
TABLE_3_3_OUTPUTS = 5
#: I3D without its final layer: pytorch-i3d ``InceptionI3d`` after ``replace_logits(5)`` has
#: 12 292 389 parameters, less its 1024 x 5 + 5 logits.  Counted by the lungcds developers from the
#: authors' code (models spec sections 2 and 5); no publication prints it (Table 3.3's 12.29 M is the
#: same network *with* a 5-way head).
I3D_BACKBONE_PARAMETERS = 12_287_264

#: Where a reference parameter count comes from: printed in a publication (thesis, paper, the
#: library's documentation), counted by the lungcds developers from the authors' code, or none.
ReferenceKind = Literal["published", "computed_from_authors_code", "none"]


@dataclass(frozen=True)
class ParameterReference:
    """The count a row of ``lungcds models summary`` is compared with, and where it comes from.

    Attributes
    ----------
    count : int or None
        The reference parameter count; ``None`` exactly when ``kind`` is ``"none"``.
    kind : {"published", "computed_from_authors_code", "none"}
        ``"published"``: printed by the source (e.g. thesis Table 3.3); ``"computed_from_authors_code"``:
        counted by the lungcds developers from the authors' public code, never printed by them.
    source : str or None
        The table and section, or the authors' file the count was made from.

    Raises
    ------
    ValueError
        When ``count`` and ``kind`` disagree, or a count has no source.
    """

    count: int | None = None
    kind: ReferenceKind = "none"
    source: str | None = None

    def __post_init__(self) -> None:
        if (self.count is None) != (self.kind == "none"):
            raise ValueError(f"a reference of kind {self.kind!r} needs a count exactly when it is not 'none'")
        if self.count is not None and not self.source:
            raise ValueError("a reference count needs its source")

    @classmethod
    def published(cls, count: int, source: str) -> ParameterReference:
        """A count printed in ``source`` (a table or section of the thesis or paper)."""
        return cls(count, "published", source)

    @classmethod
    def computed(cls, count: int, source: str) -> ParameterReference:
        """A count the lungcds developers computed from the authors' code in ``source``."""
        return cls(count, "computed_from_authors_code", source)

    def fields(self, parameters: int) -> dict[str, Any]:
        """Summary-row keys comparing ``parameters`` with this reference.

        ``published_parameters`` (kept for older readers) is the count only when it was published;
        ``parameters_relative_difference`` is ``(parameters - count) / count`` for any count.
        """
        return {
            "reference_parameters": self.count,
            "reference_parameters_kind": self.kind,
            "reference_parameters_source": self.source,
            "published_parameters": self.count if self.kind == "published" else None,
            "parameters_relative_difference": None if self.count is None else _relative(parameters, self.count),
        }


#: A row with nothing to compare its count with.
NO_REFERENCE = ParameterReference()


@dataclass(frozen=True)
class PublishedProperties:
    """One row of thesis Table 3.3 ("Architecture properties").

    Attributes
    ----------
    parameters_millions : float
        Parameter count (x 10^6) as printed, two decimals.
    inference_ms : float
        Mean single-sample inference time on an RTX 2080 Ti over 50 passes (T§3.3.7).
    inference_sd_ms : float
        Its standard deviation.
    flops_e11 : float
        FLOP count (x 10^11) as printed, two decimals.
    """

    parameters_millions: float
    inference_ms: float
    inference_sd_ms: float
    flops_e11: float


#: Thesis Table 3.3, by zoo name.
TABLE_3_3: dict[str, PublishedProperties] = {
    "densenet121_2d": PublishedProperties(6.88, 151.09, 8.76, 8.43),
    "densenet169_2d": PublishedProperties(12.33, 255.21, 17.47, 9.93),
    "densenet201_2d": PublishedProperties(17.87, 326.30, 3.81, 12.70),
    "inception_v1_2d": PublishedProperties(5.59, 40.92, 10.16, 4.47),
    "resnet18_2d": PublishedProperties(11.17, 8.95, 1.25, 5.52),
    "resnet34_2d": PublishedProperties(21.27, 13.53, 1.42, 11.06),
    "resnet50_2d": PublishedProperties(23.47, 35.91, 10.50, 12.39),
    "densenet121_3d": PublishedProperties(11.24, 25.07, 8.49, 10.88),
    "densenet169_3d": PublishedProperties(18.54, 31.49, 11.48, 11.30),
    "densenet201_3d": PublishedProperties(25.33, 38.48, 15.65, 12.14),
    "inception_v1_3d": PublishedProperties(12.29, 36.74, 16.75, 5.13),
    "resnet18_3d": PublishedProperties(33.21, 28.33, 31.31, 6.08),
    "resnet34_3d": PublishedProperties(63.52, 22.56, 14.37, 9.29),
    "resnet50_3d": PublishedProperties(46.21, 31.09, 8.49, 7.39),
}


#: The classes a family builder returns; all expose ``num_features``.
_Network = DenseNet | ResNet | InceptionV1


def _densenet(depth: int) -> Callable[..., _Network]:
    def make(spatial_dims: int, in_channels: int, out_channels: int | None, **overrides: Any) -> _Network:
        options: dict[str, Any] = {"block_config": DENSENET_CONFIGS[depth], **overrides}
        return DenseNet(spatial_dims, in_channels, out_channels, **options)

    return make


def _resnet(depth: int) -> Callable[..., _Network]:
    block, layers = RESNET_CONFIGS[depth]

    def make(spatial_dims: int, in_channels: int, out_channels: int | None, **overrides: Any) -> _Network:
        options: dict[str, Any] = {"block": block, "layers": layers, **overrides}
        return ResNet(spatial_dims, in_channels, out_channels, **options)

    return make


def _inception(spatial_dims: int, in_channels: int, out_channels: int | None, **overrides: Any) -> _Network:
    # Dropout before the last layer: 0.5 in pytorch-i3d (3D), 0.2 in torchvision GoogLeNet (2D).
    options: dict[str, Any] = {"dropout": 0.5 if spatial_dims == 3 else 0.2, **overrides}
    return InceptionV1(spatial_dims, in_channels, out_channels, **options)


_FAMILIES: dict[str, Callable[..., _Network]] = {
    "densenet121": _densenet(121),
    "densenet169": _densenet(169),
    "densenet201": _densenet(201),
    "inception_v1": _inception,
    "resnet18": _resnet(18),
    "resnet34": _resnet(34),
    "resnet50": _resnet(50),
}


def names() -> list[str]:
    """The fourteen architecture names, 3D first, in the order of Table 3.3 within each."""
    return [f"{family}_{dims}" for dims in ("3d", "2d") for family in _FAMILIES]


def _split(name: str) -> tuple[str, int]:
    family, _, dims = name.rpartition("_")
    if family not in _FAMILIES or dims not in ("2d", "3d"):
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(names())}")
    return family, int(dims[0])


def build(name: str, *, num_outputs: int = TABLE_3_3_OUTPUTS, in_channels: int = 3, **overrides: Any) -> nn.Module:
    """Build a network of Table 3.3 by name, with freshly initialised weights.

    3D networks take ``(N, C, D, H, W)`` volumes; the 2D ones take the same volumes and run their
    2D backbone on each of the ``D`` axial slices, reduce with a global max over slices and apply
    one linear layer (T§3.3.2).  Build under ``with torch.device("meta"):`` to get shapes only.

    Parameters
    ----------
    name : str
        One of :func:`names`.
    num_outputs : int
        Outputs of the final linear layer: 5 in the architecture search (the default), 1 for
        the continuous CO-RADS output (T§3.3.3).
    in_channels : int
        Input channels (3: CT, lesion map, zeros).
    **overrides
        Keyword arguments of the underlying class (:class:`~models.zoo.densenet.DenseNet`,
        :class:`~models.zoo.resnet.ResNet`, :class:`~models.zoo.inception.InceptionV1`) that
        replace the published configuration, e.g. ``gradient_checkpointing=True`` or, for small
        experiments, ``growth_rate`` and ``block_config``.

    Returns
    -------
    torch.nn.Module
        The network.

    Raises
    ------
    ValueError
        For an unknown name or invalid sizes; ``TypeError`` for an unknown override.
    """
    family, spatial_dims = _split(name)
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be positive, got {num_outputs}")
    make = _FAMILIES[family]
    if spatial_dims == 3:
        return make(3, in_channels, num_outputs, **overrides)
    backbone = make(2, in_channels, None, **overrides)
    return SliceMaxNet(backbone, backbone.num_features, num_outputs)


def build_features(name: str, in_channels: int = 3, **overrides: Any) -> nn.Module:
    """The network of ``name`` without its final layer: ``forward`` returns pooled features.

    For ``inception_v1_3d`` this is the I3D backbone (1024 features; :data:`I3D_BACKBONE_PARAMETERS`,
    counted from the authors' code) reused by I3Dr (T§2.3.1) and the STOIC baseline (T§4.2.5).
    For a 2D name it is the 2D backbone, which maps slices ``(N, C, H, W)`` to features.

    Raises
    ------
    ValueError
        For an unknown name or invalid sizes.
    """
    family, spatial_dims = _split(name)
    return _FAMILIES[family](spatial_dims, in_channels, None, **overrides)


def _relative(value: float, published: float) -> float:
    return (value - published) / published


def summary() -> list[dict[str, Any]]:
    """Parameters, input shape and FLOPs of every architecture next to Table 3.3.

    Networks are built on the meta device (nothing is allocated or run).  ``parameters`` counts
    everything; ``parameters_table_convention`` leaves out BatchNorm for the 2D networks as the
    table did; relative differences are ``(ours - published) / published`` against the printed,
    two-decimal values (so up to about 0.07 % is rounding of the print alone).

    Returns
    -------
    list of dict
        One JSON-serialisable dict per name of :func:`names`.
    """
    rows: list[dict[str, Any]] = []
    for name in names():
        with torch.device("meta"):
            model = build(name, num_outputs=TABLE_3_3_OUTPUTS)
        published = TABLE_3_3[name]
        is_2d = name.endswith("_2d")
        params = count_parameters(model)
        table_params = count_parameters(model, include_batchnorm=not is_2d)
        flops = count_flops(model, TABLE_3_3_INPUT_SHAPE)
        rows.append(
            {
                "name": name,
                "spatial_dims": 2 if is_2d else 3,
                "input_shape": list(TABLE_3_3_INPUT_SHAPE),
                "num_outputs": TABLE_3_3_OUTPUTS,
                "parameters": params,
                "parameters_table_convention": table_params,
                "flops": flops,
                **ParameterReference.published(round(published.parameters_millions * 1e6), "thesis Table 3.3").fields(
                    table_params
                ),
                "published_flops": round(published.flops_e11 * 1e11),
                "published_inference_ms": published.inference_ms,
                "published_inference_sd_ms": published.inference_sd_ms,
                "flops_relative_difference": _relative(flops, published.flops_e11 * 1e11),
                "source": "thesis Table 3.3 (RTX 2080 Ti timings; FLOPs = 2 x MACs, models.zoo.flops)",
            }
        )
    return rows
