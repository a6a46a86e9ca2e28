"""lungmask's published lobe networks, installed as their authors saved them and run by lungmask's own code.

The proof of equality: a randomly initialised LTRCLobes network saved as lungmask saves its networks
(a plain ``torch.save`` of the state dict) is installed in a weight store; the pipeline's lobe masks
on a real shared series must equal, voxel for voxel, what lungmask's ``LMInferer`` gives on the same
series read by lungmask's own DICOM reader.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lungmask.mask import LMInferer
from lungmask.utils import load_input_image

import models.segmentation.lungmask_lobes as lungmask_lobes
from models.findings import LOBE_NAMES, Findings, Volume
from models.phantom import Phantom, chest_phantom
from models.pipeline import _lobe_order, analyse
from models.registry import KNOWN_MODELS, LUNGMASK_LTRCLOBES, LUNGMASK_R231, REGISTRY
from models.runtime import ModelProvider
from models.segmentation.lungmask_lobes import (
    LUNGMASK_LOBE_LABELS,
    LungmaskLobes,
    LungmaskNetwork,
    LungmaskStateError,
    lungmask_network,
)
from models.volume import PatientContext, load_series
from models.weights import WeightsError, WeightStore

#: The smallest real series (30 slices of 8 mm): lungmask runs slice by slice, so it is the quickest.
SERIES = "lung-dx-a0002-thorax-8mm-b40f"
CONTEXT = PatientContext(age_years=60.0, sex="M")
#: Seed of the random network.  Its last (1x1) layer is scaled up so that the untrained logits differ
#: enough between voxels for several lobe labels to survive lungmask's post-processing (with the plain
#: initialisation one class wins nearly everywhere, and an equality of two empty maps would prove nothing).
SEED = 1
LAST_LAYER_SCALE = 20.0


def _random_checkpoint(path: Path, network: LungmaskNetwork) -> Path:
    """A randomly initialised lungmask network, saved as lungmask saves its published ones."""
    torch.manual_seed(SEED)
    state = lungmask_network(network).state_dict()
    state["last.weight"] = state["last.weight"] * LAST_LAYER_SCALE
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def ltrclobes_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _random_checkpoint(tmp_path_factory.mktemp("lungmask") / "unet_ltrclobes-random.pth", "LTRCLobes")


@pytest.fixture(scope="module")
def r231_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _random_checkpoint(tmp_path_factory.mktemp("lungmask") / "unet_r231-random.pth", "R231")


@pytest.fixture(scope="module")
def series_files(real_series: Callable[[str], list[Path]]) -> list[Path]:
    return real_series(SERIES)


@pytest.fixture(scope="module")
def reference(series_files: list[Path], ltrclobes_file: Path) -> np.ndarray:
    """lungmask's own result: its DICOM reader, its LMInferer (CPU, no progress bar)."""
    torch.set_num_threads(2)
    image = load_input_image(str(series_files[0].parent), disable_tqdm=True)
    return np.asarray(LMInferer(modelpath=str(ltrclobes_file), force_cpu=True, tqdm_disable=True).apply(image))


@pytest.fixture(scope="module")
def real_analysis(
    series_files: list[Path], ltrclobes_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Findings, WeightStore]:
    store = WeightStore(tmp_path_factory.mktemp("weights"))
    store.install(ltrclobes_file, LUNGMASK_LTRCLOBES)
    return analyse(load_series(series_files), CONTEXT, weights=store), store


def _label_map(findings: Findings) -> np.ndarray:
    """Our lobe masks as one label map in lungmask's numbering; the masks must not overlap."""
    labels = np.zeros(findings.volume.hu.shape, dtype=np.uint8)
    for value, name in LUNGMASK_LOBE_LABELS.items():
        mask = findings.masks[name]
        assert not np.any(labels[mask]), f"{name} overlaps another lobe"
        labels[mask] = value
    return labels


@pytest.mark.heavy
def test_lobe_and_lung_labels_equal_lungmask_voxel_for_voxel(
    real_analysis: tuple[Findings, WeightStore], reference: np.ndarray
) -> None:
    findings, _ = real_analysis
    assert findings.models[LUNGMASK_LTRCLOBES].status == "ran", findings.models[LUNGMASK_LTRCLOBES].reason
    ours = _label_map(findings)
    assert ours.shape == reference.shape
    lobes_found = sorted(set(np.unique(reference).tolist()) - {0})
    assert len(lobes_found) >= 3, f"a vacuous comparison: lungmask found only lobe labels {lobes_found}"
    assert sorted(set(np.unique(ours).tolist()) - {0}) == lobes_found
    assert np.array_equal(ours, reference), f"{int(np.count_nonzero(ours != reference))} voxels differ"
    left = findings.masks["LUL"] | findings.masks["LLL"]
    right = findings.masks["RUL"] | findings.masks["RML"] | findings.masks["RLL"]
    assert np.array_equal(left, np.isin(reference, (1, 2))) and left.any()
    assert np.array_equal(right, np.isin(reference, (3, 4, 5))) and right.any()


