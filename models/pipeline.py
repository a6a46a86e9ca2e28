"""The analysis pipeline: one CT volume in, :class:`~models.findings.Findings` out.

Stages, in order: the classical lung mask and its quality gate; the learned lobe and lesion
segmentations (the lobes from lungmask's LTRCLobes, fused with its R231, when the site installed
them, else from the project's lobe network; :func:`_lobe_order` says which when both could
run); the CT severity score from those masks; the CO-RADS ensemble; the STOIC2021 ensemble
(with the patient's age and sex); I3Dr lung function (lobar when lobe masks exist,
patient level from model A otherwise); the measurements of the lungs and of every lobe found;
the weight-free zone densitometry of both lungs (:mod:`models.qct.densitometry`: zones, density
bands, zone score, emphysema detail) whenever the lung mask found a lung, whether or not it passed
the quality gate (a failed gate is noted on it), and what the header says about the acquisition;
last, the plausibility gate of :mod:`models.plausibility`, which withholds impossible learned
numbers with the reason.  A learned model runs only with installed or (asked for) generated
weights, and only when the lung mask passed the quality gate; every registered model gets a
:class:`~models.findings.ModelRun` saying what happened and why, and, when it ran, its
provenance (set here, where the weights are known), so a report can never suggest that a
result exists when it does not, or hide that one came from unvalidated weights.  A model that
fails is recorded as failed; the other stages go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import numpy as np

from models import PIPELINE_VERSION
from models.findings import (
    LOBE_NAMES,
    CoradsResult,
    Densitometry,
    Findings,
    I3drResult,
    ModelRun,
    Provenance,
    QualityAssessment,
    SeverityResult,
    StoicResult,
    Volume,
    least_trusted,
)
from models.plausibility import withhold_implausible
from models.qct.acquisition import describe_acquisition
from models.qct.densitometry import analyse_densitometry
from models.qct.lungmask import segment_lungs
from models.qct.measurements import measure_regions
from models.qct.quality import assess_lung_mask
from models.registry import (
    CLASSICAL_LUNG_MASK,
    I3DR,
    LUNGMASK_LTRCLOBES,
    LUNGMASK_MODEL_SPECS,
    LUNGMASK_R231,
    MODEL_SPECS,
    SEVERITY,
    STOIC,
    STOIC_MEMBERS,
    get_spec,
    unavailable_run,
)
from models.runtime import LearnedModel, ModelProvider, installed_model
from models.segmentation import segment_lesions, segment_lobes
from models.severity import severity_from_masks
from models.stoic.catalog import AUTHORS_LUNG_MASKS
from models.stoic.ensemble import EnsembleResult, MemberReport, combine, run_member
from models.stoic.member import MemberInputs
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
        version=spec.version,
        provenance="weight_free",
        description=spec.description,
    )


def _ran(loaded: LearnedModel, note: str = "") -> ModelRun:
    """The record of a learned model that ran: its provenance is that of the weights it loaded."""
    spec = get_spec(loaded.name)
    return ModelRun(
        name=spec.name,
        status="ran",
        reason=f"ran with {loaded.source}" + (f"; {note}" if note else ""),
        version=loaded.version,
        provenance=loaded.provenance,
        weights_sha256=loaded.weights_sha256,
        weights_origin=loaded.weights_origin,
        validation_statement=loaded.validation_statement,
        description=spec.description,
    )


def _skipped(name: str, reason: str) -> ModelRun:
    spec = get_spec(name)
    return ModelRun(name=name, status="skipped", reason=reason, version=spec.version, description=spec.description)


def _failed(name: str, error: Exception) -> ModelRun:
    spec = get_spec(name)
    logger.exception("model %s failed", name)
    return ModelRun(
        name=name,
        status="failed",
        reason=f"failed: {type(error).__name__}: {error}",
        version=spec.version,
        description=spec.description,
    )


class _Stages:
    """The stage reports of one analysis; loading a model's weights is a stage of its own.

    A weights file can take longer to read than the model takes to run, and the first job of a
    worker pays for it while later ones reuse the loaded model, so an operator needs the two
    apart: :meth:`loading` reports ``"<model> weights"`` and then the stage that was running
    again (the receiver adds up the parts of a stage, e.g. ``server.services.stage_clock``).
    """

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._current: tuple[str, float] | None = None

    def report(self, stage: str, fraction: float) -> None:
        """Enter ``stage`` at ``fraction`` of the analysis."""
        self._current = (stage, fraction)
        if self._progress is not None:
            self._progress(stage, fraction)

    @contextmanager
    def loading(self, model: str) -> Iterator[None]:
        """Report the weights of ``model`` as a stage while the body loads them, then the stage before."""
        before = self._current
        self.report(f"{model} weights", before[1] if before is not None else 0.0)
        try:
            yield
        finally:
            if before is not None:
                self.report(*before)


@dataclass
class _State:
    """What the stages have produced so far, and where the analysis is (``stages``)."""

    masks: dict[str, np.ndarray]
    mask_sources: dict[str, str]
    stages: _Stages = field(default_factory=lambda: _Stages(None))
    runs: dict[str, ModelRun] = field(default_factory=dict)
    corads: CoradsResult | None = None
    severity: SeverityResult | None = None
    stoic: StoicResult | None = None
    i3dr: I3drResult | None = None


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
        Age and sex from the header, for the STOIC2021 members that use them.
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
        lungs and lobes; the zone densitometry when a lung was found; the acquisition; CO-RADS
        and severity when they ran; one :class:`ModelRun` per registered model; the quality
        assessment and the segmentation's warnings.
    """

    stages = _Stages(progress)
    report = stages.report
    provider = provider or ModelProvider(weights, demo_weights=demo_weights)
    logger.debug("analysing a %s volume (age %s, sex %s)", volume.hu.shape, context.age_years, context.sex)
    report("lung_mask", 0.0)
    segmentation = segment_lungs(volume)
    lungs = segmentation.left | segmentation.right
    quality = assess_lung_mask(volume, segmentation.left, segmentation.right)
    state = _State(
        masks={"lungs": lungs, "lung_left": segmentation.left, "lung_right": segmentation.right},
        mask_sources=dict.fromkeys(("lungs", "lung_left", "lung_right"), CLASSICAL_LUNG_MASK),
        stages=stages,
    )
    state.runs[CLASSICAL_LUNG_MASK] = _lung_mask_run(segmentation.warnings, bool(lungs.any()))
    _learned_stages(volume, segmentation.left, segmentation.right, quality, provider, state, report)
    if quality.plausible:
        report("stoic", 0.8)
        _stoic(volume, context, provider, state)
        report("i3dr", 0.88)
        _i3dr(volume, provider, state)
    report("measurements", 0.95)
    measured = {
        name: mask for name, mask in state.masks.items() if name in ("lungs", "lung_left", "lung_right", *LOBE_NAMES)
    }
    measurements = measure_regions(volume, measured)
    report("densitometry", 0.97)
    densitometry = _densitometry(volume, segmentation.left, segmentation.right, quality)
    runs = {
        spec.name: state.runs.get(spec.name) or unavailable_run(spec, weights, demo_weights=demo_weights)
        for spec in MODEL_SPECS
    }
    for spec in LUNGMASK_MODEL_SPECS:  # listed only when installed: without them, results are as before
        if spec.name in state.runs or provider.installed(spec.name) is not None:
            runs[spec.name] = state.runs.get(spec.name) or unavailable_run(spec, provider.weights)
    findings = Findings(
        volume=volume,
        masks=state.masks,
        measurements=measurements,
        models=runs,
        pipeline_version=PIPELINE_VERSION,
        corads=state.corads,
        stoic=state.stoic,
        i3dr=state.i3dr,
        severity=state.severity,
        quality=quality,
        mask_sources=state.mask_sources,
        warnings=segmentation.warnings,
        configuration=provider.configuration(),
        densitometry=densitometry,
        acquisition=describe_acquisition(volume),
    )
    report("done", 1.0)
    return withhold_implausible(findings)


