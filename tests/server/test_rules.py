"""Eligibility rules: defaults from seeds/003, every reason recorded, rules as data."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from server.audit import AuditTrail
from server.db_models import AuditEvent
from server.routing.rules import (
    EligibilityRules,
    evaluate,
    load_rules,
    patient_age_years,
    rules_in_force,
    save_rules,
)
from tests.server.conftest import HeaderFactory


@pytest.fixture
def rules() -> EligibilityRules:
    return load_rules(None, max_slice_thickness_mm=3.0)


def test_defaults_follow_the_inclusion_criteria(rules: EligibilityRules) -> None:
    assert rules.max_slice_thickness_mm == 3.0
    assert rules.min_age_years == 18
    assert rules.modalities == ["CT"]
    assert "LOCALIZER" in rules.excluded_image_type


def test_a_thin_adult_axial_ct_is_eligible(ct_headers: HeaderFactory, rules: EligibilityRules) -> None:
    decision = evaluate(ct_headers(), rules)
    assert decision.eligible, decision.reasons
    assert decision.reasons == ()


def test_thick_slices_are_rejected_with_the_numbers_in_words(
    ct_headers: HeaderFactory, rules: EligibilityRules
) -> None:
    decision = evaluate(ct_headers(count=64, spacing=5.0, thickness=5.0), rules)
    assert not decision.eligible
    assert "slice thickness 5.0 mm exceeds 3.0 mm" in decision.reasons


def test_every_failing_rule_is_reported(ct_headers: HeaderFactory, rules: EligibilityRules) -> None:
    headers = ct_headers(
        count=10,
        spacing=5.0,
        thickness=5.0,
        patient_age="012Y",
        image_type=("DERIVED", "SECONDARY", "LOCALIZER"),
        modality="MR",
    )
    reasons = evaluate(headers, rules).reasons
    text = " | ".join(reasons)
    assert "modality MR is not CT" in text
    assert "DERIVED\\SECONDARY\\LOCALIZER is not ORIGINAL/PRIMARY" in text
    assert "localizer image" in text
    assert "slice thickness 5.0 mm exceeds 3.0 mm" in text
    assert "fewer than the 20 needed" in text
    assert "covers 50.0 mm" in text
    assert "patient age 12.0 years is below the adult minimum of 18 years" in text


def test_missing_slices_are_a_reason(ct_headers: HeaderFactory, rules: EligibilityRules) -> None:
    decision = evaluate(ct_headers(skip=(40, 41)), rules)
    assert not decision.eligible
    assert any("missing" in r for r in decision.reasons), decision.reasons


def test_tilted_slices_are_not_axial(ct_headers: HeaderFactory, rules: EligibilityRules) -> None:
    coronal = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
    headers = [
        h.__class__(**{**h.to_json(), "image_orientation": coronal, "image_position": (0.0, -2.0 * i, 0.0)})
        for i, h in enumerate(ct_headers())
    ]
    decision = evaluate(headers, rules)
    assert any("tilted 90.0°" in r for r in decision.reasons), decision.reasons


def test_other_sop_classes_are_kept_but_not_analysed(ct_headers: HeaderFactory, rules: EligibilityRules) -> None:
    decision = evaluate(ct_headers(count=1, sop_class_uid="1.2.840.10008.5.1.4.1.1.4"), rules)
    assert not decision.analysable and not decision.eligible
    assert "1.2.840.10008.5.1.4.1.1.4 is stored but not analysed" in decision.reasons[0]


def test_age_from_age_string_or_birth_date(ct_headers: HeaderFactory) -> None:
    assert patient_age_years(ct_headers(count=1, patient_age="006M")[0]) == pytest.approx(0.5)
    header = ct_headers(count=1, patient_age=None, patient_birth_date="20000101", study_date="20200101")[0]
    assert patient_age_years(header) == pytest.approx(20.0, abs=0.01)
    assert patient_age_years(ct_headers(count=1, patient_age="garbage")[0]) is None


def test_rules_file_overrides_defaults_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[eligibility]\nmin_age_years = 16\n")
    rules = load_rules(path, max_slice_thickness_mm=5.0)
    assert rules.min_age_years == 16 and rules.max_slice_thickness_mm == 5.0
    save_rules(path, rules.model_copy(update={"max_slice_thickness_mm": 1.5}))
    again = load_rules(path, max_slice_thickness_mm=5.0)
    assert again.max_slice_thickness_mm == 1.5 and again == rules.model_copy(update={"max_slice_thickness_mm": 1.5})


def test_an_invalid_rules_file_names_the_problem_and_the_defaults_apply(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[eligibility]\nmax_axial_tilt_deg = 200\n")
    in_force = rules_in_force(path, max_slice_thickness_mm=3.0)
    assert in_force.source == "defaults" and in_force.rules == load_rules(None, 3.0)
    assert in_force.error is not None and "max_axial_tilt_deg" in in_force.error
    assert "no earlier valid version" in in_force.error
    path.write_text("[eligibility\n")
    assert "not valid TOML" in (rules_in_force(path, max_slice_thickness_mm=3.0).error or "")
    path.write_text("")
    assert "[eligibility]" in (rules_in_force(path, max_slice_thickness_mm=3.0).error or ""), "a file cut to nothing"


@pytest.mark.parametrize(
    "broken",
    [
        b'[eligibility]\nmodalities = ["CT\n[oops"]\n',  # what a raw line break in a value did
        b'[eligibility]\nmodalities = ["CT", "M',  # truncated
        b"[eligibility]\nmin_slices = 0\n",  # out of range
        b'[eligibility]\nmodalities = ["CT\\u0000"]\n',  # a control character, escaped
        b"\xff\xfe[eligibility]\n",  # not UTF-8
        b"[eligibilty]\nmin_slices = 2\n",  # a misspelt table
    ],
)
def test_a_broken_rules_file_leaves_the_last_good_rules_in_force_across_restarts(tmp_path: Path, broken: bytes) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[eligibility]\nmin_slices = 7\nmax_slice_thickness_mm = 5.0\n")
    good = load_rules(path, max_slice_thickness_mm=3.0)
    assert (good.min_slices, good.max_slice_thickness_mm) == (7, 5.0)
    path.write_bytes(broken)
    in_force = rules_in_force(path, max_slice_thickness_mm=3.0)
    assert in_force.rules == good and in_force.source == "last good copy"
    assert in_force.error is not None and str(path) in in_force.error
    assert path.read_bytes() == broken, "the admin's file is left for the admin to repair"
    assert path.with_name("rules.toml.last-good").is_file(), "kept on disk: a restarted server finds it"


def test_a_rules_file_edited_validly_by_hand_becomes_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[eligibility]\nmin_slices = 7\n")
    load_rules(path, 3.0)
    path.write_text("[eligibility]\nmin_slices = 9\n")
    assert load_rules(path, 3.0).min_slices == 9
    path.write_text("[eligibility]\nmin_slices = [\n")
    assert load_rules(path, 3.0).min_slices == 9


def test_a_broken_rules_file_is_audited_once_per_version(tmp_path: Path, engine: Engine) -> None:
    path = tmp_path / "rules.toml"
    trail = AuditTrail(engine)
    path.write_text("[eligibility\n")
    for _ in range(3):
        load_rules(path, 3.0, trail)
    path.write_text("[eligibility]\nmin_slices = -1\n")
    load_rules(path, 3.0, trail)
    with Session(engine) as session:
        events = session.exec(select(AuditEvent).where(AuditEvent.channel == "config")).all()
    assert [(e.target, e.outcome) for e in events] == [(str(path), "rejected")] * 2
    assert "not valid TOML" in events[0].detail["error"] and "min_slices" in events[1].detail["error"]
    assert events[0].detail["in_force"] == "the defaults"


@pytest.mark.parametrize("value", ["CT\n[oops", "CT\x00", "C\x1bT", "CT\x7f", "\ud800"])
def test_rules_with_control_characters_are_invalid(value: str) -> None:
    with pytest.raises(ValidationError, match="control character"):
        EligibilityRules.model_validate({**load_rules(None, 3.0).model_dump(), "excluded_image_type": [value]})


def test_rules_are_stored_only_when_they_read_back_as_validated(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    rules = load_rules(None, 3.0)
    save_rules(path, rules)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="read back"):
        save_rules(path, rules.model_copy(update={"min_age_years": None}))  # TOML has no null: 18 would return
    assert path.read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "no temporary file left"
    quoted = rules.model_copy(update={"modalities": ['C"T\\', "ÇT"]})
    save_rules(path, quoted)
    assert load_rules(path, 3.0) == quoted
    assert path.with_name("rules.toml.last-good").read_bytes() == path.read_bytes()
