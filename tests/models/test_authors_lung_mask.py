"""Members whose authors used lungmask R231 get R231's lungs when it is installed, and say which mask they used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.findings import Volume
from models.phantom import chest_phantom
from models.pipeline import analyse
from models.registry import LUNGMASK_R231
from models.segmentation.lungmask_lobes import LungmaskLungs, lungmask_network
from models.stoic.flyingbird import TASKS, FlyingBirdConfig, StoicFlyingBird
from models.stoic.member import MemberInputs
from models.volume import PatientContext
from models.weights import WeightStore

CONTEXT = PatientContext(age_years=60.0, sex="M")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("authors_mask")
    torch.manual_seed(3)
    r231 = folder / "unet_r231.pth"
    torch.save(lungmask_network("R231").state_dict(), r231)  # as lungmask saves its published files
    config = FlyingBirdConfig(shape=(32, 32, 32), folds=1)
    networks = {task: [StoicFlyingBird.build_network(config, task)] for task in TASKS}
    member = StoicFlyingBird.trained(config, networks, weights="a small test member").save(folder / "fb.safetensors")
    return r231, member


@pytest.fixture(scope="module")
def phantom():  # type: ignore[no-untyped-def]
    return chest_phantom((16, 72, 72), (18.0, 5.0, 5.0), seed=2)  # few slices: lungmask's U-Net runs per slice


def _store(tmp_path: Path, files: tuple[Path, Path], with_r231: bool) -> WeightStore:
    store = WeightStore(tmp_path / "weights")
    store.install(files[1], "stoic_flyingbird")
    if with_r231:
        store.install(files[0], LUNGMASK_R231)
    return store


@pytest.mark.heavy
def test_flyingbird_runs_on_r231s_lungs_when_installed(
    tmp_path: Path,
    files: tuple[Path, Path],
    phantom,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    volume = phantom.volume()
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    segment = LungmaskLungs.segment

    def spy(self: LungmaskLungs, v: Volume) -> tuple[np.ndarray, np.ndarray]:
        seen.append(segment(self, v))
        return seen[-1]

    monkeypatch.setattr(LungmaskLungs, "segment", spy)
    findings = analyse(volume, CONTEXT, _store(tmp_path, files, with_r231=True))
    run = findings.models["stoic_flyingbird"]
    assert run.status == "ran" and "input lung mask: lungmask_r231, as its authors computed it" in run.reason
    r231_run = findings.models[LUNGMASK_R231]
    assert r231_run.status == "ran" and "input lung mask of stoic_flyingbird" in r231_run.reason
    assert len(seen) == 1  # R231 ran once, for the member
    left, right = seen[0]
    assert not np.array_equal(left | right, findings.masks["lungs"])  # not the classical mask
    direct = StoicFlyingBird.from_safetensors(files[1]).predict(
        MemberInputs(volume, left | right, left, right, age_years=60.0, sex="M")
    )
    assert findings.stoic is not None
    assert findings.stoic.members["stoic_flyingbird"]["p_severe"] == pytest.approx(direct.p_severe, abs=1e-7)


def test_without_r231_the_classical_mask_is_used_and_named(tmp_path: Path, files: tuple[Path, Path], phantom) -> None:  # type: ignore[no-untyped-def]
    findings = analyse(phantom.volume(), CONTEXT, _store(tmp_path, files, with_r231=False))
    run = findings.models["stoic_flyingbird"]
    assert "input lung mask: lung_mask_classical (its authors used lungmask_r231" in run.reason
    assert LUNGMASK_R231 not in findings.models
