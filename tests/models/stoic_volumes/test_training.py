"""Every volume member's training recipe learns on synthetic scans and writes a member file that loads.

The scans (``synthetic.py``) differ in their number of ground-glass blobs: burden 0 is
COVID-negative, 1 COVID-positive and not severe, 4 severe.  Each test runs the real
``train_<member>`` on a tiny configuration (16^3 inputs, a few channels, two folds, no
augmentation) on so few cases that every network sees (nearly) the same batch each epoch; the
recipe has learnt when its recorded training loss falls well below where it started.  (Telling
unseen cases apart needs more data and epochs than a CI budget allows.)  The written file is then
loaded with ``from_safetensors`` and must be a trained member whose card records the data and every
network's history.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from models.stoic.baseline import BaselineConfig, StoicBaseline
from models.stoic.code1055 import Code1055Config, StoicCode1055
from models.stoic.deakin import DeakinConfig, StoicDeakin
from models.stoic.flyingbird import FlyingBirdConfig, StoicFlyingBird
from models.stoic.training_volumes import (
    BaselineTrainingConfig,
    Code1055TrainingConfig,
    DeakinTrainingConfig,
    FlyingBirdTrainingConfig,
    NetworkHistory,
    TrainingResult,
    Uaux2TrainingConfig,
    train_baseline,
    train_code1055,
    train_deakin,
    train_flyingbird,
    train_uaux2,
)
from models.stoic.uaux2 import StoicUaux2, Uaux2Config
from models.stoic.volumes import VolumeMember
from tests.models.stoic_volumes.conftest import SMALL_UAUX2_NETWORKS
from tests.models.stoic_volumes.synthetic import write_csv

SMALL_BASELINE_INPUT: dict[str, Any] = {"spacing_mm": 6.0, "shape": (16, 16, 16)}
#: The mean loss of a network's last three epochs must be below this share of its first epoch's.
FALLS_TO = 0.8


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Nine synthetic cases: three each of burden 0, 1 and 4 (the first of each without an age)."""
    return write_csv(tmp_path_factory.mktemp("stoic_cases"), 3, seed=3, burdens=(0, 1, 4))


def _loaded(result: TrainingResult, member_cls: type[VolumeMember[Any]]) -> VolumeMember[Any]:
    """The written file loaded back, checked to be a trained (not demo) member with its histories."""
    member = member_cls.from_safetensors(result.path)
    assert result.path.name == f"{member_cls.NAME}.safetensors"
    assert member.card["demo"] is False and member.card["data"]["cases"] > 0
    assert len(member.card["metrics"]["networks"]) == len(result.networks)
    return member


def _losses(history: NetworkHistory) -> list[float]:
    return [loss for _, loss, _ in history.history if loss == loss]  # NaN: validation before training


def _assert_learnt(result: TrainingResult) -> None:
    for history in result.networks:
        losses = _losses(history)
        last = sum(losses[-3:]) / len(losses[-3:])
        assert len(losses) >= 4 and last < FALLS_TO * losses[0], (history.group, history.index, losses)


def test_baseline_fits_a_batch(tmp_path: Path) -> None:
    # Three cases: the 80/20 split keeps two for training, one batch of two per epoch.
    csv = write_csv(tmp_path / "cases", 1, seed=5, burdens=(0, 4, 1))
    config = BaselineTrainingConfig(
        csv_path=csv,
        output_dir=tmp_path / "out",
        augment=False,
        member=BaselineConfig(**SMALL_BASELINE_INPUT, pool_kernel=(1, 1, 1)),
        epochs=5,
        learning_rate=1e-3,
    )
    result = train_baseline(config)
    assert len(_losses(result.networks[0])) == 5
    _assert_learnt(result)
    member = _loaded(result, StoicBaseline)
    assert member.card["data"]["train_cases"] == 2 and member.card["training"]["learning_rate"] == 1e-3


def test_deakin_fits_its_training_cases(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "cases", 1, seed=5, burdens=(0, 4, 1))
    config = DeakinTrainingConfig(
        csv_path=csv,
        output_dir=tmp_path / "out",
        member=DeakinConfig(**SMALL_BASELINE_INPUT, growth_rate=4, block_config=(1, 1), num_init_features=8),
        epochs=10,
        learning_rate=1e-2,
    )
    result = train_deakin(config)
    _assert_learnt(result)
    # One validation case has no severity AUC: the latest state is kept, not the untrained one.
    assert result.networks[0].best_epoch == 10 and all(score != score for _, _, score in result.networks[0].history)
    assert _loaded(result, StoicDeakin).card["training"]["epochs"] == 10


