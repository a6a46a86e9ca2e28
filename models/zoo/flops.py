"""Parameter and FLOP counts under the convention that reproduces thesis Table 3.3.

The table's FLOPs are twice a ptflops-style count of multiply-accumulates (models spec section 2,
re-derived for all 14 networks), in which a forward pass costs, per call of a module:

* convolution: one MAC per weight per output position (``out.numel() * in/groups * prod(kernel)``),
  plus one per output element for a bias; a transposed convolution, one MAC per weight per
  *input* position (``in.numel() * out/groups * prod(kernel)``);
* linear: ``in_features`` MACs per output element, plus one per output element for a bias;
* batch normalisation: 2 per input element (1 without affine parameters);
* ``nn.ReLU`` modules: 1 per output element (functional ``F.relu`` calls are not modules and are
  not counted, as in the torchvision and pytorch-i3d code the thesis' counter saw);
* pooling modules (max, average, adaptive): 1 per input element.

Everything else (concatenation, addition, padding, ``mean``) costs nothing.  The count runs as
forward hooks on a copy of the network on ``torch.device("meta")``, which propagates shapes
without computing anything, so a full-size 3D DenseNet-201 is counted in well under a second.

Parameters are counted as the table did: all of them for 3D, and without the BatchNorm affine
parameters for 2D (the published 2D counts are reproduced only that way; perhaps BN was frozen
there and a trainable-parameter counter skipped it, which the thesis does not say).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.pooling import _AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd, _AvgPoolNd, _MaxPoolNd

__all__ = ["count_flops", "count_parameters"]

_POOLING = (_MaxPoolNd, _AvgPoolNd, _AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd)


def count_parameters(model: nn.Module, *, include_batchnorm: bool = True) -> int:
    """Number of parameters, optionally without those of BatchNorm layers.

    Parameters
    ----------
    model : torch.nn.Module
        Any network (meta-device networks are fine: only shapes are read).
    include_batchnorm : bool
        ``False`` leaves out BatchNorm weights and biases, as Table 3.3 did for the 2D networks.

    Returns
    -------
    int
        The count.
    """
    excluded: set[int] = set()
    if not include_batchnorm:
        excluded = {id(p) for m in model.modules() if isinstance(m, _BatchNorm) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in excluded)


def _macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    """Multiply-accumulates (or elementary operations) of one call of a counted module."""
    if isinstance(module, _ConvNd):
        out = output.numel()
        bias = out if module.bias is not None else 0
        if module.transposed:
            # Each input element is multiplied into a kernel for every output channel.
            return int(inputs[0].numel() * module.out_channels // module.groups * math.prod(module.kernel_size) + bias)
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        return int(out * per_output + bias)
    if isinstance(module, nn.Linear):
        out = output.numel()
        return int(out * module.in_features + (out if module.bias is not None else 0))
    if isinstance(module, _BatchNorm):
        return int(inputs[0].numel() * (2 if module.affine else 1))
    if isinstance(module, nn.ReLU):
        return int(output.numel())
    if isinstance(module, _POOLING):
        return int(inputs[0].numel())
    return 0


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass of one sample, under the Table 3.3 convention (module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        The network.  It is not run: a deep copy is moved to the meta device (unless it is
        there already), put in eval mode and traced with forward hooks.
    input_shape : sequence of int
        Shape of one sample without the batch axis, e.g. ``(3, 128, 240, 240)``.

    Returns
    -------
    int
        ``2 * MACs`` for a batch of one.

    Raises
    ------
    ValueError
        If ``input_shape`` has a non-positive entry.
    """
    shape = tuple(int(s) for s in input_shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"input_shape must be positive sizes without the batch axis, got {tuple(input_shape)}")
    on_meta = all(t.is_meta for t in (*model.parameters(), *model.buffers()))
    meta_model = model if on_meta else copy.deepcopy(model).to(torch.device("meta"))
    was_training = meta_model.training
    meta_model.eval()
    total = 0

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal total
        total += _macs(module, inputs, output)

    counted = (_ConvNd, nn.Linear, _BatchNorm, nn.ReLU, *_POOLING)
    handles = [m.register_forward_hook(hook) for m in meta_model.modules() if isinstance(m, counted)]
    try:
        with torch.no_grad():
            result: Tensor = meta_model(torch.empty((1, *shape), device="meta"))
        del result
    finally:
        for handle in handles:
            handle.remove()
        meta_model.train(was_training)
    return 2 * total
