"""CO-RADS grading from chest CT with the thesis' 3D DenseNet-201 ensemble (thesis chapter 3).

Entry points for the pipeline and the CLI:

* :class:`CoradsEnsemble` -- ``from_safetensors(path)`` or ``demo(seed)``, then
  ``predict(volume, lung_mask, lesion_map=None) -> CoradsResult``;
* :func:`preprocess` -- the network input of T§3.3.4 with a record of what was done;
* :func:`train_corads` -- the training recipe of T§3.3.3-3.3.6 (``lungcds train corads``).

Submodules are imported lazily on attribute access, so ``models.corads.scoring`` alone does not
pay for MONAI or the network code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.corads.augmentation import AugmentationConfig
    from models.corads.ensemble import CORADS_MODEL_VERSION, CoradsEnsemble, combine_members
    from models.corads.preprocessing import PreprocessedInput, PreprocessingConfig, PreprocessingRecord, preprocess
    from models.corads.scoring import category_from_probability, quadratic_weighted_kappa, target_from_category
    from models.corads.training import TrainingConfig, TrainingResult, train_corads

__all__ = [
    "CORADS_MODEL_VERSION",
    "AugmentationConfig",
    "CoradsEnsemble",
    "PreprocessedInput",
    "PreprocessingConfig",
    "PreprocessingRecord",
    "TrainingConfig",
    "TrainingResult",
    "category_from_probability",
    "combine_members",
    "preprocess",
    "quadratic_weighted_kappa",
    "target_from_category",
    "train_corads",
]

_HOMES = {
    "CORADS_MODEL_VERSION": "ensemble",
    "AugmentationConfig": "augmentation",
    "CoradsEnsemble": "ensemble",
    "combine_members": "ensemble",
    "PreprocessedInput": "preprocessing",
    "PreprocessingConfig": "preprocessing",
    "PreprocessingRecord": "preprocessing",
    "preprocess": "preprocessing",
    "category_from_probability": "scoring",
    "quadratic_weighted_kappa": "scoring",
    "target_from_category": "scoring",
    "TrainingConfig": "training",
    "TrainingResult": "training",
    "train_corads": "training",
}


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first use."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"models.corads.{_HOMES[name]}"), name)