def _densitometry(
    volume: Volume, left: np.ndarray, right: np.ndarray, quality: QualityAssessment
) -> Densitometry | None:
    """The weight-free zone densitometry of the classical lung mask; None when it found no lung."""
    if not (left.any() or right.any()):
        return None
    notes: tuple[str, ...] = ()
    if not quality.plausible:
        notes = (
            "the lung mask failed the quality gate (" + "; ".join(quality.reasons) + "); these numbers "
            "describe that mask",
        )
    return analyse_densitometry(volume, left, right, CLASSICAL_LUNG_MASK, notes)


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
    learned = ("lobes", LUNGMASK_LTRCLOBES, LUNGMASK_R231, "lesions", SEVERITY, "corads", STOIC, *STOIC_MEMBERS, I3DR)
    if not quality.plausible:
        why = "not run: the lung mask failed the quality gate (" + "; ".join(quality.reasons) + ")"
        state.runs.update({name: _skipped(name, why) for name in learned if _available(name, provider)})
        return
    lungs = left | right
    report("lobes", 0.15)
    _lobes(volume, left, right, provider, state)
    report("lesions", 0.4)
    _lesions(volume, lungs, provider, state)
    report("severity", 0.65)
    _severity(volume, state)
    report("corads", 0.7)
    _corads(volume, lungs, provider, state)


