"""I3Dr: lung function per patient and per lobe from chest CT (thesis chapter 2).

Outputs (:data:`OUTPUTS`, in head order, units in :data:`OUTPUT_UNITS`): ``pv_l``, ``fpv_l``,
``fev1_pre_l``, ``fev1_post_l``, ``fvc_pre_l``, ``fvc_post_l`` in L and ``dlco`` in mL/min/mmHg.

Public API for the pipeline, the CLI and the benchmarks:

* :class:`I3dr` -- models A and B with their preprocessing and label scales:

  - ``I3dr.from_safetensors(path)`` (one file with both parts), ``I3dr.from_parts(a_path, b_path)``
    (the files of two training runs) or ``I3dr.demo(seed)`` (generated weights, card
    ``"demo": true``; I3D backbone and 240^3 inputs by default, about 2.9 TMAC per CT);
  - ``predict(volume, lungs, lobes) -> I3drPrediction``: ``volume`` a :class:`models.findings.Volume`
    in HU, ``lungs`` a boolean ``[z, y, x]`` mask on its grid, ``lobes`` a mapping of the five
    names of :data:`models.findings.LOBE_NAMES` (LUL, LLL, RUL, RML, RLL) to boolean masks;
  - ``predict_patient_only(volume, lungs) -> I3drPrediction``: model A alone (no lobe masks);
  - ``is_demo``: whether the weights were generated; ``save(path)`` writes both parts.

* :class:`I3drPrediction` -- ``patient_a`` (model A, the I3Dr patient estimate), ``patient_b``
  (model B's sum), ``lobes`` (rescaled, T§2.3.1), ``lobes_unscaled`` (model B per lobe),
  ``rescale_factors``, ``not_rescaled`` (reasons); ``to_result() -> models.findings.I3drResult``
  (``patient``, ``lobes``, ``lobes_unscaled``, ``patient_b``, ``notes``; only the outputs model A
  was trained on) and ``details()`` (everything, JSON-serialisable).
* :func:`preprocess_regions` -- the inputs of T§2.4.4 with a record of what was done.
* :func:`train_i3dr` ``(I3drTrainingConfig(csv_path, output_dir, model="a" | "b", ...)) ->
  TrainingResult`` -- the recipe of T§2.4.5 with Algorithm 1 for model B; writes
  ``output_dir/i3dr_<model>.safetensors`` (``lungcds train i3dr --model a|b``).
* :func:`digit_benchmark` ``(bag_size, *, seed=0, steps=3000, fixed_bags=False, ...) -> dict`` -- an
  analogue of the summing-digits experiment of T§2.4.1 (8 x 8 scikit-learn digits, a small CNN,
  bags redrawn every step unless ``fixed_bags``; ``lungcds bench i3dr-digits --bag-size 8``): keys ``digit_mae``,
  ``digit_accuracy`` and the baselines ``bag_mean_mae``/``bag_mean_accuracy`` and
  ``baseline_mae``/``baseline_accuracy``, among others.
* :func:`summary` -- parameters and FLOPs of models A and B (``lungcds models summary``), compared
  with a count computed from the authors' code (no publication prints one).
* :func:`lobar_benchmark` ``(LobarBenchmarkConfig(...)) -> dict`` -- lobar PV and FPV from
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
    from models.i3dr.model import (
        OUTPUT_UNITS,
        OUTPUTS,
        BackboneSpec,
        RegionSumRegressor,
        build_model_a,
        build_model_b,
        summary,
    )
    from models.i3dr.preprocessing import I3drPreprocessingConfig, preprocess_regions
    from models.i3dr.training import I3drTrainingConfig, TrainingResult, train_i3dr

__all__ = [
    "I3DR_MODEL_VERSION",
    "OUTPUTS",
    "OUTPUT_UNITS",
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
    "summary",
    "train_i3dr",
]

_HOMES = {
    "I3DR_MODEL_VERSION": "card",
    "OUTPUTS": "model",
    "OUTPUT_UNITS": "model",
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
    "summary": "model",
    "train_i3dr": "training",
}


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first use."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"models.i3dr.{_HOMES[name]}"), name)
