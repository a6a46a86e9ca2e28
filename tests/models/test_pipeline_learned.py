"""The learned stages of the pipeline with generated weights: every output marked, failures contained."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from models.findings import LOBE_NAMES, UNVALIDATED_STATEMENTS, Findings
from models.phantom import LesionSpec, chest_phantom
from models.pipeline import analyse
from models.plausibility import I3DR_BOUNDS, MIN_LOBE_ML
from models.registry import STOIC_MEMBERS
from models.runtime import ModelProvider
from models.stoic.ensemble import STOIC_TOP3
from models.volume import PatientContext
from tests.small_models import small_provider

CONTEXT = PatientContext(age_years=60.0, sex="F")


@pytest.fixture(scope="module")
def phantom():  # type: ignore[no-untyped-def]
    return chest_phantom(
        (64, 112, 112),
        (5.0, 3.0, 3.0),
        lesions=(LesionSpec("RLL", "consolidation", 0.3), LesionSpec("LUL", "ggo", 0.2)),
    )


@pytest.fixture(scope="module")
def findings(phantom) -> Findings:  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    return analyse(phantom.volume(), CONTEXT, provider=small_provider())


def test_every_learned_model_ran_and_says_its_weights_are_generated(findings: Findings) -> None:
    for name in ("lobes", "lesions", "corads"):
        run = findings.models[name]
        assert run.status == "ran", run.reason
        assert run.validated is False and run.weights_sha256 is None
        assert run.provenance == "generated_weights" and "generated demonstration weights" in run.reason
        assert run.unvalidated_statement == UNVALIDATED_STATEMENTS["generated_weights"]
    for name in ("i3dr", *STOIC_TOP3.members):
        run = findings.models[name]
        assert run.status == "ran" and not run.validated and "generated demonstration weights" in run.reason, name
        assert run.provenance == "generated_weights", name
    for name, inputs in (("severity", ("lobes", "lesions")), ("stoic", tuple(sorted(STOIC_TOP3.members)))):
        run = findings.models[name]
        assert run.provenance == "generated_weights" and run.inputs == inputs, "the least trusted of its inputs"
    assert findings.models["lung_mask_classical"].provenance == "weight_free"
    assert findings.configuration["generated_weights"].startswith("seed 0; small test networks stand in for ")
    for name in set(STOIC_MEMBERS) - set(STOIC_TOP3.members):
        run = findings.models[name]
        assert run.status == "skipped" and "not a member of the configured ensemble stoic_top3" in run.reason


def test_stoic_top3_averages_its_members_per_output(findings: Findings) -> None:
    stoic = findings.stoic
    assert stoic is not None and stoic.config == "stoic_top3" and stoic.complete
    assert set(stoic.averaged["p_covid"]) == {"stoic_simonj", "stoic_flyingbird", "stoic_hal9000"}
    assert set(stoic.averaged["p_severe"]) == {"stoic_code1055", "stoic_simonj", "stoic_flyingbird"}
    for output, value in (("p_covid", stoic.p_covid), ("p_severe", stoic.p_severe)):
        members = [stoic.members[name][output] for name in stoic.averaged[output]]
        assert value == pytest.approx(sum(members) / 3, abs=1e-12)
        assert all(0.0 <= p <= 1.0 for p in members)
    # Code 1055's untrained COVID-19 output is reported, as its submission did, but not averaged.
    assert "p_covid" in stoic.members["stoic_code1055"] and "stoic_code1055" not in stoic.averaged["p_covid"]
    assert any("demonstration weights" in note for note in stoic.notes)
    run = findings.models["stoic"]
    assert run.status == "ran" and not run.validated and "incomplete" not in run.reason
    body = json.loads(json.dumps(findings.as_dict()))
    assert body["stoic"]["p_covid"] == stoic.p_covid and body["stoic"]["config"] == "stoic_top3"
    assert body["stoic"]["p_severe_meaning"].startswith("conditional on COVID-19")


def test_untrained_networks_give_impossible_numbers_and_they_are_withheld(findings: Findings) -> None:
    """The generated lobe network makes fragments of lobes and I3Dr negative volumes: none is reported as a result.

    (The lobar rescaling itself is tested in ``tests/models/i3dr/test_inference.py``.)
    """
    fragments = findings.withheld_values("measurements")
    assert fragments, "the generated lobe network makes lobes of a few mL"
    for withheld in fragments:
        assert withheld.site in LOBE_NAMES and withheld.site not in findings.measurements
        assert "is below the plausible minimum of 50 mL for a lobe" in withheld.reason
    assert all(m.volume_ml >= MIN_LOBE_ML for name, m in findings.measurements.items() if name in LOBE_NAMES)
    i3dr = findings.i3dr
    assert i3dr is not None and findings.models["i3dr"].reason.endswith("lobar")
    assert not i3dr.lobes and not i3dr.lobes_unscaled, "lobar estimates need every lobe mask"
    assert findings.withheld_values("i3dr", "lobes")[0].reason.startswith("withheld: the lobar estimates depend on")
    assert findings.severity is None and findings.withheld_values("severity")
    negative = [w for w in findings.withheld_values("i3dr", "patient") if "must be above 0" in w.reason]
    assert negative, "model A of the generated I3Dr gives negative volumes"
    for w in negative:
        assert w.quantity not in i3dr.patient
        assert w.reason.startswith("withheld: patient (model A) ") and "is not physiological" in w.reason
    for key, value in i3dr.patient.items():
        assert I3DR_BOUNDS[key].low < value <= I3DR_BOUNDS[key].high
    body = json.loads(json.dumps(findings.as_dict()))
    for w in negative:
        assert body["i3dr"]["patient"][w.quantity] is None
        assert {"site": "patient", "quantity": w.quantity, "reason": w.reason} in body["i3dr"]["withheld"]
    for w in fragments:
        assert (
            body["measurements"][w.site]["volume_ml"] is None and body["measurements"][w.site]["withheld"] == w.reason
        )


def test_on_the_cpu_each_model_is_freed_after_its_stage_unless_models_are_kept(  # type: ignore[no-untyped-def]
    phantom, findings: Findings, caplog: pytest.LogCaptureFixture
) -> None:
    """Freed models are loaded again by the next job; kept ones by the first job only.

    The numbers do not depend on it: a model loaded again is the same model.
    """
    volume = phantom.volume()

    def loads(provider: ModelProvider) -> tuple[list[str], Findings]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="models.runtime"):
            found = analyse(volume, CONTEXT, provider=provider)
        loaded = [r.getMessage().split()[2] for r in caplog.records if r.getMessage().startswith("loaded model ")]
        return loaded, found

    freed = small_provider()
    assert not freed.keep_loaded and ModelProvider(None, device="cuda").keep_loaded, "the defaults per device"
    learned = {"lobes", "lesions", "corads", "i3dr", *STOIC_TOP3.members}
    first, _ = loads(freed)
    again, refound = loads(freed)
    assert set(first) == learned and sorted(again) == sorted(first)
    kept = small_provider(keep_loaded=True)
    assert set(loads(kept)[0]) == learned and loads(kept)[0] == []
    assert refound.corads == findings.corads and refound.stoic == findings.stoic and refound.i3dr == findings.i3dr
    for name in ("lobes", *LOBE_NAMES, "lesions"):
        if name in findings.masks:
            assert np.array_equal(refound.masks[name], findings.masks[name]), name


def test_lobe_masks_are_on_the_right_side_and_measured(findings: Findings) -> None:
    left, right = findings.masks["lung_left"], findings.masks["lung_right"]
    for lobe in LOBE_NAMES:
        mask = findings.masks[lobe]
        side = left if lobe.startswith("L") else right
        assert not (mask & ~side).any(), f"{lobe} leaves its lung"
        assert findings.mask_sources[lobe] == "lobes"
        assert (lobe in findings.measurements) != bool(findings.withheld_values("measurements", lobe))
    union = np.logical_or.reduce([findings.masks[lobe] for lobe in LOBE_NAMES])
    assert np.array_equal(union, findings.masks["lungs"]), "the lobes fill the lungs"


def test_lesions_stay_in_the_lungs_and_feed_corads_and_severity(findings: Findings) -> None:
    lesions = findings.masks["lesions"]
    assert not (lesions & ~findings.masks["lungs"]).any()
    assert findings.mask_sources["lesions"] == "lesions"
    assert findings.corads is not None and 1 <= findings.corads.category <= 5
    assert len(findings.corads.members) == 2
    assert "lesion map in channel 2" in findings.models["corads"].reason
    severity = findings.models["severity"]
    if severity.status == "ran":
        assert severity.validated is False, "derived from unvalidated masks"
        if findings.severity is not None:
            assert findings.severity.total_ctss == sum(int(v["ctss"]) for v in findings.severity.lobes.values())
        else:
            assert findings.withheld_values("severity"), "a severity score that ran is shown or withheld with a reason"
    else:
        assert severity.status == "skipped" and severity.reason.startswith("not computed")


def test_the_quality_gate_stops_the_learned_models(phantom) -> None:  # type: ignore[no-untyped-def]
    volume = phantom.volume()
    hu = volume.hu.copy()
    hu[phantom.left] = 40.0  # the left lung is gone (e.g. a pneumonectomy or a whiteout)
    broken = type(volume)(hu=hu, geometry=volume.geometry, source_sop_instance_uids=volume.source_sop_instance_uids)
    findings = analyse(broken, CONTEXT, provider=small_provider())
    assert findings.quality is not None and not findings.quality.plausible
    for name in ("lobes", "lesions", "severity", "corads", "stoic", "i3dr", *STOIC_MEMBERS):
        run = findings.models[name]
        assert run.status == "skipped" and "quality gate" in run.reason
    assert findings.corads is None and "LUL" not in findings.masks
    assert findings.stoic is None and findings.i3dr is None


def test_a_failing_model_is_recorded_and_the_rest_goes_on(phantom) -> None:  # type: ignore[no-untyped-def]
    provider = small_provider()
    broken = ModelProvider(
        None,
        demo_weights=True,
        lobe_settings=provider.lobe_settings,
        lesion_settings=provider.lesion_settings,
        demo_factories={
            **provider._demo_factories,
            "lobes": lambda: torch.nn.Conv3d(5, 6, 1),  # wrong input channels: the forward pass fails
        },
    )
    findings = analyse(phantom.volume(), CONTEXT, provider=broken)
    assert findings.models["lobes"].status == "failed" and "RuntimeError" in findings.models["lobes"].reason
    assert findings.models["lesions"].status == "ran" and findings.models["corads"].status == "ran"
    assert findings.models["severity"].status == "skipped"
    assert "lungs" in findings.measurements and "LUL" not in findings.measurements
    assert findings.i3dr is not None and not findings.i3dr.lobes and findings.i3dr.patient
    assert "no lobar estimates: lobe masks missing or empty" in findings.i3dr.notes[0]
    assert "RuntimeError" in findings.i3dr.notes[0]
    assert findings.models["i3dr"].reason.endswith("patient level only (model A)")


def test_without_weights_nothing_learned_runs() -> None:
    phantom = chest_phantom((48, 96, 96), (5.0, 3.5, 3.5))
    findings = analyse(phantom.volume(), CONTEXT)
    for name in ("lobes", "lesions", "corads", "i3dr", *STOIC_MEMBERS):
        assert findings.models[name].status == "not_installed"
        assert "no weights installed" in findings.models[name].reason
    assert findings.corads is None and set(findings.masks) == {"lungs", "lung_left", "lung_right"}
    assert findings.stoic is None and findings.i3dr is None


def test_i3dr_falls_back_to_patient_level_when_a_lobe_cannot_be_used(phantom, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    provider = small_provider()
    loaded = provider.load("i3dr")
    assert loaded is not None
    reason = "region 'RML' is empty after resampling: there is nothing to centre on"

    def refuse(*_: object) -> None:
        raise ValueError(reason)

    monkeypatch.setattr(loaded.model, "predict", refuse)
    findings = analyse(phantom.volume(), CONTEXT, provider=provider)
    assert findings.i3dr is not None and findings.i3dr.patient and not findings.i3dr.lobes
    assert findings.i3dr.notes[0] == f"no lobar estimates: {reason}"
    assert findings.models["i3dr"].status == "ran" and findings.models["i3dr"].reason.endswith("(model A)")
