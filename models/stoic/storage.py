"""One weights-file format for every STOIC2021 member, and the SimpleITK view of a volume.

A member's file is one safetensors file: its networks' tensors (each member chooses the key
prefixes, e.g. ``severe.0.`` for the first severity fold) and its model card as JSON in the
metadata key :data:`MODEL_CARD_KEY` (:mod:`models.card_file`, as for CO-RADS and I3Dr).  The card's
``format`` is :data:`MEMBER_CARD_FORMAT` and its ``member`` the registry name, so that a file
installed under the wrong name is refused instead of loaded into the wrong networks.

Several members resample with SimpleITK because their authors did (models spec section 1), so
the conversion of an array on a :class:`~models.findings.Geometry` to a SimpleITK image, and the
resampling onto a new spacing that they all do with it, live here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from torch import Tensor

from models.card_file import MODEL_CARD_KEY, read_card_file, write_card_file
from models.findings import Geometry

__all__ = [
    "MEMBER_CARD_FORMAT",
    "MODEL_CARD_KEY",
    "prefixed",
    "read_member_file",
    "sitk_image",
    "sitk_resample",
    "write_member_file",
]

#: Value of ``format`` in every member card.
MEMBER_CARD_FORMAT = "lungcds.stoic-member/1"


def write_member_file(path: Path, tensors: Mapping[str, Tensor], card: Mapping[str, Any]) -> Path:
    """Write a member's tensors and model card to one safetensors file.

    Raises
    ------
    ValueError
        If the card lacks the member format or the member's name.
    """
    if card.get("format") != MEMBER_CARD_FORMAT or not card.get("member"):
        raise ValueError(f"a member card needs format {MEMBER_CARD_FORMAT!r} and a 'member' name")
    path.parent.mkdir(parents=True, exist_ok=True)
    contiguous = {key: value.detach().to("cpu").contiguous() for key, value in tensors.items()}
    write_card_file(path, contiguous, card)
    return path


def read_member_file(path: Path, member: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and card of a member file, checked to belong to ``member``.

    Raises
    ------
    ValueError
        If the file has no card, a card of another format, or one of another member.
    """
    tensors, card = read_card_file(path, MEMBER_CARD_FORMAT, "a STOIC member file")
    if card.get("member") != member:
        raise ValueError(f"{path} holds member {card.get('member')!r}, not {member!r}")
    return tensors, card


def prefixed(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries under ``prefix.`` with the prefix removed (one network's state dict)."""
    start = f"{prefix}."
    return {key[len(start) :]: value for key, value in tensors.items() if key.startswith(start)}


def sitk_image(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A ``[z, y, x]`` array on ``geometry`` as a SimpleITK image, keeping the array's dtype.

    SimpleITK orders spacing and origin x, y, z; the direction matrix has the same layout in
    both (row-major, columns are the axes).

    Raises
    ------
    ValueError
        If the array's shape is not the geometry's.
    """
    if tuple(array.shape) != tuple(geometry.shape):
        raise ValueError(f"array shape {array.shape} differs from geometry shape {geometry.shape}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(tuple(float(s) for s in reversed(geometry.spacing)))  # type: ignore[no-untyped-call]
    image.SetOrigin(tuple(float(v) for v in geometry.origin))  # type: ignore[no-untyped-call]
    image.SetDirection(tuple(float(v) for row in geometry.direction for v in row))  # type: ignore[no-untyped-call]
    return image


def sitk_resample(
    array: np.ndarray,
    geometry: Geometry,
    spacing_zyx: Sequence[float],
    shape_zyx: Sequence[int],
    *,
    nearest: bool = False,
    outside_value: float = 0.0,
) -> tuple[np.ndarray, Geometry]:
    """``sitk.Resample`` of a ``[z, y, x]`` array onto a grid of the same origin and direction.

    This is what the members' authors ran (the identity transform, linear or nearest-neighbour
    interpolation, ``outside_value`` beyond the scan, the input's pixel type); each member chooses
    the new grid's shape, since they rounded the voxel counts differently.

    Returns
    -------
    tuple
        The resampled array (the input's dtype) and its geometry.
    """
    image = sitk_image(array, geometry)
    resampled = sitk.Resample(
        image,
        [int(n) for n in reversed(shape_zyx)],
        sitk.Transform(),  # type: ignore[no-untyped-call]
        sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear,
        image.GetOrigin(),  # type: ignore[no-untyped-call]
        tuple(float(s) for s in reversed(spacing_zyx)),
        image.GetDirection(),  # type: ignore[no-untyped-call]
        float(outside_value),
        image.GetPixelID(),  # type: ignore[no-untyped-call]
    )
    out = sitk.GetArrayFromImage(resampled)
    spacing = (float(spacing_zyx[0]), float(spacing_zyx[1]), float(spacing_zyx[2]))
    return out, Geometry(geometry.origin, spacing, geometry.direction, (out.shape[0], out.shape[1], out.shape[2]))
