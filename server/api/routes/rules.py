"""Eligibility rules: readable by viewers, changed by admins (validated, stored, read back, then in force)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import ValidationError

from server.api.deps import Admin, AuditTrailDep, JsonObject, SettingsDep, Viewer, json_request_body
from server.api.problems import Problem
from server.audit import AuditTrail
from server.core.config import Settings
from server.routing.rules import EligibilityRules, RulesInForce, rules_in_force, save_rules

router = APIRouter(prefix="/rules", tags=["rules"])


class RulesPublic(EligibilityRules):
    """The rules in force, where they come from and, when the admin's file is broken, why.

    ``source`` and ``error`` are read-only: ``PUT /rules`` ignores them, so that what it
    answers can be edited and sent back.
    """

    source: Literal["file", "last good copy", "defaults"]
    error: str | None


_READ_ONLY = frozenset(set(RulesPublic.model_fields) - set(EligibilityRules.model_fields))


def _public(in_force: RulesInForce) -> RulesPublic:
    return RulesPublic(**in_force.rules.model_dump(), source=in_force.source, error=in_force.error)


def _in_force(settings: Settings, trail: AuditTrail | None = None) -> RulesInForce:
    return rules_in_force(settings.rules_file, settings.max_slice_thickness_mm, trail)


@router.get("", response_model=RulesPublic)
def get_rules(_caller: Viewer, settings: SettingsDep, trail: AuditTrailDep) -> RulesPublic:
    """The eligibility rules in force (and why the rules file is not, when it is broken)."""
    return _public(_in_force(settings, trail))


@router.put("", response_model=RulesPublic, openapi_extra=json_request_body(EligibilityRules, partial=True))
def put_rules(_caller: Admin, settings: SettingsDep, update: JsonObject) -> RulesPublic:
    """Change some rules; the merged rules are validated, stored atomically and read back before they apply."""
    current = _in_force(settings).rules.model_dump()
    update = {key: value for key, value in update.items() if key not in _READ_ONLY}
    unknown = sorted(set(update) - set(current))
    if unknown:
        raise Problem(422, "Unknown rule", f"no such rule: {', '.join(unknown)}")
    try:
        rules = EligibilityRules(**{**current, **update})
    except ValidationError as exc:
        raise Problem(422, "Invalid rules", str(exc)) from exc
    assert settings.rules_file is not None
    try:
        save_rules(settings.rules_file, rules)
    except ValueError as exc:
        raise Problem(422, "Rules not stored", str(exc)) from exc
    return _public(_in_force(settings))
