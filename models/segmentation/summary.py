"""Size and cost of the segmentation networks, for ``lungcds models summary --json``.

Every network is built on ``torch.device("meta")``, so a summary allocates no weights and takes
well under a second.  Each row says what its count is compared with and where that comes from
(:class:`models.zoo.catalog.ParameterReference`).  Both U-Nets are reconstructions: the lobe
network is a Generic_UNet in place of the thesis' RTSU-Net, and the CORADS-AI lesion nnU-Net's
architecture reproduces the published count while its plan (spacing, normalisation, patch size and
number of classes) is our guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.segmentation.flops import count_flops, count_parameters
from models.segmentation.lesions import LesionSettings, build_lesion_network
from models.segmentation.lobes import LobeSettings, build_lobe_network
from models.zoo.catalog import NO_REFERENCE, ParameterReference, ReferenceKind

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
    reference_parameters : int or None
        The count ``parameters`` is compared with.
    reference_parameters_kind : {"published", "computed_from_authors_code", "none"}
        Whether that count was printed by the source, computed from the authors' code, or absent.
    reference_parameters_source : str or None
        Table, section or file the reference count comes from.
    published_parameters : int or None
        The reference count when it was published (``None`` otherwise).
    parameters_relative_difference : float or None
        ``(parameters - reference) / reference``.
    published_flops : float or None
        FLOPs given by the source, when it gives them.
    source : str
        Where the architecture comes from, and what is reconstructed or guessed.
    """

    name: str
    parameters: int
    input_shape: tuple[int, ...]
    flops: int
    reference_parameters: int | None
    reference_parameters_kind: ReferenceKind
    reference_parameters_source: str | None
    published_parameters: int | None
    parameters_relative_difference: float | None
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
    published: dict[str, tuple[ParameterReference, float | None, str]] = {
        "lobe_unet": (
            NO_REFERENCE,
            None,
            "reconstruction: nnU-Net-v1-style Generic_UNet standing in for the thesis' RTSU-Net (T§2.4.5, "
            "ref [78]); its layout, spacing, window and patch are ours, not the thesis'",
        ),
        "lesion_nnunet": (
            ParameterReference.published(29_690_000, "thesis section 3.4.5 (CORADS-AI lesion nnU-Net, 29.69 M)"),
            9.41e11,
            "reconstruction: CORADS-AI lesion nnU-Net (thesis 3.3.3, 3.4.5); the Generic_UNet layout reproduces "
            "the published count; its plan is guessed, not published: 1.5 mm spacing, z-score normalisation "
            "(etro's [-1000, 100] HU window), the 64x192x192 patch (fitted to the published FLOPs), 3 outputs "
            "(background, GGO, consolidation) and their order",
        ),
        "lesion_resnet18_unet": (NO_REFERENCE, None, "S4 §2.3: 3D U-Net with R3D-18 encoder; no count published"),
    }
    out: dict[str, ArchitectureSummary] = {}
    for name, (network, shape) in networks.items():
        reference, flops, source = published[name]
        params = count_parameters(network)
        out[name] = ArchitectureSummary(
            name=name,
            parameters=params,
            input_shape=shape,
            flops=count_flops(network, shape).flops,
            **reference.fields(params),
            published_flops=flops,
            source=source,
        )
    return out
