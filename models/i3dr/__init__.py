"""I3Dr: lung function per patient and per lobe from chest CT (thesis chapter 2).

Entry points for the pipeline, the CLI and the benchmarks:

* :class:`I3dr` -- ``from_safetensors(path)``, ``from_parts(a_path, b_path)`` or ``demo(seed)``,
  then ``predict(volume, lungs, lobes) -> I3drPrediction`` (``.to_result() -> I3drResult``) or
  ``predict_patient_only(volume, lungs)``;
* :func:`preprocess_regions` -- the inputs of T§2.4.4 with a record of what was done;
* :func:`train_i3dr` -- the training recipe of T§2.4.5 with Algorithm 1 for model B
  (``lungcds train i3dr --model a|b``);
* :func:`digit_benchmark` -- the summing-digits experiment of T§2.4.1
  (``lungcds bench i3dr-digits``); :func:`lobar_benchmark` -- lobar PV and FPV from
  patient-level labels on phantoms (T§2.4.2-2.4.3, Table 2.2).

Submodules are imported lazily on attribute access, so ``models.i3dr.model`` alone does not
pay for MONAI or scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.i3dr.card import I3DR_MODEL_VERSION
    from models.i3dr.digits import digit_benchmark
    from models.i3dr.inference import I3dr, I3drPrediction
    from models.i3dr.lobar_benchmark import LobarBenchmarkConfig, lobar_benchmark
    from models.i3dr.model import OUTPUTS, BackboneSpec, RegionSumRegressor, build_model_a, build_model_b
    from models.i3dr.preprocessing import I3drPreprocessingConfig, preprocess_regions
    from models.i3dr.training import I3drTrainingConfig, TrainingResult, train_i3dr

__all__ = [
    "I3DR_MODEL_VERSION",
    "OUTPUTS",
    "BackboneSpec",
    "I3dr",
    "I3drPrediction",
    "I3drPreprocessingConfig",
    "I3drTrainingConfig",
    "LobarBenchmarkConfig",
    "RegionSumRegressor",
    "TrainingResult",
    "build_model_a",
    "build_model_b",
    "digit_benchmark",
    "lobar_benchmark",
    "preprocess_regions",
    "train_i3dr",
]

_HOMES = {
    "I3DR_MODEL_VERSION": "card",
    "OUTPUTS": "model",
    "BackboneSpec": "model",
    "I3dr": "inference",
    "I3drPrediction": "inference",
    "I3drPreprocessingConfig": "preprocessing",
    "I3drTrainingConfig": "training",
    "LobarBenchmarkConfig": "lobar_benchmark",
    "RegionSumRegressor": "model",
    "TrainingResult": "training",
    "build_model_a": "model",
    "build_model_b": "model",
    "digit_benchmark": "digits",
    "lobar_benchmark": "lobar_benchmark",
    "preprocess_regions": "preprocessing",
    "train_i3dr": "training",
}


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first use."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"models.i3dr.{_HOMES[name]}"), name)
