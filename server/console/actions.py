"""The console's admin actions, each through the service function the REST API calls.

* re-evaluate, analyse anyway: :func:`server.services.reevaluation.reevaluate_series`
  (``POST /series/{uid}/reevaluate``);
* re-queue, cancel, resend: :mod:`server.services.jobs` (``POST /jobs/{id}/requeue``, ``/cancel``, ``/resend``);
* add, change, remove, test a destination: :mod:`server.services.configuration` (``/destinations/...``);
* save the rules after reviewing the diff: :func:`server.services.configuration.merge_rules` (``PATCH /rules``).

Every action needs a session, its CSRF token and the admin role, and is audited before it runs
(:data:`server.console.auth.AdminForm`).  Done, it answers 303 to the page it came from with a
notice saying what happened (post, redirect, get); refused, it answers the refusal's status with a
page saying why (:mod:`server.console.app`), so the audit trail records the true outcome.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as FastAPIPath
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from server.api.deps import AuditTrailDep, SessionDep, SettingsDep, task_queue
from server.api.problems import validation_detail
from server.console.auth import CONSOLE_PREFIX, AdminForm, User
from server.console.forms import Form
from server.console.rendering import render
from server.console.rules_form import RULE_FIELDS, changes, fingerprint, form_values, rules_from_form
from server.console.sessions import ConsoleSession, Notice
from server.routing.destinations import DestinationEntry
from server.services.admin import Conflict, Invalid
from server.services.configuration import (
    create_destination,
    delete_destination,
    echo_destination,
    merge_rules,
    replace_destination,
    rules_in_force_for,
)
from server.services.jobs import cancel_job, requeue_job, resend_job
from server.services.reevaluation import EligibilityOverride, reevaluate_series

__all__ = ["router"]

router = APIRouter(prefix=CONSOLE_PREFIX)

JobId = Annotated[int, FastAPIPath(ge=1, le=2**62)]


def _done(user: ConsoleSession, to: str, text: str, *, ok: bool = True) -> RedirectResponse:
    """Back to ``to`` (303), where ``text`` says what the action did."""
    user.notices.append(Notice(text, ok))
    return RedirectResponse(to, status_code=303)


def _back_to(request: Request, path: str) -> str:
    """Remember the page an action came from: a refusal's page links back to it."""
    request.state.console_back = path
    return path


def _series_path(series_uid: str) -> str:
    return f"{CONSOLE_PREFIX}/series/{series_uid}"


@router.post("/series/{series_uid}/reevaluate")
def reevaluate(
    request: Request,
    series_uid: str,
    user: User,
    form: AdminForm,
    session: SessionDep,
    settings: SettingsDep,
    trail: AuditTrailDep,
) -> Response:
    """Judge a not-analysed series again under the rules in force; with a reason, analyse it anyway."""
    back = _back_to(request, _series_path(series_uid))
    override = None
    if form.text("decision") == "override":
        try:
            override = EligibilityOverride(reason=form.raw("reason"))
        except ValidationError as exc:
            raise Invalid("Override refused", "the reason: " + validation_detail(exc.errors())) from exc
    outcome = reevaluate_series(
        session,
        settings,
        trail,
        user.actor,
        series_uid,
        override=override,
        enqueue=task_queue(request).enqueue_analysis,
    )
    if outcome.eligible:
        return _done(user, back, f"Eligible under the rules in force now: queued for analysis (job {outcome.job_id}).")
    if outcome.queued:
        return _done(user, back, "Queued for analysis although not eligible; your reason is recorded.")
    return _done(user, back, "Still not eligible under the rules in force: " + "; ".join(outcome.reasons), ok=False)


@router.post("/jobs/{job_id}/requeue")
def requeue(request: Request, job_id: JobId, user: User, form: AdminForm, session: SessionDep) -> Response:
    """Analyse the job's series again (a new revision)."""
    job = requeue_job(session, job_id, task_queue(request).enqueue_analysis)
    return _done(user, _back_to(request, _series_path(job.series_instance_uid)), f"Job {job_id} queued again.")


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, job_id: JobId, user: User, form: AdminForm, session: SessionDep) -> Response:
    """Cancel a queued or running job."""
    job = cancel_job(session, job_id)
    return _done(user, _back_to(request, _series_path(job.series_instance_uid)), f"Job {job_id} cancelled.")


@router.post("/jobs/{job_id}/resend")
def resend(
    request: Request, job_id: JobId, user: User, form: AdminForm, session: SessionDep, settings: SettingsDep
) -> Response:
    """Put the job's report objects back in the outbox, for one destination or all."""
    destination = form.optional("destination")
    job = resend_job(session, settings, job_id, destination)
    back = _back_to(request, _series_path(job.series_instance_uid))
    return _done(user, back, f"Reports of job {job_id} go to {destination or 'every destination'} again.")


