"""The STOIC2021 ensemble: Table 4.1's top three, configurable weights, and honest incompleteness."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.findings import Geometry, Volume
from models.stoic.ensemble import SEVERITY_MEANING, STOIC_TOP3, EnsembleConfig, StoicEnsemble
from models.stoic.member import MemberInputs, MemberOutput, MemberUnavailable

SHAPE = (4, 8, 8)
GEOMETRY = Geometry(origin=(0.0, 0.0, 0.0), spacing=(1.0, 1.0, 1.0), direction=np.eye(3).tolist(), shape=SHAPE)
LUNGS = np.ones(SHAPE, dtype=bool)
INPUTS = MemberInputs(Volume(np.zeros(SHAPE, np.float32), GEOMETRY, ("",) * 4), LUNGS, LUNGS, LUNGS, None, 58.0, "M")


@dataclass
class FixedMember:
    """A member that returns fixed probabilities (or raises), to test the arithmetic alone."""

    name: str
    p_covid: float | None
    p_severe: float | None
    raises: Exception | None = None
    card: Mapping[str, Any] = field(default_factory=lambda: {"demo": False})
    calls: int = 0

    def predict(self, inputs: MemberInputs) -> MemberOutput:
        self.calls += 1
        if self.raises is not None:
            raise self.raises
        return MemberOutput(self.p_covid, self.p_severe, notes=(f"{self.name} used age {inputs.age_years}",))

    def save(self, path: Path) -> Path:
        raise NotImplementedError("not needed by the ensemble")


def _top3(**overrides: FixedMember | None) -> dict[str, FixedMember | None]:
    members: dict[str, FixedMember | None] = {
        "stoic_code1055": FixedMember("stoic_code1055", 0.95, 0.9),
        "stoic_simonj": FixedMember("stoic_simonj", 0.6, 0.3),
        "stoic_flyingbird": FixedMember("stoic_flyingbird", 0.5, 0.6),
        "stoic_hal9000": FixedMember("stoic_hal9000", 0.1, 0.99),
    }
    members.update(overrides)
    return members


def test_top3_is_table_4_1() -> None:
    assert STOIC_TOP3.name == "stoic_top3"
    assert dict(STOIC_TOP3.severe) == {"stoic_code1055": 1.0, "stoic_simonj": 1.0, "stoic_flyingbird": 1.0}
    assert dict(STOIC_TOP3.covid) == {"stoic_simonj": 1.0, "stoic_flyingbird": 1.0, "stoic_hal9000": 1.0}
    assert STOIC_TOP3.members == ("stoic_code1055", "stoic_simonj", "stoic_flyingbird", "stoic_hal9000")


def test_each_output_is_the_mean_of_its_own_members() -> None:
    result = StoicEnsemble(_top3()).predict(INPUTS)
    assert result.p_severe == pytest.approx((0.9 + 0.3 + 0.6) / 3)  # hal9000's P(severe) is not averaged
    assert result.p_covid == pytest.approx((0.6 + 0.5 + 0.1) / 3)  # Code 1055's (untrained) P(COVID-19) is not
    assert result.complete and result.ran == STOIC_TOP3.members
    assert result.averaged == {
        "p_covid": ("stoic_simonj", "stoic_flyingbird", "stoic_hal9000"),
        "p_severe": ("stoic_code1055", "stoic_simonj", "stoic_flyingbird"),
    }
    assert result.notes[0] == SEVERITY_MEANING and "RT-PCR-positive patients only" in SEVERITY_MEANING
    stoic = result.to_stoic_result()
    assert stoic is not None and stoic.members["stoic_code1055"] == {"p_covid": 0.95, "p_severe": 0.9}
    assert stoic.members["stoic_hal9000"] == {"p_covid": 0.1, "p_severe": 0.99}


def test_weights_are_renormalised_over_the_members_that_ran() -> None:
    config = EnsembleConfig("custom", {"stoic_simonj": 3.0, "stoic_hal9000": 1.0}, [("stoic_code1055", 2.0)])
    members = {"stoic_simonj": FixedMember("stoic_simonj", 0.8, 0.2), "stoic_hal9000": None}
    result = StoicEnsemble({**members, "stoic_code1055": FixedMember("stoic_code1055", None, 0.4)}, config).predict(
        INPUTS
    )
    assert result.p_covid == pytest.approx(0.8)
    assert result.p_severe == pytest.approx(0.4)
    assert not result.complete
    assert result.not_run == {"stoic_hal9000": "not installed: no weights installed"}
    assert any(
        note.startswith("incomplete ensemble: P(COVID-19) is the weighted mean of stoic_simonj only")
        for note in result.notes
    )


def test_a_member_that_refuses_or_fails_is_reported_and_the_others_still_count() -> None:
    members = _top3(
        stoic_simonj=FixedMember("stoic_simonj", 0.6, 0.3, raises=MemberUnavailable("needs the lesion mask")),
        stoic_flyingbird=FixedMember("stoic_flyingbird", 0.5, 0.6, raises=RuntimeError("out of memory")),
    )
    result = StoicEnsemble(members).predict(INPUTS)
    assert result.p_severe == pytest.approx(0.9) and result.p_covid == pytest.approx(0.1)
    assert result.members["stoic_simonj"].status == "unavailable"
    assert result.members["stoic_simonj"].reason == "needs the lesion mask"
    assert result.members["stoic_flyingbird"].status == "failed"
    assert result.members["stoic_flyingbird"].reason == "RuntimeError: out of memory"
    assert not result.complete


def test_no_member_installed_gives_no_probability() -> None:
    result = StoicEnsemble(dict.fromkeys(STOIC_TOP3.members)).predict(INPUTS)
    assert result.p_covid is None and result.p_severe is None and result.to_stoic_result() is None
    assert any(note.startswith("no P(COVID-19): none of its members produced one") for note in result.notes)


def test_demo_weights_are_said() -> None:
    demo = FixedMember("stoic_code1055", None, 0.9, card={"demo": True})
    result = StoicEnsemble(_top3(stoic_code1055=demo)).predict(INPUTS)
    assert result.members["stoic_code1055"].demo
    assert "computed with demonstration weights (stoic_code1055): no clinical meaning" in result.notes


@pytest.mark.parametrize(
    ("covid", "severe", "message"),
    [
        ({}, {"stoic_etro": 1.0}, "at least one member"),
        ([("stoic_etro", 1.0), ("stoic_etro", 2.0)], {"stoic_etro": 1.0}, "listed twice"),
        ({"stoic_etro": 0.0}, {"stoic_etro": 1.0}, "positive and finite"),
        ({"stoic_etro": float("inf")}, {"stoic_etro": 1.0}, "positive and finite"),
    ],
)
def test_bad_configurations_are_refused(covid: Any, severe: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EnsembleConfig("bad", covid, severe)


def test_a_member_under_the_wrong_name_is_refused() -> None:
    with pytest.raises(ValueError, match="was given under the name"):
        StoicEnsemble({"stoic_simonj": FixedMember("stoic_hal9000", 0.1, 0.2)})
