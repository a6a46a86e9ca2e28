"""Initialise a 3D network from 2D weights by inflating every kernel along depth (thesis 3.3.3).

"The 3D models were initialized with the same weights by inflating the pre-trained 2D
convolution kernels to 3D" (T§3.3.3, "Pre-training"; Carreira & Zisserman's I3D recipe).  A 2D
kernel ``w`` of shape ``(O, I, kh, kw)`` becomes ``w / kd`` repeated ``kd`` times along depth, so
that on a volume that is constant along depth the 3D convolution returns exactly the 2D one;
kernels of depth 1 (the 1x7x7 DenseNet stem, all 1x1x1 convolutions) take the 2D kernel as is.
BatchNorm parameters and buffers are copied.  The classification head is not taken from the 2D
weights: the thesis replaced ImageNet's 1000-class layer with a new CO-RADS head.

Keys match by name, because the zoo's 2D and 3D networks share torchvision's module names; a
leading ``backbone.`` (the zoo's slice-wise 2D wrapper) is ignored, so both torchvision ImageNet
state dicts and the zoo's own 2D networks can be inflated.

Exactness at the depth borders depends on the depth padding of the 3D network.  The inflated
DenseNet replicates slices at the borders, so a volume of one repeated slice gives the 2D
features at *every* depth position.  ResNet and I3D pad depth with zeros, as their references
do, so only positions whose receptive field stays inside the volume reproduce the 2D features.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["HEAD_PREFIXES", "InflationReport", "inflate_into", "inflate_state_dict"]

#: Prefixes of the zoo's classification heads (torchvision names), never taken from 2D weights.
HEAD_PREFIXES: tuple[str, ...] = ("classifier.", "fc.")


@dataclass(frozen=True)
class InflationReport:
    """Which entries of a 3D state dict came from the 2D weights, and which did not.

    Attributes
    ----------
    inflated : tuple of str
        Kernels inflated along depth (depth > 1) or given a depth axis of 1.
    copied : tuple of str
        Entries copied unchanged (BatchNorm parameters and buffers).
    kept : tuple of str
        Entries left as initialised (the head, or anything absent from the 2D weights).
    """

    inflated: tuple[str, ...]
    copied: tuple[str, ...]
    kept: tuple[str, ...]


def _normalised(state_2d: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The 2D entries by name, without the slice-wise wrapper's ``backbone.`` prefix."""
    return {key.removeprefix("backbone."): value for key, value in state_2d.items()}


def _inflate(key: str, source: Tensor, target: Tensor) -> tuple[Tensor, bool]:
    """The 3D value for ``key`` and whether it was inflated (True) or copied (False)."""
    if source.shape == target.shape:
        return source.detach().clone().to(target.dtype), False
    if source.ndim == 4 and target.ndim == 5 and source.shape[:2] == target.shape[:2]:
        if source.shape[2:] == target.shape[3:]:
            depth = target.shape[2]
            kernel = source.detach().to(target.dtype).unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth
            return kernel, True
    raise ValueError(f"{key}: the 2D shape {tuple(source.shape)} cannot inflate to {tuple(target.shape)}")


def _plan(
    state_2d: Mapping[str, Tensor], model_3d: nn.Module, exclude: Collection[str]
) -> tuple[dict[str, Tensor], InflationReport]:
    """The 3D values that come from ``state_2d``, and the report of where each entry came from."""
    source = _normalised(state_2d)
    values: dict[str, Tensor] = {}
    inflated: list[str] = []
    copied: list[str] = []
    kept: list[str] = []
    for key, target in model_3d.state_dict().items():
        if key not in source or any(key.startswith(prefix) for prefix in exclude):
            kept.append(key)
            continue
        values[key], was_inflated = _inflate(key, source[key], target)
        (inflated if was_inflated else copied).append(key)
    return values, InflationReport(tuple(inflated), tuple(copied), tuple(kept))


def inflate_state_dict(
    state_2d: Mapping[str, Tensor], model_3d: nn.Module, *, exclude: Collection[str] = HEAD_PREFIXES
) -> dict[str, Tensor]:
    """A partial state dict for ``model_3d`` with every kernel inflated from ``state_2d``.

    Parameters
    ----------
    state_2d : mapping of str to torch.Tensor
        Weights of the corresponding 2D network (zoo or torchvision names).
    model_3d : torch.nn.Module
        The 3D network; only its state-dict names and shapes are read.
    exclude : collection of str
        Name prefixes never taken from ``state_2d`` (the classification heads by default).

    Returns
    -------
    dict of str to torch.Tensor
        Values for the 3D entries that have a 2D counterpart; entries without one are absent.

    Raises
    ------
    ValueError
        If a 2D entry exists under a 3D name but neither matches its shape nor inflates to it
        (for example a different number of channels).
    """
    return _plan(state_2d, model_3d, exclude)[0]


def inflate_into(
    model_3d: nn.Module, state_2d: Mapping[str, Tensor], *, exclude: Collection[str] = HEAD_PREFIXES
) -> InflationReport:
    """Load inflated 2D weights into ``model_3d`` in place and report what came from where.

    Parameters
    ----------
    model_3d : torch.nn.Module
        The 3D network to initialise.
    state_2d : mapping of str to torch.Tensor
        Weights of the corresponding 2D network.
    exclude : collection of str
        Name prefixes left as initialised (the classification heads by default).

    Returns
    -------
    InflationReport
        Inflated, copied and kept entry names; callers that expect full coverage check that
        ``kept`` holds only the head.

    Raises
    ------
    ValueError
        As :func:`inflate_state_dict`.
    """
    values, report = _plan(state_2d, model_3d, exclude)
    with torch.no_grad():
        model_3d.load_state_dict(values, strict=False)
    return report