@pytest.mark.heavy
def test_every_lobe_says_it_came_from_lungmask_unvalidated(real_analysis: tuple[Findings, WeightStore]) -> None:
    findings, store = real_analysis
    installed = store.get(LUNGMASK_LTRCLOBES)
    assert installed is not None
    run = findings.models[LUNGMASK_LTRCLOBES]
    assert run.provenance == "installed_unvalidated" and run.weights_sha256 == installed.sha256
    assert "lungmask 0.2" in run.reason and "LTRCLobes alone" in run.reason and "not fused with R231" in run.reason
    assert LUNGMASK_R231 not in findings.models, "a lungmask model without weights is not listed"
    assert findings.models["lobes"].status == "not_installed"
    body = json.loads(json.dumps(findings.as_dict()))
    assert all(body["mask_sources"][name] == LUNGMASK_LTRCLOBES for name in LOBE_NAMES)
    assert body["mask_sources"]["lungs"] == "lung_mask_classical", "the lung mask stays the weight-free one"
    measured = [name for name in LOBE_NAMES if name in body["measurements"]]
    assert measured, "the lobes present are measured"
    for name in measured:
        entry = body["measurements"][name]
        assert entry["model"] == LUNGMASK_LTRCLOBES and entry["provenance"] == "installed_unvalidated"
        assert entry["validation"].startswith("UNVALIDATED")
    assert body["models"][LUNGMASK_LTRCLOBES]["weights_sha256"] == installed.sha256


def test_files_that_are_not_the_network_are_refused(tmp_path: Path, ltrclobes_file: Path, r231_file: Path) -> None:
    store = WeightStore(tmp_path / "weights")
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(2, 1, 3, 3), "conv.bias": torch.zeros(2)}, other)
    with pytest.raises(
        WeightsError, match=r"not a lungmask LTRCLobes checkpoint: 227 missing parameters .*2 unexpected"
    ):
        store.install(other, LUNGMASK_LTRCLOBES)
    with pytest.raises(WeightsError, match=r"2 parameters of another shape \(last.weight \(3, 64, 1, 1\) instead of"):
        store.install(r231_file, LUNGMASK_LTRCLOBES)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="torch cannot read it as a state dict"):
        store.install(text, LUNGMASK_R231)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"last.bias": torch.zeros(3)}, "epoch": 3}, wrapped)
    with pytest.raises(WeightsError, match="not a plain state dict"):
        store.install(wrapped, LUNGMASK_R231)
    assert store.installed() == {}
    # The loader checks again: a file changed after installation is refused before lungmask sees it.
    with pytest.raises(LungmaskStateError, match="not a lungmask R231 checkpoint"):
        LungmaskLobes(ltrclobes_file, fill_path=ltrclobes_file)


def test_lungmask_models_are_known_but_listed_only_when_installed() -> None:
    assert LUNGMASK_LTRCLOBES in KNOWN_MODELS and LUNGMASK_R231 in KNOWN_MODELS
    assert LUNGMASK_LTRCLOBES not in REGISTRY, "results without lungmask weights are unchanged"
    assert all(KNOWN_MODELS[name].needs_weights for name in (LUNGMASK_LTRCLOBES, LUNGMASK_R231))


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return chest_phantom((48, 96, 96), (6.0, 3.5, 3.5))


@pytest.fixture
def stub_lungmask(phantom: Phantom, monkeypatch: pytest.MonkeyPatch) -> None:
    """:class:`LungmaskLobes` without a network: the phantom's true lobes."""

    class StubLungmask:
        def __init__(self, lobes_path: Path, fill_path: Path | None = None) -> None:
            lungmask_lobes.check_lungmask_state(lobes_path, "LTRCLobes")

        def segment(self, volume: Volume) -> dict[str, np.ndarray]:
            return {name: np.asarray(mask, dtype=bool) for name, mask in phantom.lobes.items()}

    monkeypatch.setattr(lungmask_lobes, "LungmaskLobes", StubLungmask)


