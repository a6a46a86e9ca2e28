"""The rules editor's form: each rule as a field in words, read back into rules, and what changes.

An admin edits the rules in a form, sees every change (old and new value) and saves it in a
second step.  The form's text becomes a document that the rules' own model validates
(:class:`server.routing.rules.EligibilityRules`), so the editor accepts exactly what
``PATCH /api/v1/rules`` accepts; the save goes through the same service
(:func:`server.services.configuration.merge_rules`) with the rules that changed.  The review
page carries a fingerprint of the rules it was computed from: when another admin saved in the
meantime, the save is refused and the review must be done again, so nobody saves a diff they did
not see.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from server.api.problems import validation_detail
from server.console.forms import Form
from server.routing.rules import EligibilityRules
from server.services.admin import Invalid
from server.services.configuration import RULE_NAMES

__all__ = ["RULE_FIELDS", "Change", "RuleField", "changes", "fingerprint", "form_values", "rules_from_form"]

Kind = Literal["list", "number", "optional number", "whole number"]


@dataclass(frozen=True)
class RuleField:
    """One rule in the editor: its name (the form field), what it means in words, and its kind of value."""

    name: str
    words: str
    kind: Kind
    unit: str = ""


#: Every rule, in the order of ``default_rules.toml``, in words.
RULE_FIELDS: tuple[RuleField, ...] = (
    RuleField("analysed_sop_classes", "SOP classes analysed (UIDs)", "list"),
    RuleField("modalities", "Modalities analysed", "list"),
    RuleField("required_image_type", "Image Type values every image must have", "list"),
    RuleField("excluded_image_type", "Image Type values no image may have", "list"),
    RuleField("max_axial_tilt_deg", "Largest tilt of the slices from axial", "number", "degrees"),
    RuleField("spacing_tolerance", "Tolerance of slice gaps around the median spacing", "number", "fraction"),
    RuleField("min_coverage_mm", "Smallest head-to-foot coverage", "number", "mm"),
    RuleField("min_slices", "Fewest slices", "whole number"),
    RuleField("min_age_years", "Youngest patient (0: any age)", "optional number", "years"),
    RuleField("max_slice_thickness_mm", "Thickest slices (blank: the setting's value)", "optional number", "mm"),
)
assert tuple(field.name for field in RULE_FIELDS) == RULE_NAMES, "every rule has a field, in the model's order"


@dataclass(frozen=True)
class Change:
    """One rule an edit changes: its words, the value in force and the value it will have."""

    name: str
    words: str
    old: str
    new: str


def _shown(value: Any) -> str:
    """A rule's value as the form shows it: lists comma-separated, no value blank."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


def form_values(rules: EligibilityRules) -> dict[str, str]:
    """The form's field values for ``rules``."""
    dumped = rules.model_dump()
    return {field.name: _shown(dumped[field.name]) for field in RULE_FIELDS}


def _document(form: Form) -> dict[str, Any]:
    """The form's text as a rules document: lists split at commas, blank optional numbers as none."""
    document: dict[str, Any] = {}
    for field in RULE_FIELDS:
        text = form.text(field.name)
        if field.kind == "list":
            document[field.name] = [item.strip() for item in text.split(",") if item.strip()]
        elif field.kind == "optional number":
            document[field.name] = text or None
        else:
            document[field.name] = text
    return document


def rules_from_form(form: Form) -> EligibilityRules:
    """The rules the form describes, validated as the REST API validates them (:class:`Invalid` naming each error)."""
    try:
        return EligibilityRules.model_validate(_document(form))
    except ValidationError as exc:
        raise Invalid("Invalid rules", validation_detail(exc.errors())) from exc


def changes(current: EligibilityRules, edited: EligibilityRules) -> list[Change]:
    """Every rule whose value ``edited`` changes, with both values as the form shows them."""
    before, after = current.model_dump(), edited.model_dump()
    return [
        Change(field.name, field.words, _shown(before[field.name]), _shown(after[field.name]))
        for field in RULE_FIELDS
        if before[field.name] != after[field.name]
    ]


def fingerprint(rules: EligibilityRules) -> str:
    """Identifies a version of the rules: the review page's, compared again at the save."""
    return hashlib.sha256(json.dumps(rules.model_dump(), sort_keys=True).encode("utf-8")).hexdigest()
