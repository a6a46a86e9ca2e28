"""Eligibility rules: readable by viewers, changed by admins (validated before they apply)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import ValidationError

from server.api.deps import Admin, SettingsDep, Viewer
from server.api.problems import Problem
from server.routing.rules import EligibilityRules, load_rules, save_rules

router = APIRouter(prefix="/rules", tags=["rules"])


@router.get("", response_model=EligibilityRules)
def get_rules(settings: SettingsDep, _key: Viewer) -> EligibilityRules:
    """The eligibility rules in force."""
    return load_rules(settings.rules_file, settings.max_slice_thickness_mm)


@router.put("", response_model=EligibilityRules)
def put_rules(update: dict[str, object], settings: SettingsDep, _key: Admin) -> EligibilityRules:
    """Change some rules; the merged result is validated before it is written."""
    current = load_rules(settings.rules_file, settings.max_slice_thickness_mm).model_dump()
    unknown = sorted(set(update) - set(current))
    if unknown:
        raise Problem(422, "Unknown rule", f"no such rule: {', '.join(unknown)}")
    try:
        rules = EligibilityRules(**{**current, **update})
    except ValidationError as exc:
        raise Problem(422, "Invalid rules", str(exc)) from exc
    assert settings.rules_file is not None
    save_rules(settings.rules_file, rules)
    return rules