def _lesions(volume: Volume, lungs: np.ndarray, provider: ModelProvider, state: _State) -> None:
    """The lesion masks, when the lesion network can run."""
    with _using(provider, "lesions", state) as lesions:
        if lesions is None:
            return
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


def _corads(volume: Volume, lungs: np.ndarray, provider: ModelProvider, state: _State) -> None:
    """CO-RADS, when the ensemble can run (with the lesion map in channel 2 when there is one)."""
    with _using(provider, "corads", state) as corads:
        if corads is None:
            return
        try:
            state.corads = corads.model.predict(volume, lungs, state.masks.get("lesions"))
            note = "lesion map in channel 2" if "lesions" in state.masks else "no lesion map: CT in all three channels"
            state.runs["corads"] = _ran(corads, note)
        except Exception as exc:  # noqa: BLE001 - recorded on the model; the analysis goes on
            state.runs["corads"] = _failed("corads", exc)


def _lobe_order(provider: ModelProvider) -> tuple[tuple[str, ...], str]:
    """The lobe models to try, in order, and why that order when there is a choice.

    lungmask's LTRCLobes (with R231) comes first, unless only the project's own lobe weights carry
    the site's validation statement; the second runs only when the first fails.
    """
    lungmask = provider.installed(LUNGMASK_LTRCLOBES)
    own = _available("lobes", provider)
    if lungmask is None or not own:
        return (LUNGMASK_LTRCLOBES,) if lungmask is not None else ("lobes",) if own else (), ""
    fill = provider.installed(LUNGMASK_R231)
    lungmask_validated = lungmask.validated and (fill is None or fill.validated)
    own_installed = provider.installed("lobes")
    own_validated = own_installed is not None and own_installed.validated
    if own_validated and not lungmask_validated:
        return ("lobes", LUNGMASK_LTRCLOBES), f"the site validated the lobes weights, not {LUNGMASK_LTRCLOBES}'s"
    if own_installed is None:
        why = "the lobes model has only generated demonstration weights"
    elif lungmask_validated and not own_validated:
        why = "the site validated lungmask's weights only"
    else:
        both = "both have" if own_validated else "neither has"
        why = f"{both} a validation statement, and lungmask is preferred then"
    return (LUNGMASK_LTRCLOBES, "lobes"), why


def _lobes(volume: Volume, left: np.ndarray, right: np.ndarray, provider: ModelProvider, state: _State) -> None:
    """Lobe masks from one lobe model (:func:`_lobe_order`); the other is recorded as not run, and why."""
    order, why = _lobe_order(provider)
    chosen: str | None = None
    for name in order:
        if chosen is not None:
            state.runs[name] = _skipped(name, f"not run: the lobe masks come from {chosen} ({why})")
            continue
        note = f"chosen over {', '.join(n for n in order if n != name)}: {why}" if why else ""
        failed = [n for n in order if state.runs.get(n) is not None and state.runs[n].status == "failed"]
        if failed:
            note = f"fallback after {', '.join(failed)} failed"
        if name == LUNGMASK_LTRCLOBES:
            ok = _lungmask_lobes(volume, provider, state, note)
        else:
            ok = _own_lobes(volume, left, right, provider, state, note)
        chosen = name if ok else None
    fill = provider.installed(LUNGMASK_R231)
    if fill is not None and LUNGMASK_R231 not in state.runs:
        state.runs[LUNGMASK_R231] = _skipped(
            LUNGMASK_R231,
            f"not run: R231 serves here only as the fill model of {LUNGMASK_LTRCLOBES}, which did not run; the lung "
            f"masks come from {CLASSICAL_LUNG_MASK}",
        )


