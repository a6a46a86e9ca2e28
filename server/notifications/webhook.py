"""The webhook: the facts of an event as JSON, POSTed with an HMAC-SHA256 signature.

Signature scheme (what a receiver checks)
-----------------------------------------
Each attempt carries

* ``X-Lungcds-Timestamp``: the Unix time of the attempt, in whole seconds;
* ``X-Lungcds-Signature``: ``sha256=`` and the lower-case hex HMAC-SHA256, keyed with
  ``LUNGCDS_NOTIFY_WEBHOOK_SECRET`` (its UTF-8 bytes), of the timestamp's decimal digits, one
  ``.`` and the raw request body as sent (``f"{timestamp}.".encode() + body``);
* ``X-Lungcds-Notification``: the notification's id, the same on every retry, and
  ``X-Lungcds-Event``: ``done``, ``not_analysable``, ``failed`` or ``rejected``.

A receiver recomputes the HMAC over the body bytes it received (before parsing them), compares
in constant time, and refuses a timestamp more than a few minutes from its clock: a captured
request cannot be replayed later, because a new timestamp would need a new signature.  A retry
is signed afresh; the id lets the receiver ignore a notification it already processed.

The body is the minimum necessary: no patient name or birth date, and the Patient ID with its
issuer only when ``LUNGCDS_NOTIFY_WEBHOOK_PATIENT_ID`` is on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from server.notifications.facts import EventFacts
from server.notifications.links import resource_links

__all__ = [
    "EVENT_HEADER",
    "ID_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "signature",
    "signed_webhook",
    "webhook_body",
]

SIGNATURE_HEADER = "X-Lungcds-Signature"
TIMESTAMP_HEADER = "X-Lungcds-Timestamp"
ID_HEADER = "X-Lungcds-Notification"
EVENT_HEADER = "X-Lungcds-Event"


def webhook_body(
    notification_id: int, facts: EventFacts, *, patient_id: bool, public_api_url: str | None
) -> dict[str, Any]:
    """The JSON document of one webhook (``patient_id``: include the Patient ID and its issuer)."""
    body: dict[str, Any] = {
        "notification_id": notification_id,
        "event": facts.event,
        "occurred_at": facts.occurred_at.isoformat(),
        "series_instance_uid": facts.series_instance_uid,
        "study_instance_uid": facts.study_instance_uid,
        "accession_number": facts.accession_number,
        "job_id": facts.job_id,
        "state": facts.event,
        "reasons": facts.reasons,
        "pipeline_version": facts.pipeline_version,
        "validated": facts.validated,
        "unvalidated": facts.unvalidated,
        "headline": [number.model_dump() for number in facts.headline],
        "headline_withheld": facts.headline_withheld,
        "links": resource_links(facts, public_api_url),
    }
    if patient_id:
        body["patient"] = {"id": facts.patient_id, "issuer": facts.issuer_of_patient_id}
    return body


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``f"{timestamp}."`` followed by the raw body."""
    return "sha256=" + hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signed_webhook(
    notification_id: int,
    facts: EventFacts,
    *,
    secret: bytes,
    timestamp: int,
    patient_id: bool,
    public_api_url: str | None,
) -> tuple[bytes, dict[str, str]]:
    """The body bytes and headers of one attempt, signed for ``timestamp``."""
    document = webhook_body(notification_id, facts, patient_id=patient_id, public_api_url=public_api_url)
    body = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    headers = {
        "Content-Type": "application/json",
        ID_HEADER: str(notification_id),
        EVENT_HEADER: facts.event,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }
    return body, headers
