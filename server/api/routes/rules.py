"""Eligibility rules: readable by viewers, replaced or merged by admins (validated, stored, read back, then in force).

``PUT`` replaces the whole document and ``PATCH`` changes the rules it names, as
``PUT /destinations`` replaces the whole list; the changes are made by
:mod:`server.services.configuration`, which the HTML console calls too.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter

from server.api.deps import Admin, AuditTrailDep, JsonObject, SettingsDep, Viewer, json_request_body
from server.routing.rules import EligibilityRules, RulesInForce
from server.services.configuration import RULE_NAMES, merge_rules, replace_rules, rules_in_force_for

router = APIRouter(prefix="/rules", tags=["rules"])


class RulesPublic(EligibilityRules):
    """The rules in force, where they come from and, when the admin's file is broken, why.

    ``source`` and ``error`` are read-only: ``PUT`` and ``PATCH /rules`` ignore them, so that
    what ``GET`` answers can be edited and sent back.
    """

    source: Literal["file", "last good copy", "defaults"]
    error: str | None


_READ_ONLY = frozenset(set(RulesPublic.model_fields) - set(EligibilityRules.model_fields))


def _public(in_force: RulesInForce) -> RulesPublic:
    return RulesPublic(**in_force.rules.model_dump(), source=in_force.source, error=in_force.error)


def _whole_document() -> dict[str, Any]:
    """The body of ``PUT``, documented with every rule required."""
    extra = json_request_body(EligibilityRules)
    extra["requestBody"]["content"]["application/json"]["schema"]["required"] = list(RULE_NAMES)
    return extra


def _editable(body: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in body.items() if key not in _READ_ONLY}


@router.get("", response_model=RulesPublic)
def get_rules(_caller: Viewer, settings: SettingsDep, trail: AuditTrailDep) -> RulesPublic:
    """The eligibility rules in force (and why the rules file is not, when it is broken)."""
    return _public(rules_in_force_for(settings, trail))


@router.put(
    "",
    response_model=RulesPublic,
    openapi_extra=_whole_document(),
    responses={422: {"description": "A rule missing or unknown, or a value invalid; nothing changed"}},
)
def put_rules(caller: Admin, settings: SettingsDep, trail: AuditTrailDep, body: JsonObject) -> RulesPublic:
    """Replace the rules: every rule named (422 naming a missing or unknown one); stored atomically, read back."""
    return _public(replace_rules(settings, trail, caller.actor, _editable(body)))


@router.patch(
    "",
    response_model=RulesPublic,
    openapi_extra=json_request_body(EligibilityRules, partial=True),
    responses={422: {"description": "An unknown rule or an invalid value; nothing changed"}},
)
def patch_rules(caller: Admin, settings: SettingsDep, trail: AuditTrailDep, body: JsonObject) -> RulesPublic:
    """Change the rules named; the others keep their values.  Merged, validated, stored atomically, read back."""
    return _public(merge_rules(settings, trail, caller.actor, _editable(body)))