def _own_lobes(
    volume: Volume, left: np.ndarray, right: np.ndarray, provider: ModelProvider, state: _State, note: str
) -> bool:
    """The project's lobe network on the classical lung masks; True when it gave the masks."""
    with _using(provider, "lobes", state) as lobes:
        if lobes is None:
            return False
        try:
            found = segment_lobes(
                volume, left, right, lobes.model, device=provider.device, settings=provider.lobe_settings
            )
        except Exception as exc:  # noqa: BLE001 - recorded on the model; the analysis goes on
            state.runs["lobes"] = _failed("lobes", exc)
            return False
        _add_masks(state, found, "lobes")
        state.runs["lobes"] = _ran(lobes, note)
        return True


def _lungmask_version() -> str:
    try:
        return package_version("lungmask")
    except PackageNotFoundError:
        return "unknown version"


def _lungmask_lobes(volume: Volume, provider: ModelProvider, state: _State, note: str) -> bool:
    """lungmask's LMInferer on the series (LTRCLobes, fused with R231 when installed); True when it gave the masks.

    Fused, the lobe masks depend on both files: their provenance is the less trusted of the two,
    and R231 gets its own record of having run as the fill model.
    """
    with _using(provider, LUNGMASK_LTRCLOBES, state) as lungmask:
        if lungmask is None:
            return False
        try:
            found = lungmask.model.lobes.segment(volume)
        except Exception as exc:  # noqa: BLE001 - recorded on the model; the analysis goes on
            state.runs[LUNGMASK_LTRCLOBES] = _failed(LUNGMASK_LTRCLOBES, exc)
            return False
        fill = lungmask.model.fill  # the R231 file loaded with it, even if another was installed since
        loaded = replace(lungmask, model=None)  # its record, without the networks
    _add_masks(state, found, LUNGMASK_LTRCLOBES)
    how = f"lungmask {_lungmask_version()} LMInferer on the series, CPU"
    if fill is None:
        how += (
            f"; LTRCLobes alone: {LUNGMASK_R231} was not installed, so the lobes are not fused with R231 as lungmask "
            "recommends (LTRCLobes_R231)"
        )
        state.runs[LUNGMASK_LTRCLOBES] = _ran(loaded, "; ".join(filter(None, (how, note))))
        return True
    fill_model = installed_model(None, fill)
    provenance = least_trusted((loaded.provenance, fill_model.provenance))
    how += f"; fused with {LUNGMASK_R231} (lungmask's LTRCLobes_R231), {fill_model.source}"
    run = _ran(loaded, "; ".join(filter(None, (how, note))))
    state.runs[LUNGMASK_LTRCLOBES] = replace(
        run,
        provenance=provenance,
        validation_statement=run.validation_statement if provenance == "installed_validated" else None,
    )
    state.runs[LUNGMASK_R231] = _ran(fill_model, f"as the fill model of {LUNGMASK_LTRCLOBES} (LTRCLobes_R231)")
    return True


def _load(provider: ModelProvider, name: str, state: _State) -> LearnedModel | None:
    """The loaded model, or None; a weights file that does not load is recorded as a failure of its model.

    Loading is a stage of its own (:class:`_Stages`) for a model that has weights to load.
    """
    try:
        if not _available(name, provider):
            return provider.load(name)
        with state.stages.loading(name):
            return provider.load(name)
    except Exception as exc:  # noqa: BLE001 - e.g. a corrupt or mismatched weights file; the analysis goes on
        state.runs[name] = _failed(name, exc)
        return None


@contextmanager
def _using(provider: ModelProvider, name: str, state: _State) -> Iterator[LearnedModel | None]:
    """The loaded model (:func:`_load`) for the body, released afterwards (:meth:`ModelProvider.release`).

    The caller's name for it stays bound after the block; each use sits in its own function, so
    that the model's memory goes when that function returns.
    """
    try:
        yield _load(provider, name, state)
    finally:
        provider.release(name)


def _available(name: str, provider: ModelProvider) -> bool:
    """Whether ``name`` would have run (weights or demo weights), so "skipped" is the honest status."""
    if name == SEVERITY:
        lobes = _available("lobes", provider) or _available(LUNGMASK_LTRCLOBES, provider)
        return lobes and _available("lesions", provider)
    if name in (LUNGMASK_LTRCLOBES, LUNGMASK_R231):
        return provider.installed(name) is not None  # never on generated weights
    if name == STOIC:
        return any(_available(member, provider) for member in provider.stoic_config.members)
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
    lobe_source = state.mask_sources[LOBE_NAMES[0]]
    inputs = (lobe_source, "lesions")
    spec = get_spec(SEVERITY)
    state.runs[SEVERITY] = ModelRun(
        name=SEVERITY,
        status="ran",
        reason="computed from the lobe and lesion masks (seeds/003 thresholds)"
        + (f"; lobe masks from {lobe_source}" if lobe_source != "lobes" else ""),
        version=spec.version,
        provenance=_combined(state.runs, inputs),
        inputs=inputs,
        description=spec.description,
    )