@pytest.mark.parametrize(
    ("validations", "expected"),
    [
        ({LUNGMASK_LTRCLOBES: None, "lobes": None}, ((LUNGMASK_LTRCLOBES, "lobes"), "neither has")),
        ({LUNGMASK_LTRCLOBES: None, "lobes": "site X"}, (("lobes", LUNGMASK_LTRCLOBES), "the site validated")),
        ({LUNGMASK_LTRCLOBES: "site X", "lobes": "site X"}, ((LUNGMASK_LTRCLOBES, "lobes"), "both have")),
        (
            {LUNGMASK_LTRCLOBES: "site X", LUNGMASK_R231: None, "lobes": "site X"},
            (("lobes", LUNGMASK_LTRCLOBES), "the site validated"),
        ),
        ({LUNGMASK_LTRCLOBES: "site X", "lobes": None}, ((LUNGMASK_LTRCLOBES, "lobes"), "the site validated lungmask")),
        ({LUNGMASK_LTRCLOBES: None}, ((LUNGMASK_LTRCLOBES,), "")),
    ],
)
def test_one_lobe_model_is_chosen_deterministically(
    tmp_path: Path, ltrclobes_file: Path, r231_file: Path, validations: dict[str, Any], expected: tuple[Any, str]
) -> None:
    store = WeightStore(tmp_path)
    files = {LUNGMASK_LTRCLOBES: ltrclobes_file, LUNGMASK_R231: r231_file}
    for name, validation in validations.items():
        source = files.get(name)
        if source is None:
            source = tmp_path / "own_lobes.safetensors"
            source.write_bytes(b"any bytes: the choice reads the manifests only")
        store.install(source, name, validation=validation)
    order, why = _lobe_order(ModelProvider(store))
    assert order == expected[0] and why.startswith(expected[1])


@pytest.mark.usefixtures("stub_lungmask")
def test_fused_lobes_are_as_trusted_as_the_less_trusted_file(
    tmp_path: Path, ltrclobes_file: Path, r231_file: Path, phantom: Phantom
) -> None:
    store = WeightStore(tmp_path)
    store.install(ltrclobes_file, LUNGMASK_LTRCLOBES, validation="validated on 40 local CTs, report 2026-7")
    fill = store.install(r231_file, LUNGMASK_R231)
    own = tmp_path / "own_lobes.safetensors"
    own.write_bytes(b"never loaded: lungmask is chosen")
    store.install(own, "lobes")
    findings = analyse(phantom.volume(), CONTEXT, weights=store)
    lobes, r231 = findings.models[LUNGMASK_LTRCLOBES], findings.models[LUNGMASK_R231]
    assert lobes.status == "ran" and "fused with lungmask_r231 (lungmask's LTRCLobes_R231)" in lobes.reason
    assert lobes.provenance == "installed_unvalidated" and lobes.validation_statement is None
    assert "chosen over lobes: neither has a validation statement" in lobes.reason
    assert r231.status == "ran" and r231.weights_sha256 == fill.sha256 and "fill model" in r231.reason
    assert findings.models["lobes"].status == "skipped"
    assert findings.models["lobes"].reason.startswith(f"not run: the lobe masks come from {LUNGMASK_LTRCLOBES}")
    assert all(findings.mask_sources[name] == LUNGMASK_LTRCLOBES for name in LOBE_NAMES)
    assert findings.as_dict()["measurements"]["RUL"]["model"] == LUNGMASK_LTRCLOBES


@pytest.mark.usefixtures("stub_lungmask")
def test_a_lungmask_file_that_fails_to_load_is_recorded_and_the_analysis_goes_on(
    tmp_path: Path, ltrclobes_file: Path, phantom: Phantom
) -> None:
    store = WeightStore(tmp_path)
    installed = store.install(ltrclobes_file, LUNGMASK_LTRCLOBES)
    torch.save({"last.weight": torch.zeros(6, 64, 1, 1)}, installed.path)  # changed after installation
    findings = analyse(phantom.volume(), CONTEXT, weights=store)
    run = findings.models[LUNGMASK_LTRCLOBES]
    assert run.status == "failed" and "LungmaskStateError" in run.reason and "226 missing parameters" in run.reason
    assert not any(name in findings.masks for name in LOBE_NAMES), "no lobes: the classical lung mask stays"
    assert findings.mask_sources["lungs"] == "lung_mask_classical"


def test_with_r231_lungmask_runs_its_ltrclobes_r231_fusion(ltrclobes_file: Path, r231_file: Path) -> None:
    """The fill model reaches lungmask's LMInferer as lungmask's own ``fillmodel_path`` (its fusion code runs)."""
    fused = LungmaskLobes(ltrclobes_file, fill_path=r231_file)
    assert fused.fused and fused.inferer.fillmodelm is not None and fused.inferer.fillmodel == r231_file.name
    alone = LungmaskLobes(ltrclobes_file)
    assert not alone.fused and alone.inferer.fillmodelm is None
    assert alone.inferer.device == torch.device("cpu") and alone.inferer.tqdm_disable
