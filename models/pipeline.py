"""The analysis pipeline: one CT volume in, :class:`~models.findings.Findings` out.

Stages, in order: the classical lung mask and its quality gate; the learned lobe and lesion
segmentations; the CT severity score from those masks; the CO-RADS ensemble; the weight-free
measurements of the lungs and of every lobe found.  A learned model runs only with installed
or (asked for) generated weights, and only when the lung mask passed the quality gate; every
registered model gets a :class:`~models.findings.ModelRun` saying what happened and why, so a
report can never suggest that a result exists when it does not, or hide that one came from
unvalidated weights.  A model that fails is recorded as failed; the other stages go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from models import PIPELINE_VERSION
from models.findings import (
    LOBE_NAMES,
    CoradsResult,
    Findings,
    ModelRun,
    QualityAssessment,
    SeverityResult,
    Volume,
)
from models.lungmask import segment_lungs
from models.measurements import measure_regions
from models.quality import assess_lung_mask
from models.registry import CLASSICAL_LUNG_MASK, MODEL_SPECS, SEVERITY, get_spec, unavailable_run
from models.runtime import LearnedModel, ModelProvider
from models.segmentation import segment_lesions, segment_lobes
from models.severity import severity_from_masks
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


def _ran(loaded: LearnedModel, note: str = "") -> ModelRun:
    spec = get_spec(loaded.name)
    return ModelRun(
        name=spec.name,
        status="ran",
        reason=f"ran with {loaded.source}" + (f"; {note}" if note else ""),
        validated=loaded.validated,
        version=loaded.version,
        weights_sha256=loaded.weights_sha256,
        description=spec.description,
    )


def _skipped(name: str, reason: str) -> ModelRun:
    spec = get_spec(name)
    return ModelRun(
        name=name, status="skipped", reason=reason, validated=False, version=spec.version, description=spec.description
    )


def _failed(name: str, error: Exception) -> ModelRun:
    spec = get_spec(name)
    logger.exception("model %s failed", name)
    return ModelRun(
        name=name,
        status="failed",
        reason=f"failed: {type(error).__name__}: {error}",
        validated=False,
        version=spec.version,
        description=spec.description,
    )


@dataclass
class _State:
    """What the stages have produced so far."""

    masks: dict[str, np.ndarray]
    mask_sources: dict[str, str]
    runs: dict[str, ModelRun] = field(default_factory=dict)
    corads: CoradsResult | None = None
    severity: SeverityResult | None = None


def analyse(
    volume: Volume,
    context: PatientContext,
    weights: WeightStore | None = None,
    progress: Progress | None = None,
    *,
    demo_weights: bool = False,
    provider: ModelProvider | None = None,
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
        Installed weights.
    progress : callable, optional
        Called with a stage name and the fraction done, at the start of each stage.
    demo_weights : bool
        Run models without installed weights on generated demonstration weights (their
        outputs are marked unvalidated).
    provider : ModelProvider, optional
        Loaded models to reuse (a worker keeps one per process); built from ``weights`` and
        ``demo_weights`` when absent.

    Returns
    -------
    Findings
        Lung (and, when found, lobe and lesion) masks with their sources; measurements of the
        lungs and lobes; CO-RADS and severity when they ran; one :class:`ModelRun` per
        registered model; the quality assessment and the segmentation's warnings.
    """

    def report(stage: str, fraction: float) -> None:
        if progress is not None:
            progress(stage, fraction)

    provider = provider or ModelProvider(weights, demo_weights=demo_weights)
    logger.debug("analysing a %s volume (age %s, sex %s)", volume.hu.shape, context.age_years, context.sex)
    report("lung_mask", 0.0)
    segmentation = segment_lungs(volume)
    lungs = segmentation.left | segmentation.right
    quality = assess_lung_mask(volume, segmentation.left, segmentation.right)
    state = _State(
        masks={"lungs": lungs, "lung_left": segmentation.left, "lung_right": segmentation.right},
        mask_sources=dict.fromkeys(("lungs", "lung_left", "lung_right"), CLASSICAL_LUNG_MASK),
    )
    state.runs[CLASSICAL_LUNG_MASK] = _lung_mask_run(segmentation.warnings, bool(lungs.any()))
    _learned_stages(volume, segmentation.left, segmentation.right, quality, provider, state, report)
    report("measurements", 0.95)
    measured = {
        name: mask for name, mask in state.masks.items() if name in ("lungs", "lung_left", "lung_right", *LOBE_NAMES)
    }
    measurements = measure_regions(volume, measured)
    runs = {
        spec.name: state.runs.get(spec.name) or unavailable_run(spec, weights, demo_weights=demo_weights)
        for spec in MODEL_SPECS
    }
    findings = Findings(
        volume=volume,
        masks=state.masks,
        measurements=measurements,
        models=runs,
        pipeline_version=PIPELINE_VERSION,
        corads=state.corads,
        severity=state.severity,
        quality=quality,
        mask_sources=state.mask_sources,
        warnings=segmentation.warnings,
    )
    report("done", 1.0)
    return findings


