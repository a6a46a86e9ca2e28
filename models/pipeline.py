"""The analysis pipeline: one CT volume in, :class:`~models.findings.Findings` out.

This version runs what is real without trained weights: the classical lung mask, and the
volume, functional volume and densitometry of both lungs and of each lung.  Every other
registered model is listed with the honest reason it did not run, so a report can never
suggest that a CO-RADS, STOIC or I3Dr result exists when it does not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from models import PIPELINE_VERSION
from models.findings import Findings, ModelRun, Volume
from models.lungmask import segment_lungs
from models.measurements import measure_lungs
from models.registry import CLASSICAL_LUNG_MASK, MODEL_SPECS, get_spec, unavailable_run
from models.volume import PatientContext
from models.weights import WeightStore

__all__ = ["Progress", "analyse"]

logger = logging.getLogger(__name__)

#: Progress callback: a stage name and the fraction of the whole analysis done (0 to 1).
Progress = Callable[[str, float], None]


def _lung_mask_run(warnings: tuple[str, ...], found: bool) -> ModelRun:
    """The record of the classical lung mask, which always runs."""
    spec = get_spec(CLASSICAL_LUNG_MASK)
    if found:
        reason = "ran: classical, weight-free image processing"
    else:
        reason = "ran, but found no lung: " + "; ".join(warnings)
    return ModelRun(
        name=spec.name,
        status="ran",
        reason=reason,
        validated=True,
        version=spec.version,
        weights_sha256=None,
        description=spec.description,
    )


def analyse(
    volume: Volume,
    context: PatientContext,
    weights: WeightStore | None = None,
    progress: Progress | None = None,
    *,
    demo_weights: bool = False,
) -> Findings:
    """Analyse one chest CT.

    Parameters
    ----------
    volume : Volume
        The CT in HU.
    context : PatientContext
        Age and sex; taken now so that the call does not change when models that use them
        (STOIC) are implemented; this version does not use them.
    weights : WeightStore, optional
        Installed weights, used to say which models lack them.
    progress : callable, optional
        Called with a stage name and the fraction done, at the start of each stage.
    demo_weights : bool
        Whether generated demonstration weights were asked for.  No model of this version has
        an architecture to run them in, which each model's reason says.

    Returns
    -------
    Findings
        Masks ``lungs``, ``lung_left`` and ``lung_right``; their measurements; one
        :class:`ModelRun` per registered model; the segmentation's warnings.
    """

    def report(stage: str, fraction: float) -> None:
        if progress is not None:
            progress(stage, fraction)

    logger.debug("analysing a %s volume (age %s, sex %s)", volume.hu.shape, context.age_years, context.sex)
    report("lung_mask", 0.0)
    segmentation = segment_lungs(volume)
    lungs = segmentation.left | segmentation.right
    report("measurements", 0.7)
    measurements = measure_lungs(volume, segmentation.left, segmentation.right)
    report("models", 0.9)
    runs = {
        spec.name: (
            _lung_mask_run(segmentation.warnings, bool(lungs.any()))
            if spec.name == CLASSICAL_LUNG_MASK
            else unavailable_run(spec, weights, demo_weights=demo_weights)
        )
        for spec in MODEL_SPECS
    }
    findings = Findings(
        volume=volume,
        masks={"lungs": lungs, "lung_left": segmentation.left, "lung_right": segmentation.right},
        mask_sources=dict.fromkeys(("lungs", "lung_left", "lung_right"), CLASSICAL_LUNG_MASK),
        measurements=measurements,
        models=runs,
        pipeline_version=PIPELINE_VERSION,
        warnings=segmentation.warnings,
    )
    report("done", 1.0)
    return findings
