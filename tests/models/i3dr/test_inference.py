"""I3Dr inference (thesis 2.3.1): the swap and rescale identities, label scales, a vanishing y_B,
patient-only prediction, the safetensors file with its model card, and demo determinism."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from models.findings import LOBE_NAMES, I3drResult
from models.i3dr.card import MODEL_CARD_KEY, load_i3dr_file, make_model_card, save_i3dr_file
from models.i3dr.inference import I3dr
from models.i3dr.model import OUTPUTS
from models.i3dr.preprocessing import preprocess_regions, replicate_channels, stack_regions
from models.phantom import Phantom
from tests.models.i3dr.conftest import SMALL_BACKBONE, SMALL_INPUT


def _small(seed: int = 0) -> I3dr:
    model = I3dr.demo(seed, SMALL_BACKBONE, preprocessing=SMALL_INPUT)
    with torch.no_grad():  # demo biases are 0; a bias far from 0 makes the split b / 5 matter
        model.b.head.bias.copy_(torch.linspace(-2.0, 3.0, len(OUTPUTS)))
        model.a.head.bias.copy_(torch.linspace(1.0, 4.0, len(OUTPUTS)))
    return model


def _all_finite(values: object) -> bool:
    if isinstance(values, dict):
        return all(_all_finite(v) for v in values.values())
    return not isinstance(values, float) or math.isfinite(values)


def test_rescaled_lobes_sum_to_model_a_and_swap_matches_training_form(small_phantom: Phantom) -> None:
    model = _small()
    lungs = small_phantom.left | small_phantom.right
    prediction = model.predict(small_phantom.volume(), lungs, small_phantom.lobes)

    # Unswapped model B on the same inputs: W_B sum_l f_B(x_l) + b_B, times the label scales.
    inputs = preprocess_regions(small_phantom.volume(), dict(small_phantom.lobes), SMALL_INPUT)
    blocks = replicate_channels(stack_regions([inputs[name] for name in LOBE_NAMES])[None])
    with torch.inference_mode():
        training_form = model.b(blocks)[0].double().numpy() * model.scales["b"]
    assert prediction.patient_b is not None
    for k, name in enumerate(OUTPUTS):
        unscaled = [prediction.lobes_unscaled[lobe][name] for lobe in LOBE_NAMES]
        rescaled = [prediction.lobes[lobe][name] for lobe in LOBE_NAMES]
        assert sum(unscaled) == pytest.approx(prediction.patient_b[name], rel=1e-12, abs=1e-12)
        assert prediction.patient_b[name] == pytest.approx(training_form[k], rel=1e-5, abs=1e-5)
        assert sum(rescaled) == pytest.approx(prediction.patient_a[name], rel=1e-12, abs=1e-12)
        factor = prediction.rescale_factors[name]
        assert factor is not None
        assert rescaled == pytest.approx([u * factor for u in unscaled], rel=1e-12)
    assert not prediction.not_rescaled

    result = prediction.to_result()
    assert isinstance(result, I3drResult)
    assert dict(result.patient) == dict(prediction.patient_a)
    assert set(result.lobes) == set(LOBE_NAMES) and all(set(v) == set(OUTPUTS) for v in result.lobes.values())
    assert result.lobes == prediction.lobes and result.lobes_unscaled == prediction.lobes_unscaled
    assert result.patient_b == prediction.patient_b
    assert len(result.notes) == 1 and "demonstration weights" in result.notes[0]
    details = prediction.details()
    assert json.loads(json.dumps(details)) == details
    assert details["demo"] is True and set(details["preprocessing"]) == {"lungs", *LOBE_NAMES}


def test_label_scales_multiply_the_raw_outputs(small_phantom: Phantom) -> None:
    model = _small()
    card = copy.deepcopy(model.card)
    card["parts"]["a"]["label_scales"]["pv_l"] = 2.5
    card["parts"]["b"]["label_scales"]["dlco"] = 4.0
    scaled = I3dr(model.a, model.b, card)
    lungs = small_phantom.left | small_phantom.right
    before = model.predict(small_phantom.volume(), lungs, small_phantom.lobes)
    after = scaled.predict(small_phantom.volume(), lungs, small_phantom.lobes)
    assert after.patient_a["pv_l"] == pytest.approx(2.5 * before.patient_a["pv_l"], rel=1e-12)
    assert after.patient_a["fpv_l"] == before.patient_a["fpv_l"]
    for lobe in LOBE_NAMES:
        assert after.lobes_unscaled[lobe]["dlco"] == pytest.approx(4.0 * before.lobes_unscaled[lobe]["dlco"], rel=1e-12)
        # Rescaling divides B's scale out again: the lobes still sum to model A.
        assert after.lobes[lobe]["dlco"] == pytest.approx(before.lobes[lobe]["dlco"], rel=1e-9)


def test_vanishing_model_b_estimate_is_not_rescaled(small_phantom: Phantom) -> None:
    model = _small()
    k = OUTPUTS.index("dlco")
    with torch.no_grad():
        model.b.head.weight[k].zero_()
        model.b.head.bias[k] = 0.0
    prediction = model.predict(small_phantom.volume(), small_phantom.left | small_phantom.right, small_phantom.lobes)
    assert prediction.patient_b is not None and prediction.patient_b["dlco"] == 0.0
    assert prediction.rescale_factors["dlco"] is None
    assert "within" in prediction.not_rescaled["dlco"]
    result = prediction.to_result()
    assert all("dlco" not in values and "pv_l" in values for values in result.lobes.values())
    assert result.patient["dlco"] == prediction.patient_a["dlco"]  # model A's estimate is still reported
    assert all("dlco" in values for values in result.lobes_unscaled.values())  # and model B's own
    assert any(note.startswith("dlco has no lobe estimate") for note in result.notes)
    assert _all_finite(prediction.details())


def test_non_finite_output_raises(small_phantom: Phantom) -> None:
    model = _small()
    with torch.no_grad():
        model.a.head.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        model.predict_patient_only(small_phantom.volume(), small_phantom.left | small_phantom.right)


def test_patient_only_prediction_is_model_a(small_phantom: Phantom) -> None:
    model = _small()
    lungs = small_phantom.left | small_phantom.right
    full = model.predict(small_phantom.volume(), lungs, small_phantom.lobes)
    alone = model.predict_patient_only(small_phantom.volume(), lungs)
    assert alone.patient_a == full.patient_a and alone.patient_b is None
    result = alone.to_result()
    assert result.patient == full.patient_a and result.lobes == result.lobes_unscaled == {}
    assert result.patient_b is None and any("patient level only" in note for note in result.notes)
    with pytest.raises(ValueError, match="RML"):
        model.predict(small_phantom.volume(), lungs, {k: v for k, v in small_phantom.lobes.items() if k != "RML"})


def test_safetensors_round_trip_with_model_card(tmp_path: Path, small_phantom: Phantom) -> None:
    model = _small(3)
    path = model.save(tmp_path / "i3dr.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        card = json.loads(handle.metadata()[MODEL_CARD_KEY])
    assert {key.split(".", 1)[0] for key in keys} == {"a", "b"}
    assert "a.head.weight" in keys and "b.backbone.layers.0.weight" in keys
    assert card == model.card
    assert card["parts"]["b"]["label_scales"] == dict.fromkeys(OUTPUTS, 1.0)
    assert card["preprocessing"] == SMALL_INPUT.as_dict() and card["demo"] is True
    loaded = I3dr.from_safetensors(path)
    lungs = small_phantom.left | small_phantom.right
    assert loaded.predict(small_phantom.volume(), lungs, small_phantom.lobes) == model.predict(
        small_phantom.volume(), lungs, small_phantom.lobes
    )

    # One part per file, as a training run writes them, joined again.
    parts, _ = load_i3dr_file(path)
    for part in ("a", "b"):
        part_card = make_model_card(SMALL_INPUT, {part: card["parts"][part]})
        save_i3dr_file(tmp_path / f"{part}.safetensors", {part: parts[part]}, part_card)
    joined = I3dr.from_parts(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert joined.card["parts"] == card["parts"]
    with pytest.raises(ValueError, match="needs a and b"):
        I3dr.from_safetensors(tmp_path / "a.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="safetensors"):
        I3dr.from_safetensors(tmp_path / "bad.safetensors")


def test_demo_weights_are_deterministic(small_phantom: Phantom) -> None:
    lungs = small_phantom.left | small_phantom.right
    volume = small_phantom.volume()
    first = I3dr.demo(5, SMALL_BACKBONE, preprocessing=SMALL_INPUT).predict(volume, lungs, small_phantom.lobes)
    again = I3dr.demo(5, SMALL_BACKBONE, preprocessing=SMALL_INPUT).predict(volume, lungs, small_phantom.lobes)
    other = I3dr.demo(6, SMALL_BACKBONE, preprocessing=SMALL_INPUT).predict(volume, lungs, small_phantom.lobes)
    assert first == again
    assert first.patient_a != other.patient_a
    assert np.isfinite(list(first.patient_a.values())).all()


def test_default_demo_runs_the_i3d_backbone(small_phantom: Phantom) -> None:
    """``I3dr.demo(seed)`` as the pipeline builds it: I3D features (1024) and Linear(1024 -> 7) heads.

    The blocks are small (32^3 of 8 mm) to keep the test short; I3D pools adaptively, so the
    path is the one a 240^3 input takes.
    """
    model = I3dr.demo(0, preprocessing=SMALL_INPUT)
    assert [model.card["parts"][p]["backbone"]["name"] for p in "ab"] == ["inception_v1_3d"] * 2
    assert model.card["demo"] is True
    assert (model.a.head.in_features, model.b.head.out_features, model.b.num_regions) == (1024, len(OUTPUTS), 5)
    prediction = model.predict(small_phantom.volume(), small_phantom.left | small_phantom.right, small_phantom.lobes)
    assert prediction.patient_b is not None
    for name in OUTPUTS:
        unscaled = sum(prediction.lobes_unscaled[lobe][name] for lobe in LOBE_NAMES)
        assert unscaled == pytest.approx(prediction.patient_b[name], rel=1e-12, abs=1e-12)
        if name in prediction.lobes["LUL"]:
            rescaled = sum(prediction.lobes[lobe][name] for lobe in LOBE_NAMES)
            assert rescaled == pytest.approx(prediction.patient_a[name], rel=1e-12, abs=1e-12)
    assert prediction.details()["units"]["dlco"] == "mL/min/mmHg" and prediction.details()["units"]["pv_l"] == "L"