def test_code1055_fits_severity_on_covid_positive_cases_only(tmp_path: Path) -> None:
    # Four cases per burden: each fold trains on two severe and two non-severe positive cases.
    csv = write_csv(tmp_path / "cases", 4, seed=3, burdens=(0, 1, 4))
    config = Code1055TrainingConfig(
        csv_path=csv,
        output_dir=tmp_path / "out",
        augment=False,
        member=Code1055Config(shape=(16, 16, 16), dims=(16, 16, 16, 16), depths=(1, 1, 1, 1), stem_stride=2, folds=2),
        crop_source_shape=None,
        drop_path_rate=0.0,
        batch_size=2,
        max_epochs=25,
        learning_rate=3e-2,
        ema_decay=0.5,
        patience=25,
    )
    result = train_code1055(config)
    _assert_learnt(result)
    assert [(h.group, h.index) for h in result.networks] == [("fold", 0), ("fold", 1)]
    member = _loaded(result, StoicCode1055)
    assert member.card["data"]["covid_positive_training_cases"] == 8  # the four burden-0 cases left out
    assert len(member.card["data"]["folds"]) == 12


def test_code1055_refuses_a_fold_without_covid_positive_cases(tmp_path: Path) -> None:
    # Two COVID-positive cases cannot fill three folds; refused before anything is preprocessed.
    csv = write_csv(tmp_path / "cases", 2, seed=5, burdens=(0, 1))
    config = Code1055TrainingConfig(csv_path=csv, output_dir=tmp_path, member=Code1055Config(folds=3))
    with pytest.raises(ValueError, match="no COVID-positive"):
        train_code1055(config)


def test_flyingbird_fits_both_tasks(csv_path: Path, tmp_path: Path) -> None:
    """40 epochs: with 20 one network's loss stayed at 0.83 of its first epoch on AVX-512 kernels;
    with 40 every network falls below 0.7 on torch's AVX-512, AVX2 and default CPU kernels."""
    config = FlyingBirdTrainingConfig(
        csv_path=csv_path,
        output_dir=tmp_path,
        augment=False,
        member=FlyingBirdConfig(shape=(16, 16, 16), widths=(4, 8, 8, 8), folds=2),
        tasks=("covid", "severe"),
        random_margins=1,
        epochs=40,
        batch_size=4,
        learning_rate=1e-2,
    )
    result = train_flyingbird(config)
    _assert_learnt(result)
    assert [(h.group, h.index) for h in result.networks] == [("covid", 0), ("covid", 1), ("severe", 0), ("severe", 1)]
    assert all(h.history[0][0] == 0 for h in result.networks)  # validated before training too
    _loaded(result, StoicFlyingBird)


def test_flyingbird_final_phase_keeps_the_covid_models_of_the_initial_weights(csv_path: Path, tmp_path: Path) -> None:
    small = FlyingBirdConfig(shape=(16, 16, 16), widths=(4, 4, 4, 4), folds=2)
    initial = StoicFlyingBird.demo(7, **small.as_dict())
    config = FlyingBirdTrainingConfig(
        csv_path=csv_path,
        output_dir=tmp_path / "out",
        augment=False,
        member=small,
        epochs=1,
        batch_size=2,
        random_margins=0,
        initial_weights=initial.save(tmp_path / "initial.safetensors"),
    )
    result = train_flyingbird(config)
    assert {h.group for h in result.networks} == {"severe"}
    member = StoicFlyingBird.from_safetensors(result.path)
    for ours, theirs in zip(member.networks["covid"], initial.networks["covid"], strict=True):
        assert all(a.equal(b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="initial_weights"):
        train_flyingbird(FlyingBirdTrainingConfig(csv_path=csv_path, output_dir=tmp_path, member=small))


def test_uaux2_fits_the_severity_bag_with_metadata_and_the_three_class_covid_model(
    csv_path: Path, tmp_path: Path
) -> None:
    config = Uaux2TrainingConfig(
        csv_path=csv_path,
        output_dir=tmp_path,
        augment=False,
        member=Uaux2Config(
            spacing_mm=(8.0, 8.0, 8.0),
            severity_shape=(16, 16, 16),
            covid_shape=(16, 16, 16),
            **(SMALL_UAUX2_NETWORKS | {"head": (32, 32, 32)}),
            bag=2,
        ),
        validation_fraction=0.33,
        batch_size=6,
        head_epochs=2,
        max_epochs=20,
        head_learning_rate=3e-2,
        learning_rate=3e-2,
    )
    result = train_uaux2(config)
    _assert_learnt(result)
    assert [(h.group, h.index) for h in result.networks] == [("severe", 0), ("severe", 1), ("covid", 0)]
    member = _loaded(result, StoicUaux2)
    assert member.card["data"]["cases_with_age"] == 6  # the first case of each burden has no age