def _combined(runs: Mapping[str, ModelRun], inputs: tuple[str, ...]) -> Provenance:
    """The provenance of an output computed from the outputs of ``inputs``: the least trusted of theirs."""
    provenances = [runs[name].provenance for name in inputs]
    return least_trusted(p for p in provenances if p is not None)


def _stoic(volume: Volume, context: PatientContext, provider: ModelProvider, state: _State) -> None:
    """The STOIC2021 ensemble over the configured members that have weights; a record for every member.

    A member whose authors computed its input from lungmask R231 gets R231's lungs when R231 is
    installed (:data:`models.stoic.catalog.AUTHORS_LUNG_MASKS`), the classical mask otherwise;
    each member's record names the mask it used.
    """
    config = provider.stoic_config
    classical = MemberInputs(
        volume=volume,
        lungs=state.masks["lungs"],
        lung_left=state.masks["lung_left"],
        lung_right=state.masks["lung_right"],
        lesions=state.masks.get("lesions"),
        age_years=context.age_years,
        sex=context.sex,
    )
    wanting_r231 = [name for name in config.members if name in AUTHORS_LUNG_MASKS and _available(name, provider)]
    authors = _authors_lung_inputs(classical, provider, state, wanting_r231)
    mask_notes = {name: _mask_note(name, authors is not None) for name in config.members}
    records: dict[str, LearnedModel] = {}
    reports = {
        name: _member_report(
            name, provider, state, authors if authors is not None and name in wanting_r231 else classical, records
        )
        for name in config.members
    }
    result = combine(config, reports)
    for name, report in result.members.items():
        record = records.get(name)
        if record is not None:
            state.runs[name] = _member_run(report, record, mask_notes[name])
    for name in STOIC_MEMBERS:
        if name not in config.members and _available(name, provider):
            state.runs[name] = _skipped(name, f"not run: not a member of the configured ensemble {config.name}")
    state.stoic = result.to_stoic_result()
    state.runs[STOIC] = _stoic_run(result, state.runs)


def _member_report(
    name: str, provider: ModelProvider, state: _State, inputs: MemberInputs, records: dict[str, LearnedModel]
) -> MemberReport:
    """One member loaded, run on ``inputs`` and released, so that the next member's weights take its memory.

    The record of its weights (without the networks) goes to ``records`` for its :class:`ModelRun`.
    """
    with _using(provider, name, state) as loaded:
        if loaded is None and name in state.runs:  # its weights did not load (recorded by _load)
            return MemberReport(name, "failed", state.runs[name].reason.removeprefix("failed: "))
        if loaded is not None:
            records[name] = replace(loaded, model=None)
        return run_member(name, loaded.model if loaded is not None else None, inputs)


def _authors_lung_inputs(
    classical: MemberInputs, provider: ModelProvider, state: _State, members: list[str]
) -> MemberInputs | None:
    """The members' inputs with lungmask R231's lungs, when a member wants them and R231 runs; else None.

    R231's record says which members it served (added to its record as LTRCLobes' fill model).
    """
    if not members or provider.installed(LUNGMASK_R231) is None:
        return None
    with _using(provider, LUNGMASK_R231, state) as loaded:
        if loaded is None:
            return None
        try:
            left, right = loaded.model.segment(classical.volume)
        except Exception as exc:  # noqa: BLE001 - recorded on the model; the members fall back to the classical mask
            state.runs[LUNGMASK_R231] = _failed(LUNGMASK_R231, exc)
            return None
        r231 = replace(loaded, model=None)  # its record, without the network
    served = f"as the input lung mask of {', '.join(members)} (as their authors ran them)"
    before = state.runs.get(LUNGMASK_R231)
    if before is not None and before.status == "ran":
        state.runs[LUNGMASK_R231] = replace(before, reason=f"{before.reason}; {served}")
    else:
        state.runs[LUNGMASK_R231] = _ran(r231, served)
    return replace(classical, lungs=left | right, lung_left=left, lung_right=right)


