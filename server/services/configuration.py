"""Changing the eligibility rules and the report destinations, whoever asks (REST API, HTML console).

Rules: :func:`replace_rules` takes the whole document (every rule named, none unknown) and
:func:`merge_rules` changes the rules it names; both validate the result, and store it only
when it reads back as validated (:func:`server.routing.rules.save_rules`).

Destinations are named by their AE title (unique in the list,
:class:`server.routing.destinations.DestinationList`): the whole list is replaced
(:func:`replace_destinations`), or one entry is created, replaced or deleted.  While no
admin's file exists the settings' list is in force, and the first edit of one entry starts the
file from it.  ``verify`` C-ECHOes the destinations first (:func:`echo_destination`, over TLS
when the entry says so), and nothing changes unless each answers.

Each change is audited before it is made (:func:`server.services.admin.audit_change`).  A
read-modify-write (one entry, a merge, and the read of what a replacement replaces) holds
``NAME.edit-lock`` next to the file, so two admins editing at once never lose one another's
change; the file's own lock (:class:`server.core.admin_file.AdminFile`) only covers the write.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dicom_node.scu import echo
from server.audit import AuditTrail
from server.core.config import Settings
from server.core.tls import with_tls
from server.routing.destinations import (
    Address,
    DestinationEntry,
    DestinationList,
    DestinationsInForce,
    destinations_file,
    destinations_in_force,
    parse_address,
    save_destinations,
)
from server.routing.rules import EligibilityRules, RulesInForce, rules_in_force, save_rules
from server.services.admin import Conflict, Invalid, NotFound, audit_change
from server.services.dicomweb_send import probe

__all__ = [
    "ECHO_TIMEOUT_S",
    "RULE_NAMES",
    "EchoResult",
    "create_destination",
    "delete_destination",
    "echo_destination",
    "get_destination",
    "merge_rules",
    "replace_destination",
    "replace_destinations",
    "replace_rules",
    "rules_in_force_for",
]

#: Every rule a replacement must name.
RULE_NAMES: tuple[str, ...] = tuple(EligibilityRules.model_fields)
#: Seconds a destination has to answer a C-ECHO (connection, association and response).
ECHO_TIMEOUT_S = 5.0


@contextmanager
def _editing(path: Path) -> Iterator[None]:
    """Hold ``NAME.edit-lock`` for one read-modify-write of the admin file ``path``, across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(path.name + ".edit-lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _rules_file(settings: Settings) -> Path:
    assert settings.rules_file is not None, "Settings fills rules_file in from data_dir"
    return settings.rules_file


def rules_in_force_for(settings: Settings, trail: AuditTrail | None = None) -> RulesInForce:
    """The rules in force under ``settings`` (a broken file is audited through ``trail``)."""
    return rules_in_force(settings.rules_file, settings.max_slice_thickness_mm, trail)


def _unknown_rules(names: Sequence[str]) -> None:
    unknown = sorted(set(names) - set(RULE_NAMES))
    if unknown:
        raise Invalid("Unknown rule", f"no such rule: {', '.join(unknown)}; the rules are {', '.join(RULE_NAMES)}")


def replace_rules(settings: Settings, trail: AuditTrail, actor: str, document: Mapping[str, object]) -> RulesInForce:
    """Make ``document`` the rules: every rule named, none unknown (:class:`Invalid` naming them).

    Raises
    ------
    Invalid
        A rule missing or unknown, a value invalid, or rules the file cannot hold.
    server.audit.AuditUnavailable
        The change could not be audited; nothing changed.
    """
    _unknown_rules(list(document))
    missing = [name for name in RULE_NAMES if name not in document]
    if missing:
        raise Invalid(
            "Missing rule",
            f"a replacement names every rule; missing: {', '.join(missing)} (merge to change only some rules)",
        )
    return _store_rules(settings, trail, actor, "replace rules", lambda _current: dict(document))


def merge_rules(settings: Settings, trail: AuditTrail, actor: str, changes: Mapping[str, object]) -> RulesInForce:
    """Change the rules ``changes`` names; the others keep the values in force.

    Raises
    ------
    Invalid
        An unknown rule, an invalid value, or rules the file cannot hold.
    server.audit.AuditUnavailable
        The change could not be audited; nothing changed.
    """
    _unknown_rules(list(changes))
    return _store_rules(settings, trail, actor, "merge rules", lambda current: {**current, **changes})


def _store_rules(
    settings: Settings,
    trail: AuditTrail,
    actor: str,
    action: str,
    new_document: Callable[[dict[str, Any]], dict[str, Any]],
) -> RulesInForce:
    """Validate the rules ``new_document`` makes of the rules in force, audit the change, store them."""
    path = _rules_file(settings)
    with _editing(path):
        current = rules_in_force_for(settings, trail).rules
        try:
            rules = EligibilityRules.model_validate(new_document(current.model_dump()))
        except ValidationError as exc:
            raise Invalid("Invalid rules", str(exc)) from exc
        before, after = current.model_dump(), rules.model_dump()
        changed = {n: {"from": before[n], "to": after[n]} for n in RULE_NAMES if before[n] != after[n]}
        audit_change(trail, actor=actor, action=action, target=str(path), detail={"changed": changed})
        try:
            save_rules(path, rules)
        except ValueError as exc:
            raise Invalid("Rules not stored", str(exc)) from exc
    return rules_in_force_for(settings)


@dataclass(frozen=True)
class EchoResult:
    """Whether a destination answered a C-ECHO just now, and in words why not."""

    ae_title: str
    address: str
    tls: bool
    answered: bool
    detail: str


def _echo(settings: Settings, entry: DestinationEntry) -> EchoResult:
    """Check ``entry`` as the outbox reaches it: a C-ECHO (over TLS, our certificate and the CA, when it
    says so), a QIDO-RS search for a STOW-RS destination, and for return-to-sender every address of
    ``LUNGCDS_SENDER_ADDRESSES``."""
    address = parse_address(entry.address)
    if address.kind == "return-to-sender":
        checks = {
            origin: _answers(settings, entry, parse_address(a)) for origin, a in settings.sender_addresses.items()
        }
        silent = [f"{origin}: {detail}" for origin, (answered, detail) in checks.items() if not answered]
        if not checks:
            detail = "return to sender: LUNGCDS_SENDER_ADDRESSES lists no sender"
        else:
            detail = "; ".join(silent) or f"every sender of LUNGCDS_SENDER_ADDRESSES answered ({len(checks)})"
        return EchoResult(entry.ae_title, entry.address, entry.tls, bool(checks) and not silent, detail)
    answered, detail = _answers(settings, entry, address)
    return EchoResult(entry.ae_title, entry.address, entry.tls, answered, detail)


def _answers(settings: Settings, entry: DestinationEntry, address: Address) -> tuple[bool, str]:
    """Whether one DICOM peer (C-ECHO) or STOW-RS destination (QIDO-RS search) answers, and in words."""
    if address.url is not None:
        return probe(settings, address.name, address.url)
    assert address.dicom is not None
    try:
        target = with_tls(settings, address.dicom) if entry.tls else address.dicom
    except (ValueError, OSError) as exc:  # no CA configured, or its files unreadable (ssl.SSLError is an OSError)
        return False, f"TLS cannot be set up: {exc}"
    if echo(target, settings.ae_title, timeout=ECHO_TIMEOUT_S):
        return True, "answered the C-ECHO"
    return False, f"no successful C-ECHO answer within {ECHO_TIMEOUT_S:g} s (the server log says why)"


def _verify(settings: Settings, entries: Sequence[DestinationEntry]) -> None:
    """:class:`Invalid` naming every entry that does not answer a C-ECHO."""
    silent = [result.address for result in (_echo(settings, entry) for entry in entries) if not result.answered]
    if silent:
        raise Invalid("Destinations do not answer", f"no C-ECHO answer from {', '.join(silent)}")


def get_destination(settings: Settings, ae_title: str, trail: AuditTrail | None = None) -> DestinationEntry:
    """The destination in force with AE title ``ae_title``; :class:`NotFound` when there is none."""
    entry = destinations_in_force(settings, trail).destinations.find(ae_title)
    if entry is None:
        raise NotFound("Destination not found", f"no destination has AE title {ae_title.strip()!r}")
    return entry


def echo_destination(settings: Settings, ae_title: str) -> EchoResult:
    """C-ECHO the destination ``ae_title`` now (:class:`NotFound` when there is none)."""
    return _echo(settings, get_destination(settings, ae_title))


def replace_destinations(
    settings: Settings, trail: AuditTrail, actor: str, destinations: DestinationList, *, verify: bool = False
) -> DestinationsInForce:
    """Make ``destinations`` the whole list (C-ECHOed first with ``verify``).

    Raises
    ------
    Invalid
        A destination does not answer (``verify``), or TLS entries without a CA.
    server.audit.AuditUnavailable
        The change could not be audited; nothing changed.
    """
    if verify:
        _verify(settings, destinations.destinations)

    def replace(current: DestinationList) -> tuple[DestinationList, dict[str, Any]]:
        return destinations, {"before": _dumped(current.destinations), "after": _dumped(destinations.destinations)}

    _edit_destinations(settings, trail, actor, "replace destinations", replace)
    return destinations_in_force(settings)


def create_destination(
    settings: Settings, trail: AuditTrail, actor: str, entry: DestinationEntry, *, verify: bool = False
) -> DestinationEntry:
    """Add ``entry`` to the list (C-ECHOed first with ``verify``).

    Raises
    ------
    Conflict
        Its address or its AE title is listed already.
    Invalid
        It does not answer (``verify``), or it asks for TLS without a CA.
    server.audit.AuditUnavailable
        The change could not be audited; nothing changed.
    """

    def create(current: DestinationList) -> tuple[DestinationList, dict[str, Any]]:
        existing = current.find(entry.ae_title)
        if existing is not None:
            what = f"{entry.address} is" if existing.address == entry.address else f"AE title {entry.ae_title} is"
            raise Conflict("Destination exists", f"{what} listed already ({existing.address}); replace that entry")
        return DestinationList(destinations=[*current.destinations, entry]), {"created": _dumped([entry])[0]}

    create(destinations_in_force(settings).destinations)  # a clash is refused before any C-ECHO
    if verify:
        _verify(settings, [entry])
    _edit_destinations(settings, trail, actor, "create destination", create, target=entry.address)
    return entry


def replace_destination(
    settings: Settings, trail: AuditTrail, actor: str, ae_title: str, entry: DestinationEntry, *, verify: bool = False
) -> DestinationEntry:
    """Replace the destination ``ae_title`` by ``entry``, which keeps that AE title.

    Raises
    ------
    NotFound
        No destination has AE title ``ae_title``.
    Invalid
        ``entry`` names another AE title (delete and create to rename), does not answer
        (``verify``), or asks for TLS without a CA.
    server.audit.AuditUnavailable
        The change could not be audited; nothing changed.
    """
    if entry.ae_title != ae_title.strip():
        raise Invalid(
            "AE title differs",
            f"the address names AE title {entry.ae_title}, not {ae_title.strip()}; "
            "to rename a destination, delete it and create the new one",
        )
    get_destination(settings, ae_title)  # unknown: refused before any C-ECHO
    if verify:
        _verify(settings, [entry])

    def replace(current: DestinationList) -> tuple[DestinationList, dict[str, Any]]:
        old = current.find(entry.ae_title)
        if old is None:
            raise NotFound("Destination not found", f"no destination has AE title {entry.ae_title!r}")
        listed = [entry if e is old else e for e in current.destinations]
        return DestinationList(destinations=listed), {"before": _dumped([old])[0], "after": _dumped([entry])[0]}

    _edit_destinations(settings, trail, actor, "replace destination", replace, target=entry.address)
    return entry


def delete_destination(settings: Settings, trail: AuditTrail, actor: str, ae_title: str) -> None:
    """Remove the destination ``ae_title``.

    Objects already in its outbox are still sent, as to an unlisted address (plain DICOM, our AE title).

    Raises
    ------
    NotFound
        No destination has AE title ``ae_title``.
    server.audit.AuditUnavailable
        The change could not be audited; nothing changed.
    """

    def delete(current: DestinationList) -> tuple[DestinationList, dict[str, Any]]:
        old = current.find(ae_title)
        if old is None:
            raise NotFound("Destination not found", f"no destination has AE title {ae_title.strip()!r}")
        listed = [e for e in current.destinations if e is not old]
        return DestinationList(destinations=listed), {"deleted": _dumped([old])[0]}

    _edit_destinations(settings, trail, actor, "delete destination", delete, target=ae_title.strip())


def _dumped(entries: Sequence[DestinationEntry]) -> list[dict[str, Any]]:
    return [entry.model_dump() for entry in entries]


def _edit_destinations(
    settings: Settings,
    trail: AuditTrail,
    actor: str,
    action: str,
    change: Callable[[DestinationList], tuple[DestinationList, dict[str, Any]]],
    *,
    target: str | None = None,
) -> None:
    """Apply ``change`` (new list and audit detail, or a refusal) to the list in force, audit it, store it."""
    path = destinations_file(settings)
    with _editing(path):
        updated, detail = change(destinations_in_force(settings, trail).destinations)
        audit_change(trail, actor=actor, action=action, target=target or str(path), detail=detail)
        try:
            save_destinations(settings, updated)
        except ValueError as exc:
            raise Invalid("Invalid destinations", str(exc)) from exc
