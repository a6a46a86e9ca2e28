"""Small generated models for quick end-to-end tests of the learned pipeline stages.

Same architectures and code paths as the published networks, at a fraction of their size, so
that a whole analysis with ``--demo-weights`` runs in seconds on a CPU.
"""

from __future__ import annotations

from typing import Any

from models.corads.ensemble import CoradsEnsemble
from models.corads.preprocessing import PreprocessingConfig
from models.runtime import DEMO_SEED, ModelProvider
from models.segmentation import LesionSettings, LobeSettings, build_lobe_network, demo_state
from models.segmentation.nnunet import GenericUNet
from models.weights import WeightStore

__all__ = ["small_corads", "small_provider"]

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


def small_provider(weights: WeightStore | None = None) -> ModelProvider:
    """A provider with demo weights and small networks for lobes, lesions and CO-RADS."""
    return ModelProvider(
        weights,
        demo_weights=True,
        lobe_settings=LobeSettings(spacing_mm=(4.0, 4.0, 4.0), patch=(32, 32, 32), overlap=0.25),
        lesion_settings=LesionSettings(
            nnunet_spacing_mm=(4.0, 4.0, 4.0), nnunet_patch=(32, 32, 32), nnunet_overlap=0.25
        ),
        demo_factories={"lobes": _small_lobes, "lesions": _small_lesions, "corads": _small_corads},
    )
