"""Checkpoints in the authors' layouts, built from the committed name/shape lists (formats/*.json).

Each list was dumped from the authors' own model definition (see each test module); the values
here are distinct random numbers, so that a tensor landing in the wrong place is seen.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

FORMATS_DIR = Path(__file__).parent / "formats"


def authors_names(name: str) -> dict[str, list[int]]:
    """The authors' parameter names and shapes of one format, in their order."""
    data: dict[str, list[int]] = json.loads((FORMATS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return data


def distinct_state(names: dict[str, list[int]], seed: int) -> dict[str, Tensor]:
    """A state dict of those names and shapes with random values (counters as int64, variances positive)."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for key, shape in names.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.randint(0, 10_000, shape, generator=generator, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator)
    return state
