"""Size and cost of the segmentation networks, for ``lungcds models summary --json``.

Every network is built on ``torch.device("meta")``, so a summary allocates no weights and takes
well under a second.  Published figures are given next to ours where the seeds have them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.segmentation.flops import count_flops, count_parameters
from models.segmentation.lesions import LesionSettings, build_lesion_network
from models.segmentation.lobes import LobeSettings, build_lobe_network

__all__ = ["ArchitectureSummary", "segmentation_summaries"]


@dataclass(frozen=True)
class ArchitectureSummary:
    """Parameters and FLOPs of one forward pass at the network's inference input shape.

    Attributes
    ----------
    name : str
        Architecture name.
    parameters : int
        Parameter count.
    input_shape : tuple of int
        ``[batch, channels, z, y, x]`` of one forward pass (a sliding window or whole volume).
    flops : int
        2 x multiply-accumulates of convolutions (:mod:`models.segmentation.flops`).
    published_parameters : int or None
        Count given by the source, when it gives one.
    published_flops : float or None
        FLOPs given by the source, when it gives them.
    source : str
        Where the architecture and any published figure come from.
    """

    name: str
    parameters: int
    input_shape: tuple[int, ...]
    flops: int
    published_parameters: int | None
    published_flops: float | None
    source: str


def segmentation_summaries() -> dict[str, ArchitectureSummary]:
    """Summaries of the lobe network and both lesion networks at their default settings."""
    lobes, lesions = LobeSettings(), LesionSettings()
    with torch.device("meta"):
        networks = {
            "lobe_unet": (build_lobe_network(), (1, 1, *lobes.patch)),
            "lesion_nnunet": (build_lesion_network("nnunet"), (1, 1, *lesions.nnunet_patch)),
            "lesion_resnet18_unet": (build_lesion_network("resnet18_unet"), (1, 3, *lesions.s4_shape)),
        }
    published = {
        "lobe_unet": (None, None, "nnU-Net-v1-style U-Net in place of RTSU-Net (thesis T§2.4.5, ref [78])"),
        "lesion_nnunet": (29_690_000, 9.41e11, "CORADS-AI lesion nnU-Net, thesis T§3.3.3 and T§3.4.5"),
        "lesion_resnet18_unet": (None, None, "S4 §2.3: 3D U-Net with R3D-18 encoder; no count published"),
    }
    out: dict[str, ArchitectureSummary] = {}
    for name, (network, shape) in networks.items():
        params, flops, source = published[name]
        out[name] = ArchitectureSummary(
            name=name,
            parameters=count_parameters(network),
            input_shape=shape,
            flops=count_flops(network, shape).flops,
            published_parameters=params,
            published_flops=flops,
            source=source,
        )
    return out
