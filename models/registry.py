"""The analysis models this pipeline knows about, as data, and the honest status of each.

Every registered model appears in every result (``Findings.models``), ran or not, so that a
report can say plainly which analyses were done and why the others were not.  A model is
*implemented* when this pipeline version contains its architecture and preprocessing, and
*needs weights* when it cannot run without a trained weights file installed with
``lungcds models install`` (architecture spec, "Honesty about models").
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from models import PIPELINE_VERSION
from models.findings import ModelRun, ModelStatus

if TYPE_CHECKING:
    from collections.abc import Mapping

    from models.weights import WeightStore

__all__ = [
    "CLASSICAL_LUNG_MASK",
    "MODEL_SPECS",
    "REGISTRY",
    "ModelSpec",
    "UnknownModelError",
    "get_spec",
    "unavailable_run",
]

#: Name of the weight-free lung mask of :mod:`models.lungmask`.
CLASSICAL_LUNG_MASK = "lung_mask_classical"


class UnknownModelError(ValueError):
    """A model name that is not in the registry."""


@dataclass(frozen=True)
class ModelSpec:
    """One analysis model: what it is and whether this pipeline version can run it.

    Attributes
    ----------
    name : str
        Key in ``result.json["models"]`` and in the weight store.
    version : str
        Version of the model's implementation (``"n/a"`` while it is not implemented).
    description : str
        One sentence a radiologist can read in a report.
    needs_weights : bool
        True when the model cannot run without an installed weights file.
    implemented : bool
        True when this pipeline version contains the model's architecture and preprocessing.
    """

    name: str
    version: str
    description: str
    needs_weights: bool
    implemented: bool


#: All models, in the order reports list them.
MODEL_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name=CLASSICAL_LUNG_MASK,
        version="1.0.0",
        description=(
            "Left and right lung masks by classical, weight-free image processing (thresholds, "
            "airway tracing, morphology); no trained model"
        ),
        needs_weights=False,
        implemented=True,
    ),
    ModelSpec(
        name="lobes",
        version="n/a",
        description="Learned segmentation of the five pulmonary lobes (thesis sections 2.4.5 and 3.3.4)",
        needs_weights=True,
        implemented=False,
    ),
    ModelSpec(
        name="lesions",
        version="n/a",
        description="Learned segmentation of ground-glass opacities and consolidation (thesis section 3.3.3)",
        needs_weights=True,
        implemented=False,
    ),
    ModelSpec(
        name="corads",
        version="n/a",
        description="CO-RADS category from an ensemble of 3D DenseNet-201 networks (thesis chapter 3)",
        needs_weights=True,
        implemented=False,
    ),
    ModelSpec(
        name="stoic",
        version="n/a",
        description="Probability of COVID-19 and of severe outcome, STOIC2021 ensemble (thesis chapter 4)",
        needs_weights=True,
        implemented=False,
    ),
    ModelSpec(
        name="i3dr",
        version="n/a",
        description="Lung function (PV, FPV, FEV1, FVC, DLCO) per patient and lobe by I3Dr (thesis chapter 2)",
        needs_weights=True,
        implemented=False,
    ),
)

#: Read-only mapping from model name to its spec.
REGISTRY: Mapping[str, ModelSpec] = MappingProxyType({spec.name: spec for spec in MODEL_SPECS})


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model.

    Raises
    ------
    UnknownModelError
        If ``name`` is not registered; the message lists the registered names.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(REGISTRY)
        raise UnknownModelError(f"unknown model {name!r}; registered models are: {known}") from None


def unavailable_run(spec: ModelSpec, weights_store: WeightStore | None, *, demo_weights: bool = False) -> ModelRun:
    """The record of a model that did not run, with the reason in plain words.

    Never claims that a model ran: an unimplemented architecture is reported as not available in
    this pipeline version, an implemented one without weights as not installed.

    Parameters
    ----------
    spec : ModelSpec
        The model.
    weights_store : WeightStore or None
        Where installed weights are looked up; ``None`` means no store (nothing installed).
    demo_weights : bool
        Whether generated demonstration weights were asked for; said in the reason, because
        an unimplemented model cannot run with them either.

    Returns
    -------
    ModelRun
        Status ``"not_installed"`` (or ``"skipped"`` for a runnable model that was not run),
        ``validated`` False, no weights hash.
    """
    installed = weights_store.get(spec.name) if weights_store is not None and spec.needs_weights else None
    status: ModelStatus = "not_installed"
    if not spec.implemented:
        reason = (
            f"not available in pipeline version {PIPELINE_VERSION}: the {spec.name} architecture is not "
            "implemented yet, so no result is given"
        )
        if installed is not None:
            reason += f" (weights sha256 {installed.sha256} are installed but unused)"
        if demo_weights:
            reason += "; demonstration weights cannot stand in for a missing architecture"
    elif spec.needs_weights and installed is None:
        reason = "no weights installed; install with `lungcds models install`"
    else:
        reason = "not run in this analysis"
        status = "skipped"
    return ModelRun(
        name=spec.name,
        status=status,
        reason=reason,
        validated=False,
        version=spec.version,
        weights_sha256=None,
        description=spec.description,
    )