def _learned_stages(
    volume: Volume,
    left: np.ndarray,
    right: np.ndarray,
    quality: QualityAssessment,
    provider: ModelProvider,
    state: _State,
    report: Callable[[str, float], None],
) -> None:
    """Lobes, lesions, severity and CO-RADS, each only when it can run."""
    learned = ("lobes", "lesions", SEVERITY, "corads")
    if not quality.plausible:
        why = "not run: the lung mask failed the quality gate (" + "; ".join(quality.reasons) + ")"
        state.runs.update({name: _skipped(name, why) for name in learned if _available(name, provider)})
        return
    lungs = left | right
    report("lobes", 0.15)
    lobes = provider.load("lobes")
    if lobes is not None:
        try:
            found = segment_lobes(
                volume, left, right, lobes.model, device=provider.device, settings=provider.lobe_settings
            )
            _add_masks(state, found, "lobes")
            state.runs["lobes"] = _ran(lobes)
        except Exception as exc:  # noqa: BLE001 - recorded on the model; the analysis goes on
            state.runs["lobes"] = _failed("lobes", exc)
    report("lesions", 0.4)
    lesions = provider.load("lesions")
    if lesions is not None:
        try:
            found = segment_lesions(
                volume,
                lungs,
                lesions.model,
                kind=provider.lesion_kind,
                device=provider.device,
                settings=provider.lesion_settings,
            )
            _add_masks(state, found, "lesions")
            state.runs["lesions"] = _ran(lesions, f"{provider.lesion_kind} network")
        except Exception as exc:  # noqa: BLE001 - recorded on the model; the analysis goes on
            state.runs["lesions"] = _failed("lesions", exc)
    report("severity", 0.65)
    _severity(volume, state)
    report("corads", 0.7)
    corads = provider.load("corads")
    if corads is not None:
        try:
            state.corads = corads.model.predict(volume, lungs, state.masks.get("lesions"))
            note = "lesion map in channel 2" if "lesions" in state.masks else "no lesion map: CT in all three channels"
            state.runs["corads"] = _ran(corads, note)
        except Exception as exc:  # noqa: BLE001 - recorded on the model; the analysis goes on
            state.runs["corads"] = _failed("corads", exc)


def _available(name: str, provider: ModelProvider) -> bool:
    """Whether ``name`` would have run (weights or demo weights), so "skipped" is the honest status."""
    if name == SEVERITY:
        return _available("lobes", provider) and _available("lesions", provider)
    return provider.demo_weights or provider.installed(name) is not None


def _add_masks(state: _State, masks: Mapping[str, np.ndarray], source: str) -> None:
    for name, mask in masks.items():
        state.masks[name] = mask.astype(bool, copy=False)
        state.mask_sources[name] = source


def _severity(volume: Volume, state: _State) -> None:
    """CT severity score from the lobe and lesion masks, when both exist."""
    have_lobes = all(name in state.masks for name in LOBE_NAMES)
    if not have_lobes or "lesions" not in state.masks:
        missing = [m for m, ok in (("lobe", have_lobes), ("lesion", "lesions" in state.masks)) if not ok]
        state.runs[SEVERITY] = _skipped(SEVERITY, f"not computed: no {' and no '.join(missing)} masks")
        return
    try:
        state.severity = severity_from_masks(
            {name: state.masks[name] for name in LOBE_NAMES}, state.masks["lesions"], volume.geometry
        )
    except ValueError as exc:  # e.g. an empty lobe from an untrained network
        state.runs[SEVERITY] = _skipped(SEVERITY, f"not computed: {exc}")
        return
    inputs = [state.runs[name] for name in ("lobes", "lesions")]
    spec = get_spec(SEVERITY)
    state.runs[SEVERITY] = ModelRun(
        name=SEVERITY,
        status="ran",
        reason="computed from the lobe and lesion masks (seeds/003 thresholds)",
        validated=all(run.validated for run in inputs),
        version=spec.version,
        description=spec.description,
    )
