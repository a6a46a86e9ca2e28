"""Weights files with a model card: safetensors tensors plus the card as JSON metadata.

The CO-RADS ensemble, every STOIC2021 member and I3Dr store their weights this way; each has
its own card format (its ``"format"`` value) and its own rules for the tensors, and shares the
reading and writing of the card here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

__all__ = ["MODEL_CARD_KEY", "read_card_file", "write_card_file"]

#: safetensors metadata key holding the model card JSON.
MODEL_CARD_KEY = "model_card"


def write_card_file(path: Path, tensors: Mapping[str, Tensor], card: Mapping[str, Any]) -> None:
    """Write ``tensors`` (already contiguous, on the CPU) with ``card`` as the file's metadata."""
    save_file(dict(tensors), str(path), metadata={MODEL_CARD_KEY: json.dumps(dict(card), sort_keys=True)})


def read_card_file(path: Path, card_format: str, kind: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and card of a file whose card has format ``card_format``.

    Parameters
    ----------
    kind : str
        What the file should be, for the error message ("a CO-RADS ensemble file").

    Raises
    ------
    ValueError
        If the file has no card or a card of another format.
    """
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if MODEL_CARD_KEY not in metadata:
        raise ValueError(f"{path} has no {MODEL_CARD_KEY!r} metadata; it is not {kind}")
    card: dict[str, Any] = json.loads(metadata[MODEL_CARD_KEY])
    if card.get("format") != card_format:
        raise ValueError(f"{path}: model card format {card.get('format')!r}, expected {card_format!r}")
    return load_file(str(path)), card
