"""Small generated models for quick end-to-end tests of the learned pipeline stages.

Same architectures and code paths as the published networks, at a fraction of their size, so
that a whole analysis with ``--demo-weights`` runs in seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models.corads.ensemble import CoradsEnsemble
from models.corads.preprocessing import PreprocessingConfig
from models.i3dr import I3dr
from models.i3dr.model import BackboneSpec
from models.i3dr.preprocessing import I3drPreprocessingConfig
from models.runtime import DEMO_SEED, ModelProvider
from models.segmentation import LesionSettings, LobeSettings, build_lobe_network, demo_state
from models.segmentation.nnunet import GenericUNet
from models.stoic.catalog import demo_member
from models.weights import WeightStore

__all__ = ["SMALL_STOIC_MEMBERS", "small_corads", "small_provider"]

SMALL_DENSENET = {"growth_rate": 8, "block_config": (2, 2), "num_init_features": 16, "bn_size": 2}
SMALL_CORADS_INPUT = PreprocessingConfig(spacing_mm=4.0, crop_size=(32, 32), slices=16)


def _small_lobes() -> Any:
    network = build_lobe_network((4, 8, 16))
    demo_state(network, DEMO_SEED)
    return network.eval()


def _small_lesions() -> Any:
    network = GenericUNet(3, 1, 3, (4, 8, 16), ((2, 2, 2), (2, 2, 2)))
    demo_state(network, DEMO_SEED)
    return network.eval()


def small_corads() -> CoradsEnsemble:
    """A two-member CO-RADS ensemble of small DenseNets with generated weights."""
    return _small_corads()


def _small_corads() -> Any:
    return CoradsEnsemble.demo(
        DEMO_SEED, members=2, architecture_overrides=SMALL_DENSENET, preprocessing=SMALL_CORADS_INPUT
    )


#: Per STOIC2021 member, demo overrides that keep its architecture and preprocessing code paths
#: but shrink widths, depths, folds and input sizes.
SMALL_STOIC_MEMBERS: dict[str, dict[str, Any]] = {
    "stoic_baseline": {"spacing_mm": 8.0, "shape": (16, 32, 32), "pool_kernel": (1, 1, 1)},
    "stoic_code1055": {"shape": (32, 32, 32), "dims": (4, 8, 8, 8), "depths": (1, 1, 1, 1), "folds": 1},
    "stoic_flyingbird": {"shape": (16, 16, 16), "widths": (4, 4, 4, 4), "folds": 1},
    "stoic_deakin": {"spacing_mm": 8.0, "shape": (16, 32, 32), "growth_rate": 4, "block_config": (1, 1)},
    "stoic_simonj": {"embed_dim": 16, "depth": 1, "lung_depth": 1, "num_heads": 2},
    "stoic_hal9000": {"mobilenets": 1, "resnets": 1, "mobilenet_width_mult": 0.25, "resnet_widths": (4, 4, 4, 4)},
}


def _small_member(name: str) -> Callable[[], Any]:
    return lambda: demo_member(name, DEMO_SEED, **SMALL_STOIC_MEMBERS[name])


def _small_i3dr() -> Any:
    return I3dr.demo(
        DEMO_SEED,
        BackboneSpec("small_3d", {"widths": (4, 8)}),
        preprocessing=I3drPreprocessingConfig(spacing_mm=8.0, size=(32, 32, 32)),
    )


def small_provider(weights: WeightStore | None = None, *, keep_loaded: bool | None = None) -> ModelProvider:
    """A provider with demo weights and small networks for every learned model of the default pipeline."""
    return ModelProvider(
        weights,
        demo_weights=True,
        keep_loaded=keep_loaded,
        lobe_settings=LobeSettings(spacing_mm=(4.0, 4.0, 4.0), patch=(32, 32, 32), overlap=0.25),
        lesion_settings=LesionSettings(
            nnunet_spacing_mm=(4.0, 4.0, 4.0), nnunet_patch=(32, 32, 32), nnunet_overlap=0.25
        ),
        demo_factories={
            "lobes": _small_lobes,
            "lesions": _small_lesions,
            "corads": _small_corads,
            "i3dr": _small_i3dr,
            **{name: _small_member(name) for name in SMALL_STOIC_MEMBERS},
        },
    )
