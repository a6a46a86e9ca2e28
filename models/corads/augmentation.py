"""Training augmentation of thesis section 3.3.5, computed on the torch device.

"Data augmentation consisted of random zooming between -20% and +20%, rotation between -15%
and +15%, shearing between -10% and +10% and elastic deformations in the axial plane,
translation between -2 and +2 voxels in the z-direction, -20 and +20 voxels in both the x- and
y-direction, and additive Gaussian noise with a mean of 0 and a standard deviation between 0
and 0.01 (after intensity normalization between 0 and 1)" (T§3.3.5).

One sampling grid per sample combines an affine map and an elastic displacement and is applied
with ``affine_grid``/``grid_sample`` (trilinear, zero padding = air), so a batch is augmented in
one pass on whatever device it lives on.  Choices the text leaves open:

* the rotation is in degrees (the thesis prints "%") and about the z axis, i.e. in the axial
  plane: the network input has 1.5 mm voxels in-plane but a z spacing set by the uniform
  sampling of 128 slices (T§3.3.4), so a rotation through z would shear anatomy anisotropically;
* the zoom is isotropic; the shear acts in the axial plane (x by y and y by x);
* the elastic deformation moves voxels in x and y only, by a displacement drawn on a coarse
  control grid (N(0, sigma^2) voxels per control point) and interpolated trilinearly; its size
  and smoothness are not given by the thesis, hence the explicit parameters;
* translations are continuous (uniform in the interval), not whole voxels;
* noise is added identically to every channel that holds the CT (channel 1 only when a lesion
  map is present, all three otherwise), never to the lesion map or the zero channel.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AugmentationConfig", "augment_batch"]


@dataclass(frozen=True)
class AugmentationConfig:
    """Ranges of the random transforms; defaults are T§3.3.5 where the thesis gives a value.

    Attributes
    ----------
    zoom : float
        Relative zoom range (0.2: factor in [0.8, 1.2]).
    rotation_deg : float
        Axial rotation range in degrees (15).
    shear : float
        Axial shear range (0.1).
    translation_voxels : tuple of float
        Translation ranges ``(z, y, x)`` in voxels ((2, 20, 20)).
    elastic_sd_voxels : float
        Standard deviation of the in-plane elastic displacement at the control points (not in
        the thesis; 2 voxels = 3 mm at 1.5 mm spacing).
    elastic_control_points : tuple of int
        Control grid ``(z, y, x)`` of the elastic displacement (not in the thesis).
    noise_sd : float
        Upper bound of the noise standard deviation (0.01 on the [0, 1] intensity scale).
    """

    zoom: float = 0.2
    rotation_deg: float = 15.0
    shear: float = 0.1
    translation_voxels: tuple[float, float, float] = (2.0, 20.0, 20.0)
    elastic_sd_voxels: float = 2.0
    elastic_control_points: tuple[int, int, int] = (4, 8, 8)
    noise_sd: float = 0.01

    def __post_init__(self) -> None:
        ranges = (self.zoom, self.rotation_deg, self.shear, self.elastic_sd_voxels, self.noise_sd)
        if min(*ranges, *self.translation_voxels) < 0 or self.zoom >= 1:
            raise ValueError(f"augmentation ranges must be non-negative (zoom below 1), got {self}")
        if min(self.elastic_control_points) < 2:
            raise ValueError(f"the elastic control grid needs at least 2 points per axis, got {self}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, for model cards."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _uniform(n: int, half_range: float, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``n`` draws from U(-half_range, half_range)."""
    return (torch.rand(n, generator=generator, device=device) * 2.0 - 1.0) * half_range


def _affine_theta(
    n: int,
    size_zyx: tuple[int, int, int],
    config: AugmentationConfig,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """``(n, 3, 4)`` affine maps in ``affine_grid``'s normalised (x, y, z) coordinates.

    The map is built in voxel units about the volume centre (sampling position = A @ output +
    t) and conjugated with the voxel-to-normalised scaling, so rotations and shears are rigid
    in voxels even though the normalised axes have different lengths.
    """
    angle = _uniform(n, math.radians(config.rotation_deg), generator, device)
    scale = 1.0 + _uniform(n, config.zoom, generator, device)
    shear_xy = _uniform(n, config.shear, generator, device)
    shear_yx = _uniform(n, config.shear, generator, device)
    tz, ty, tx = (_uniform(n, r, generator, device) for r in config.translation_voxels)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(n, 3, 3, device=device)
    rotation[:, 0, 0], rotation[:, 0, 1], rotation[:, 1, 0], rotation[:, 1, 1] = cos, -sin, sin, cos
    rotation[:, 2, 2] = 1.0
    shear = torch.eye(3, device=device).repeat(n, 1, 1)
    shear[:, 0, 1], shear[:, 1, 0] = shear_xy, shear_yx
    matrix = rotation @ shear * scale[:, None, None]
    half = torch.tensor([size_zyx[2] / 2.0, size_zyx[1] / 2.0, size_zyx[0] / 2.0], device=device)
    normalised = matrix * half[None, None, :] / half[None, :, None]
    translation = torch.stack([tx, ty, tz], dim=1) / half[None, :]
    return torch.cat([normalised, translation[:, :, None]], dim=2)


def _elastic(
    n: int,
    size_zyx: tuple[int, int, int],
    config: AugmentationConfig,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """``(n, D, H, W, 2)`` smooth in-plane displacements (x, y) in normalised units."""
    coarse = torch.randn((n, 2, *config.elastic_control_points), generator=generator, device=device)
    dense = F.interpolate(coarse * config.elastic_sd_voxels, size=size_zyx, mode="trilinear", align_corners=True)
    half = torch.tensor([size_zyx[2] / 2.0, size_zyx[1] / 2.0], device=device)
    return dense.permute(0, 2, 3, 4, 1) / half


def augment_batch(
    batch: Tensor, ct_channels: Tensor, config: AugmentationConfig, generator: torch.Generator | None = None
) -> Tensor:
    """One random augmentation per sample of a batch ``(N, C, D, H, W)``.

    Parameters
    ----------
    batch : torch.Tensor
        Network inputs on their device, intensities in [0, 1].
    ct_channels : torch.Tensor
        Boolean ``(N, C)``: which channels of each sample hold the CT (they get the noise).
    config : AugmentationConfig
        Ranges.
    generator : torch.Generator, optional
        Random source on ``batch.device`` (for reproducible training runs).

    Returns
    -------
    torch.Tensor
        The augmented batch, same shape, dtype and device.

    Raises
    ------
    ValueError
        For a batch that is not 5-D or a channel mask of the wrong shape.
    """
    if batch.ndim != 5 or ct_channels.shape != batch.shape[:2]:
        raise ValueError(f"expected (N, C, D, H, W) and an (N, C) mask, got {tuple(batch.shape)}, {ct_channels.shape}")
    n, _, d, h, w = batch.shape
    device = batch.device
    size = (d, h, w)
    theta = _affine_theta(n, size, config, generator, device)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    if config.elastic_sd_voxels > 0:
        grid = grid + F.pad(_elastic(n, size, config, generator, device), (0, 1))
    out = F.grid_sample(batch.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sd = torch.rand(n, generator=generator, device=device) * config.noise_sd
    noise = torch.randn((n, 1, d, h, w), generator=generator, device=device) * sd[:, None, None, None, None]
    out = out + noise * ct_channels.to(out.dtype)[:, :, None, None, None]
    return out.to(batch.dtype)
