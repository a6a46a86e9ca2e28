"""The five volume members as the ensemble uses them: demo weights, weight files, outputs and notes.

Small configurations (16^3 inputs, a few channels, two folds) keep every forward pass cheap; the
full-size inputs are checked in ``test_preprocessing.py`` and the published sizes in
``test_networks.py``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.stoic.baseline import StoicBaseline
from models.stoic.code1055 import StoicCode1055
from models.stoic.deakin import StoicDeakin
from models.stoic.flyingbird import StoicFlyingBird, flip_views
from models.stoic.member import MemberInputs, MemberUnavailable
from models.stoic.uaux2 import StoicUaux2
from models.stoic.volumes import VolumeMember
from tests.models.stoic_volumes.conftest import SMALL_UAUX2_NETWORKS

SMALL: dict[type[VolumeMember[Any]], dict[str, Any]] = {
    StoicBaseline: {"spacing_mm": 6.0, "shape": (16, 16, 16), "pool_kernel": (1, 1, 1)},
    StoicCode1055: {"shape": (16, 16, 16), "dims": (4, 8, 8, 8), "depths": (1, 1, 1, 1), "stem_stride": 2, "folds": 2},
    StoicFlyingBird: {"shape": (16, 16, 16), "widths": (4, 4, 4, 4), "folds": 2},
    StoicUaux2: {
        "spacing_mm": (8.0, 8.0, 8.0),
        "severity_shape": (16, 16, 16),
        "covid_shape": (16, 16, 16),
        **SMALL_UAUX2_NETWORKS,
        "bag": 2,
    },
    StoicDeakin: {
        "spacing_mm": 6.0,
        "shape": (16, 16, 16),
        "growth_rate": 4,
        "block_config": (1, 1),
        "num_init_features": 8,
    },
}
MEMBERS = list(SMALL)
DEMO_NOTE = "generated demonstration weights: never trained, no clinical meaning"


def _small(member_cls: type[VolumeMember[Any]], seed: int = 0) -> VolumeMember[Any]:
    return member_cls.demo(seed, **SMALL[member_cls])


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(x.equal(y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("member_cls", MEMBERS, ids=lambda c: c.NAME)
def test_demo_weights_round_trip_through_a_member_file(
    member_cls: type[VolumeMember[Any]], synthetic_inputs: MemberInputs, tmp_path: Path
) -> None:
    member = _small(member_cls)
    assert member.name == member_cls.NAME and member.card["demo"] is True and member.card["member"] == member.name
    output = member.predict(synthetic_inputs)
    assert DEMO_NOTE in output.notes
    for p in (output.p_covid, output.p_severe):
        assert p is None or 0.0 <= p <= 1.0
    path = member.save(tmp_path / "member.safetensors")
    loaded = member_cls.from_safetensors(path)
    assert loaded.card == member.card and loaded.config == member.config
    assert loaded.predict(synthetic_inputs) == output
    other = StoicDeakin if member_cls is not StoicDeakin else StoicBaseline
    with pytest.raises(ValueError, match="holds member"):
        other.from_safetensors(path)


@pytest.mark.parametrize("member_cls", MEMBERS, ids=lambda c: c.NAME)
def test_demo_weights_are_deterministic_and_differ_between_networks(member_cls: type[VolumeMember[Any]]) -> None:
    first, again, other = _small(member_cls, 0), _small(member_cls, 0), _small(member_cls, 1)
    for group, networks in first.networks.items():
        for i, network in enumerate(networks):
            assert _states_equal(network, again.networks[group][i])
            assert not _states_equal(network, other.networks[group][i])
        if len(networks) > 1:
            assert not _states_equal(networks[0], networks[1])  # folds are initialised differently


def test_baseline_and_deakin_give_both_sigmoid_outputs_and_ignore_age_and_sex(synthetic_inputs: MemberInputs) -> None:
    for member_cls in (StoicBaseline, StoicDeakin):
        member = _small(member_cls)
        output = member.predict(synthetic_inputs)
        image = member.preprocess(synthetic_inputs).tensors["image"].unsqueeze(0)
        with torch.no_grad():
            expected = torch.sigmoid(member.networks["model"][0](image))[0]
        assert (output.p_covid, output.p_severe) == pytest.approx(expected.tolist(), abs=1e-6)
        assert member.predict(dataclasses.replace(synthetic_inputs, age_years=None, sex=None)) == output
        assert any("age" in note and "sex" in note for note in output.notes)


def test_code1055_reports_both_outputs_as_the_mean_of_its_folds(synthetic_inputs: MemberInputs) -> None:
    member = _small(StoicCode1055)
    output = member.predict(synthetic_inputs)
    folds = [output.details[f"fold{i}_p_severe"] for i in range(2)]
    assert folds[0] != folds[1] and output.p_severe == pytest.approx(np.mean(folds))
    covid = [output.details[f"fold{i}_p_covid"] for i in range(2)]
    assert output.p_covid == pytest.approx(np.mean(covid)) and covid != folds
    image = member.preprocess(synthetic_inputs).tensors["image"].unsqueeze(0)
    with torch.inference_mode():
        first = torch.sigmoid(member.networks["fold"][0](image).float()[0])
    assert (covid[0], folds[0]) == pytest.approx((float(first[0]), float(first[1])))
    assert any("never trained" in note and "0.616" in note for note in output.notes)
    unknown = member.predict(dataclasses.replace(synthetic_inputs, age_years=None, sex=None))
    assert unknown.p_severe == output.p_severe  # the submission called the folds with the image only
    assert any("age unused" in note and "unknown" in note for note in unknown.notes)


def test_flyingbird_averages_four_flip_views_of_each_fold_for_each_task(synthetic_inputs: MemberInputs) -> None:
    member = _small(StoicFlyingBird)
    output = member.predict(synthetic_inputs)
    prepared = member.preprocess(synthetic_inputs)
    image, age = prepared.tensors["image"], prepared.tensors["age"].unsqueeze(0)
    assert len(flip_views(image)) == 4 and torch.equal(flip_views(image)[3], image.flip(-1))
    expected = {}
    with torch.no_grad():
        for task in ("covid", "severe"):
            folds = [
                np.mean([float(torch.softmax(net(v.unsqueeze(0), age), 1)[0, 1]) for v in flip_views(image)])
                for net in member.networks[task]
            ]
            expected[task] = np.mean(folds)
    assert output.p_covid == pytest.approx(expected["covid"], abs=1e-6)
    assert output.p_severe == pytest.approx(expected["severe"], abs=1e-6)
    assert output.p_covid != output.p_severe  # separate COVID-19 and severity models
    older = member.predict(dataclasses.replace(synthetic_inputs, age_years=88.0))
    assert older.p_severe != output.p_severe  # the age enters the head
    no_age = member.predict(dataclasses.replace(synthetic_inputs, age_years=None))
    assert no_age.p_severe == pytest.approx(older.p_severe)  # unknown age = the 85 bin, as the authors
    assert any("age unknown" in note for note in no_age.notes)


def test_uaux2_needs_a_lesion_mask_and_an_age_for_severity(synthetic_inputs: MemberInputs) -> None:
    member = _small(StoicUaux2)
    output = member.predict(synthetic_inputs)
    assert output.p_covid == pytest.approx(output.details["covid_p_positive"] + output.details["covid_p_severe"])
    assert output.p_severe == pytest.approx(np.mean([output.details[f"severe_model{i}"] for i in range(2)]))
    assert output.details["infection_lung_ratio"] > 0.0
    no_age = member.predict(dataclasses.replace(synthetic_inputs, age_years=None))
    assert no_age.p_severe is None and no_age.p_covid == output.p_covid
    assert any("age unknown" in note for note in no_age.notes)
    with pytest.raises(MemberUnavailable) as raised:
        member.predict(dataclasses.replace(synthetic_inputs, lesions=None))
    assert "lesion mask" in raised.value.reason and "infection-to-lung ratio" in raised.value.reason


def test_masks_off_the_volume_grid_are_refused(synthetic_inputs: MemberInputs) -> None:
    shifted = dataclasses.replace(synthetic_inputs, lungs=synthetic_inputs.lungs[1:])
    for member_cls in MEMBERS:
        with pytest.raises(ValueError, match="lungs mask shape"):
            _small(member_cls).predict(shifted)
