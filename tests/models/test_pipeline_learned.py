"""The learned stages of the pipeline with generated weights: every output marked, failures contained."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.findings import LOBE_NAMES, Findings
from models.phantom import LesionSpec, chest_phantom
from models.pipeline import analyse
from models.runtime import ModelProvider
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
        assert "generated demonstration weights" in run.reason
    assert findings.any_unvalidated_output
    assert findings.models["stoic"].status == "not_installed"


def test_lobe_masks_are_on_the_right_side_and_measured(findings: Findings) -> None:
    left, right = findings.masks["lung_left"], findings.masks["lung_right"]
    for lobe in LOBE_NAMES:
        mask = findings.masks[lobe]
        side = left if lobe.startswith("L") else right
        assert not (mask & ~side).any(), f"{lobe} leaves its lung"
        assert findings.mask_sources[lobe] == "lobes"
        assert lobe in findings.measurements
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
        assert findings.severity is not None
        assert findings.severity.total_ctss == sum(int(v["ctss"]) for v in findings.severity.lobes.values())
        assert severity.validated is False, "derived from unvalidated masks"
    else:
        assert severity.status == "skipped" and severity.reason.startswith("not computed")


def test_the_quality_gate_stops_the_learned_models(phantom) -> None:  # type: ignore[no-untyped-def]
    volume = phantom.volume()
    hu = volume.hu.copy()
    hu[phantom.left] = 40.0  # the left lung is gone (e.g. a pneumonectomy or a whiteout)
    broken = type(volume)(hu=hu, geometry=volume.geometry, source_sop_instance_uids=volume.source_sop_instance_uids)
    findings = analyse(broken, CONTEXT, provider=small_provider())
    assert findings.quality is not None and not findings.quality.plausible
    for name in ("lobes", "lesions", "severity", "corads"):
        run = findings.models[name]
        assert run.status == "skipped" and "quality gate" in run.reason
    assert findings.corads is None and "LUL" not in findings.masks


def test_a_failing_model_is_recorded_and_the_rest_goes_on(phantom) -> None:  # type: ignore[no-untyped-def]
    provider = small_provider()
    broken = ModelProvider(
        None,
        demo_weights=True,
        lobe_settings=provider.lobe_settings,
        lesion_settings=provider.lesion_settings,
        demo_factories={
            "lobes": lambda: torch.nn.Conv3d(5, 6, 1),  # wrong input channels: the forward pass fails
            "lesions": provider._demo_factories["lesions"],
            "corads": provider._demo_factories["corads"],
        },
    )
    findings = analyse(phantom.volume(), CONTEXT, provider=broken)
    assert findings.models["lobes"].status == "failed" and "RuntimeError" in findings.models["lobes"].reason
    assert findings.models["lesions"].status == "ran" and findings.models["corads"].status == "ran"
    assert findings.models["severity"].status == "skipped"
    assert "lungs" in findings.measurements and "LUL" not in findings.measurements


def test_without_weights_nothing_learned_runs() -> None:
    phantom = chest_phantom((48, 96, 96), (5.0, 3.5, 3.5))
    findings = analyse(phantom.volume(), CONTEXT)
    for name in ("lobes", "lesions", "corads"):
        assert findings.models[name].status == "not_installed"
        assert "no weights installed" in findings.models[name].reason
    assert findings.corads is None and set(findings.masks) == {"lungs", "lung_left", "lung_right"}
