"""Loading, saving and generating the weights of the segmentation networks.

Weights are loaded by a function apart from the network (house rule 4).  The format is
safetensors: it holds tensors only, so loading a file cannot execute code, which matters for
files that operators install on a hospital server.  Loading is strict: a file written for another
architecture or configuration is refused with the names of the keys that do not fit, instead of
silently leaving part of the network at its initial values.

:func:`demo_state` generates weights for ``--demo-weights`` runs.  They are deterministic (same
seed, same torch version: same bytes, so a demo output can be reproduced), but they are not
trained: every output computed with them is meaningless and the caller marks it unvalidated.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["StateMismatchError", "demo_state", "load_state", "save_state"]

#: Leaky-ReLU slope used in nnU-Net's He initialisation (``InitWeights_He(1e-2)``).
_HE_NEGATIVE_SLOPE = 1e-2


class StateMismatchError(ValueError):
    """A weights file that does not fit the network: missing, unexpected or misshapen keys."""

    def __init__(self, path: Path, missing: list[str], unexpected: list[str], misshapen: list[str]) -> None:
        self.missing = missing
        self.unexpected = unexpected
        self.misshapen = misshapen
        parts = []
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
            if names:
                shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
                parts.append(f"{label}: {shown}")
        super().__init__(f"weights {path} do not fit the network ({'; '.join(parts)})")


def load_state(network: nn.Module, path: Path) -> None:
    """Load a safetensors state dict into ``network``, requiring an exact key and shape match.

    Parameters
    ----------
    network : torch.nn.Module
        The network; its tensors are overwritten in place on their current device.
    path : pathlib.Path
        A ``.safetensors`` file (as written by :func:`save_state`).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not a readable safetensors file.
    StateMismatchError
        If keys are missing, unexpected, or have other shapes (all of them are named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise ValueError(f"weights file {path} is not a readable safetensors file: {error}") from error
    _check_fits(network, state, path)
    network.load_state_dict(state, strict=True)


def _check_fits(network: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshapen = sorted(
        f"{key} {tuple(state[key].shape)} != {tuple(expected[key].shape)}"
        for key in set(state) & set(expected)
        if tuple(state[key].shape) != tuple(expected[key].shape)
    )
    if missing or unexpected or misshapen:
        raise StateMismatchError(path, missing, unexpected, misshapen)


def save_state(network: nn.Module, path: Path, metadata: Mapping[str, str] | None = None) -> None:
    """Write ``network``'s state dict as safetensors (tensors copied to the CPU, contiguous).

    Parameters
    ----------
    network : torch.nn.Module
        The network to save.
    path : pathlib.Path
        Destination; its folder must exist.  Written to a temporary name and renamed.
    metadata : mapping of str to str, optional
        Stored in the file header (e.g. architecture name, training run).
    """
    path = Path(path)
    state = {key: value.detach().to("cpu").contiguous() for key, value in network.state_dict().items()}
    # Write beside the target and rename, so a crash never leaves a half-written checkpoint.
    partial = path.with_name(f".{path.name}.partial")
    try:
        save_file(state, str(partial), metadata=dict(metadata) if metadata else None)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def demo_state(network: nn.Module, seed: int) -> None:
    """Overwrite every parameter and buffer with deterministic generated values.

    Convolution and linear weights get He-normal values (``std = gain / sqrt(fan_in)`` with
    nnU-Net's leaky-ReLU gain), drawn from one ``torch.Generator`` seeded with ``seed`` in
    state-dict order; biases are zero, normalisation weights one, running means zero and running
    variances one.  The result depends only on the architecture, ``seed`` and the torch version.

    Parameters
    ----------
    network : torch.nn.Module
        The network to fill (any device; values are drawn on the CPU).
    seed : int
        Seed of the generator.
    """
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    gain = math.sqrt(2.0 / (1.0 + _HE_NEGATIVE_SLOPE**2))
    with torch.no_grad():
        for name, tensor in network.state_dict(keep_vars=True).items():
            leaf = name.rsplit(".", 1)[-1]
            if tensor.dtype in (torch.int64, torch.int32):
                value = torch.zeros(tensor.shape, dtype=tensor.dtype)
            elif tensor.ndim >= 2:
                fan_in = tensor.shape[1] * math.prod(tensor.shape[2:])
                value = torch.randn(tensor.shape, generator=generator) * (gain / math.sqrt(fan_in))
            elif leaf in ("weight", "running_var"):
                value = torch.ones(tensor.shape)
            else:
                value = torch.zeros(tensor.shape)
            tensor.copy_(value.to(dtype=tensor.dtype, device=tensor.device))