def _entry(form: Form) -> DestinationEntry:
    """The destination the form describes, validated as ``POST /destinations`` validates it."""
    try:
        return DestinationEntry.model_validate(
            {
                "address": form.text("address"),
                "outputs": form.values("outputs"),
                "tls": form.flag("tls"),
                "calling_aet": form.optional("calling_aet"),
                "uncompressed": form.flag("uncompressed"),
            }
        )
    except ValidationError as exc:
        raise Invalid("Invalid destination", validation_detail(exc.errors())) from exc


DESTINATIONS = f"{CONSOLE_PREFIX}/destinations"


@router.post("/destinations")
def add_destination(
    request: Request, user: User, form: AdminForm, settings: SettingsDep, trail: AuditTrailDep
) -> Response:
    """Add a destination (C-ECHOed first when asked)."""
    _back_to(request, DESTINATIONS)
    entry = create_destination(settings, trail, user.actor, _entry(form), verify=form.flag("verify"))
    return _done(user, DESTINATIONS, f"Destination {entry.address} added.")


@router.post("/destinations/{ae_title}")
def change_destination(
    request: Request, ae_title: str, user: User, form: AdminForm, settings: SettingsDep, trail: AuditTrailDep
) -> Response:
    """Replace one destination; it keeps its AE title."""
    _back_to(request, DESTINATIONS)
    entry = replace_destination(settings, trail, user.actor, ae_title, _entry(form), verify=form.flag("verify"))
    return _done(user, DESTINATIONS, f"Destination {entry.address} changed.")


@router.post("/destinations/{ae_title}/remove")
def remove_destination(
    request: Request, ae_title: str, user: User, form: AdminForm, settings: SettingsDep, trail: AuditTrailDep
) -> Response:
    """Remove one destination; objects already in its outbox still go."""
    _back_to(request, DESTINATIONS)
    delete_destination(settings, trail, user.actor, ae_title)
    return _done(user, DESTINATIONS, f"Destination {ae_title.strip()} removed.")


@router.post("/destinations/{ae_title}/echo")
def echo(request: Request, ae_title: str, user: User, form: AdminForm, settings: SettingsDep) -> Response:
    """C-ECHO one destination now, as the outbox reaches it (over TLS when its entry says so)."""
    _back_to(request, DESTINATIONS)
    result = echo_destination(settings, ae_title)
    words = f"{result.address}{' over TLS' if result.tls else ''}: {result.detail}."
    return _done(user, DESTINATIONS, f"C-ECHO {words}", ok=result.answered)


RULES = f"{CONSOLE_PREFIX}/rules"


@router.post("/rules/review")
def review_rules(
    request: Request, user: User, form: AdminForm, settings: SettingsDep, trail: AuditTrailDep
) -> Response:
    """The rules the form describes next to the rules in force: every change, to confirm before it is saved.

    Nothing is stored here; invalid values show the editor again with every error (422).
    """
    _back_to(request, RULES)
    in_force = rules_in_force_for(settings, trail)
    try:
        edited = rules_from_form(form)
    except Invalid as exc:
        values = {field.name: form.text(field.name) for field in RULE_FIELDS}
        context = {"in_force": in_force, "fields": RULE_FIELDS, "values": values, "error": exc.detail, "nav": "rules"}
        return render(request, "rules.html", context, status=422)
    context = {
        "changes": changes(in_force.rules, edited),
        "values": form_values(edited),
        "fields": RULE_FIELDS,
        "based_on": fingerprint(in_force.rules),
        "nav": "rules",
    }
    return render(request, "rules_review.html", context)


@router.post("/rules")
def save_rules(request: Request, user: User, form: AdminForm, settings: SettingsDep, trail: AuditTrailDep) -> Response:
    """Save the reviewed rules: only the rules that change, and only if the rules in force are still those reviewed."""
    _back_to(request, RULES)
    in_force = rules_in_force_for(settings, trail)
    if form.text("based_on") != fingerprint(in_force.rules):
        raise Conflict("Rules changed", "the rules were changed since you reviewed your edit; review it again")
    edited = rules_from_form(form)
    changed = {change.name: edited.model_dump()[change.name] for change in changes(in_force.rules, edited)}
    if not changed:
        return _done(user, RULES, "Nothing to save: the rules are unchanged.")
    merge_rules(settings, trail, user.actor, changed)
    return _done(user, RULES, f"Rules saved: {', '.join(sorted(changed))}.")
