"""models.pipeline: Findings with the three lung regions and honest model statuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models import PIPELINE_VERSION
from models.findings import LUNG_REGIONS, Findings, Geometry, Volume
from models.phantom import chest_phantom
from models.pipeline import analyse
from models.registry import CLASSICAL_LUNG_MASK, REGISTRY, STOIC_MEMBERS
from models.volume import PatientContext
from models.weights import WeightStore

CONTEXT = PatientContext(age_years=50.0, sex=None)
FindingsAndStages = tuple[Findings, list[tuple[str, float]]]


@pytest.fixture(scope="module")
def phantom_findings() -> FindingsAndStages:
    phantom = chest_phantom((38, 192, 192), (8.0, 2.0, 2.0))
    stages: list[tuple[str, float]] = []
    findings = analyse(phantom.volume(), CONTEXT, progress=lambda name, done: stages.append((name, done)))
    return findings, stages


def test_masks_and_measurements_of_the_three_regions(phantom_findings: FindingsAndStages) -> None:
    findings, _ = phantom_findings
    assert set(findings.masks) == set(LUNG_REGIONS)
    np.testing.assert_array_equal(findings.masks["lungs"], findings.masks["lung_left"] | findings.masks["lung_right"])
    assert tuple(findings.measurements) == LUNG_REGIONS
    ml = findings.volume.geometry.voxel_volume_ml
    for region in LUNG_REGIONS:
        measured = findings.measurements[region]
        assert measured.voxel_count == int(findings.masks[region].sum())
        assert measured.volume_ml == pytest.approx(measured.voxel_count * ml)
        assert measured.fpv_ml is not None and 0 < measured.fpv_ml <= measured.volume_ml
    assert 1000.0 < findings.measurements["lung_left"].volume_ml < 2500.0
    assert findings.pipeline_version == PIPELINE_VERSION
    assert findings.warnings == ()


def test_model_statuses_are_honest(phantom_findings: FindingsAndStages) -> None:
    findings, _ = phantom_findings
    assert tuple(findings.models) == tuple(REGISTRY)
    mask_run = findings.models[CLASSICAL_LUNG_MASK]
    assert mask_run.status == "ran" and mask_run.validated
    assert "classical" in mask_run.reason and "weight-free" in mask_run.reason
    ran = [name for name, run in findings.models.items() if run.status == "ran"]
    assert ran == [CLASSICAL_LUNG_MASK]
    for name in ("lobes", "lesions", "corads", "i3dr", *STOIC_MEMBERS):
        run = findings.models[name]
        assert run.status == "not_installed" and not run.validated and run.weights_sha256 is None
        assert "no weights installed" in run.reason
    stoic = findings.models["stoic"]
    assert stoic.status == "not_installed" and stoic.reason == (
        "no weights installed for any member of stoic_top3 (stoic_code1055, stoic_simonj, stoic_flyingbird, "
        "stoic_hal9000); install with `lungcds models install`"
    )
    assert findings.models["severity"].status == "skipped"
    assert "no lobe and no lesion masks" in findings.models["severity"].reason
    assert all(run.unvalidated_statement is None for run in findings.models.values())
    assert findings.corads is None and findings.stoic is None and findings.i3dr is None and findings.severity is None


def test_result_json_is_serialisable(phantom_findings: FindingsAndStages) -> None:
    findings, _ = phantom_findings
    text = json.dumps(findings.as_dict())
    result = json.loads(text)
    for key in ("volume_ml", "fpv_ml", "laa950_pct", "perc15_hu", "mean_hu", "haa_pct"):
        assert key in result["measurements"]["lungs"]
    assert result["models"]["corads"]["status"] == "not_installed"


def test_progress_goes_forward_to_done(phantom_findings: FindingsAndStages) -> None:
    _, stages = phantom_findings
    fractions = [fraction for _, fraction in stages]
    assert fractions == sorted(fractions)
    assert stages[0] == ("lung_mask", 0.0)
    assert stages[-1] == ("done", 1.0)


def test_a_weights_file_that_does_not_load_fails_its_model_only(tmp_path: Path) -> None:
    store = WeightStore(tmp_path / "weights")
    for name in ("i3dr", "stoic_code1055"):
        source = tmp_path / f"{name}.safetensors"
        source.write_bytes(b"not a safetensors file")
        store.install(source, name)
    volume = chest_phantom((64, 112, 112), (5.0, 3.0, 3.0)).volume()
    findings = analyse(volume, CONTEXT, weights=store)
    assert findings.quality is not None and findings.quality.plausible
    for name in ("i3dr", "stoic_code1055"):
        run = findings.models[name]
        assert run.status == "failed" and run.reason.startswith("failed: ") and not run.validated
    assert findings.i3dr is None and findings.stoic is None
    stoic = findings.models["stoic"]
    assert stoic.status == "skipped" and "stoic_code1055: failed:" in stoic.reason
    assert findings.models[CLASSICAL_LUNG_MASK].status == "ran"


def test_no_lung_still_gives_findings_with_reasons() -> None:
    hu = np.full((6, 48, 48), 40.0, dtype=np.float32)
    geometry = Geometry(
        origin=(0.0, 0.0, 0.0),
        spacing=(5.0, 2.0, 2.0),
        direction=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
        shape=(6, 48, 48),
    )
    findings = analyse(Volume(hu=hu, geometry=geometry, source_sop_instance_uids=("",) * 6), CONTEXT)
    assert not findings.masks["lungs"].any()
    assert findings.measurements["lungs"].fpv_ml is None
    assert "empty" in findings.measurements["lungs"].note
    assert findings.warnings
    assert findings.models[CLASSICAL_LUNG_MASK].status == "ran"
    assert "found no lung" in findings.models[CLASSICAL_LUNG_MASK].reason