def _mask_note(member: str, r231_ran: bool) -> str:
    """Which lung mask a member's input was computed from, in words for its record."""
    wanted = AUTHORS_LUNG_MASKS.get(member)
    if wanted is None:
        return f"input lung mask: {CLASSICAL_LUNG_MASK}"
    if r231_ran:
        return f"input lung mask: {wanted}, as its authors computed it"
    return f"input lung mask: {CLASSICAL_LUNG_MASK} (its authors used {wanted}, which did not run here: not installed)"


def _member_run(report: MemberReport, model: LearnedModel, mask_note: str) -> ModelRun:
    """A member's record: ran (with its notes and the lung mask it used), refused this input, or failed."""
    if report.status == "ran":
        notes = report.output.notes if report.output is not None else ()
        return _ran(model, "; ".join((mask_note, *notes)))
    if report.status == "unavailable":
        return _skipped(report.name, f"not run: {report.reason}")
    spec = get_spec(report.name)
    return ModelRun(
        name=report.name,
        status="failed",
        reason=f"failed: {report.reason}",
        version=spec.version,
        description=spec.description,
    )


def _stoic_run(result: EnsembleResult, runs: Mapping[str, ModelRun]) -> ModelRun:
    """The ensemble's record: which members it averaged per output; its provenance is the least trusted of theirs."""
    spec = get_spec(STOIC)
    averaged = {name for names in result.averaged.values() for name in names}
    if not averaged:
        none_installed = all(r.status == "not_installed" for r in result.members.values())
        if none_installed:
            reason = (
                f"no weights installed for any member of {result.config} ({', '.join(result.members)}); "
                "install with `lungcds models install`"
            )
        else:
            missing = "; ".join(f"{name}: {why}" for name, why in result.not_run.items())
            reason = f"no member of {result.config} gave a result ({missing})"
        return ModelRun(
            name=STOIC,
            status="not_installed" if none_installed else "skipped",
            reason=reason,
            version=spec.version,
            description=spec.description,
        )
    parts = [
        f"{words} = mean of {', '.join(result.averaged[key]) or 'no member'}"
        for key, words in (("p_covid", "P(COVID-19)"), ("p_severe", "P(severe)"))
    ]
    reason = f"ran ({result.config}): " + "; ".join(parts)
    if not result.complete:
        reason += "; incomplete ensemble: " + "; ".join(f"{name} {why}" for name, why in result.not_run.items())
    inputs = tuple(sorted(averaged))
    return ModelRun(
        name=STOIC,
        status="ran",
        reason=reason,
        version=spec.version,
        provenance=_combined(runs, inputs),
        inputs=inputs,
        description=spec.description,
    )


def _i3dr(volume: Volume, provider: ModelProvider, state: _State) -> None:
    """I3Dr, when it can run (:func:`_run_i3dr`)."""
    with _using(provider, I3DR, state) as loaded:
        if loaded is not None:
            _run_i3dr(volume, loaded, state)


def _run_i3dr(volume: Volume, loaded: LearnedModel, state: _State) -> None:
    """I3Dr per lobe when the five lobe masks exist and are not empty, else model A at patient level, saying why."""
    lobes = {name: state.masks[name] for name in LOBE_NAMES if name in state.masks and state.masks[name].any()}
    missing = [name for name in LOBE_NAMES if name not in lobes]
    lobe_source = state.mask_sources.get(LOBE_NAMES[0], "lobes")
    lobe_run = state.runs.get(lobe_source)
    why_not_lobar = (
        f"lobe masks missing or empty ({', '.join(missing)}; lobes: {lobe_run.reason if lobe_run else 'not run'})"
        if missing
        else ""
    )
    try:
        prediction = None
        if not missing:
            try:
                prediction = loaded.model.predict(volume, state.masks["lungs"], lobes)
            except ValueError as exc:  # e.g. a lobe too small to survive resampling to 1.6 mm
                why_not_lobar = str(exc)
        if prediction is None:
            prediction = loaded.model.predict_patient_only(volume, state.masks["lungs"])
    except Exception as exc:  # noqa: BLE001 - recorded on the model; the analysis goes on
        state.runs[I3DR] = _failed(I3DR, exc)
        return
    result = prediction.to_result()
    if why_not_lobar:
        result = replace(result, notes=(f"no lobar estimates: {why_not_lobar}", *result.notes))
    state.i3dr = result
    lobar = "lobar" if lobe_source == "lobes" else f"lobar, lobe masks from {lobe_source}"
    state.runs[I3DR] = _ran(loaded, "patient level only (model A)" if why_not_lobar else lobar)
