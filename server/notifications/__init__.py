"""Result notifications: a signed webhook and an HL7 FHIR R4 transaction when a series is settled.

When a series is ``done``, ``not_analysable``, ``failed`` or ``rejected``, the transaction that
records the new state also writes one :class:`server.db_models.Notification` row per configured
receiver (:func:`server.notifications.record.record_notifications`), holding the facts of the
event (:mod:`server.notifications.facts`).  The outbox pump (:mod:`server.tasks.notify`) sends
them, retries with the deliveries' capped back-off, and stops after a permanent refusal.

* :mod:`server.notifications.webhook`: a JSON POST signed with HMAC-SHA256 over the timestamp
  and the raw body; the minimum necessary, no patient name or birth date.
* :mod:`server.notifications.fhir`: a FHIR R4 transaction Bundle with a DiagnosticReport and one
  Observation per headline number, built and validated with the ``fhir.resources`` models.
"""
