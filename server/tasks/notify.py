"""Sending result notifications: the pump and the task of the notification outbox.

The rows are written where a series is settled (:mod:`server.notifications.record`).  The pump
of the ``serve`` process leases the due ones (:func:`server.tasks.outbox.lease_due`) and puts one
task each on the cpu queue; a task claims its row, builds the request from the row's facts
(a signed webhook, or a FHIR transaction Bundle), makes one HTTP attempt and records the outcome:

* 2xx: sent;
* no answer, a timeout, 5xx, 408, 425 or 429: pending again, with the deliveries' capped
  exponential back-off (``LUNGCDS_DELIVERY_MAX_BACKOFF_SECONDS``);
* any other 4xx, or a redirect (a POST is not followed elsewhere): refused, with the answer, and
  not retried; likewise a notification that cannot be built (its resources do not validate).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import httpx
from celery import Celery, shared_task
from sqlalchemy.engine import Engine

from models import PIPELINE_VERSION
from server import crud
from server.core.config import Settings
from server.core.db import session_scope
from server.db_models import Notification, NotificationChannel, utcnow
from server.notifications.facts import EventFacts
from server.notifications.fhir import FHIR_JSON, fhir_bundle
from server.notifications.webhook import signed_webhook
from server.tasks.app import NOTIFY_TASK
from server.tasks.base import LungcdsTask
from server.tasks.outbox import LEASE, lease_due, retry_delay

__all__ = ["Outcome", "is_permanent_refusal", "post", "pump_notifications", "send_notification"]

logger = logging.getLogger(__name__)

#: 4xx answers that mean "not now": request timeout, too early, too many requests.
_RETRIED_4XX = frozenset({408, 425, 429})
#: Characters of a refusing answer's body kept with the error.
_ANSWER_CHARS = 300


class NotReady(Exception):
    """This process cannot send the notification yet (e.g. its secret is not configured here); retried."""


@dataclass(frozen=True)
class Outcome:
    """One attempt: the HTTP status (None without an answer), the error (None when accepted), whether final."""

    status: int | None
    error: str | None
    final: bool = False


def is_permanent_refusal(status: int) -> bool:
    """Whether an HTTP answer means "never" for this request: 3xx, and 4xx but 408, 425 and 429."""
    return 300 <= status < 500 and status not in _RETRIED_4XX


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Outcome:
    """POST ``body`` once; the outcome (never raises for network trouble: that is a retried failure)."""
    try:
        response = httpx.post(
            url,
            content=body,
            headers={"User-Agent": f"lungcds/{PIPELINE_VERSION}", **headers},
            timeout=timeout_s,
            follow_redirects=False,
        )
    except httpx.TimeoutException as exc:
        return Outcome(None, f"no answer within {timeout_s:g} s ({type(exc).__name__})")
    except httpx.HTTPError as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}")
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(status, None)
    answer = " ".join(response.text.split())[:_ANSWER_CHARS]
    return Outcome(status, f"HTTP {status} {response.reason_phrase}: {answer}", is_permanent_refusal(status))


def _request(settings: Settings, notification_id: int, channel: str, facts: EventFacts) -> tuple[bytes, dict[str, str]]:
    """Body and headers of one attempt of a notification.

    Raises
    ------
    NotReady
        A webhook without ``LUNGCDS_NOTIFY_WEBHOOK_SECRET`` in this process.
    ValueError
        An unknown channel, or FHIR resources that do not validate (pydantic's ValidationError).
    """
    if channel == NotificationChannel.WEBHOOK:
        secret = settings.notify_webhook_secret.get_secret_value() if settings.notify_webhook_secret else ""
        if not secret:
            raise NotReady(
                "LUNGCDS_NOTIFY_WEBHOOK_SECRET is not set in the process sending it; nothing unsigned is sent"
            )
        return signed_webhook(
            notification_id,
            facts,
            secret=secret.encode(),
            timestamp=int(time.time()),
            patient_id=settings.notify_webhook_patient_id,
            public_api_url=settings.public_api_url,
        )
    if channel == NotificationChannel.FHIR:
        bundle = fhir_bundle(
            facts, patient_system=settings.notify_fhir_patient_system, public_api_url=settings.public_api_url
        )
        headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
        if settings.notify_fhir_token is not None:
            headers["Authorization"] = f"Bearer {settings.notify_fhir_token.get_secret_value()}"
        return bundle.model_dump_json(exclude_none=True).encode(), headers
    raise ValueError(f"unknown notification channel {channel!r}")


def pump_notifications(app: Celery, engine: Engine) -> int:
    """Lease every due notification and enqueue its attempt; the number enqueued."""
    leased = lease_due(engine, Notification, LEASE)
    for notification_id in leased:
        app.send_task(NOTIFY_TASK, args=[notification_id])
    return len(leased)


@shared_task(bind=True, base=LungcdsTask, name=NOTIFY_TASK)
def send_notification(self: LungcdsTask, notification_id: int) -> None:
    """One attempt of one notification to its receiver."""
    engine, settings = self.engine, self.settings
    with session_scope(engine) as session:
        if not crud.claim_outbox_row(session, Notification, notification_id, LEASE):
            return
        row = session.get(Notification, notification_id)
        assert row is not None
        channel, target, attempts, facts_data = row.channel, row.target, row.attempts, row.facts
    try:
        facts = EventFacts.model_validate(facts_data)
        body, headers = _request(settings, notification_id, channel, facts)
    except NotReady as exc:
        outcome = Outcome(None, str(exc))
    except ValueError as exc:
        outcome = Outcome(None, f"not sent: the notification could not be built: {exc}", final=True)
    else:
        outcome = post(target, body, headers, settings.notify_timeout_s)
    extra = {"notification": notification_id, "channel": channel, "status": outcome.status, "error": outcome.error}
    with session_scope(engine) as session:
        if outcome.error is None:
            assert outcome.status is not None
            crud.notification_sent(session, notification_id, outcome.status)
            logger.info("notification sent", extra=extra)
        elif outcome.final:
            crud.notification_refused(session, notification_id, outcome.error, outcome.status)
            logger.warning("notification refused by its receiver; not retried", extra=extra)
        else:
            retry_at = utcnow() + retry_delay(attempts, settings.delivery_max_backoff_seconds)
            crud.notification_failed(session, notification_id, outcome.error, retry_at, outcome.status)
            logger.warning("notification failed; will retry", extra=extra)
