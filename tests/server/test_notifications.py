"""Result notifications: a real HTTP receiver gets signed webhooks and FHIR R4 transaction Bundles.

The events are driven through the real code paths (the analysis task, the intake's routing, on
the real database); the receiver is an ``http.server`` on loopback that records every request and
answers from a script (a status and a delay per request).  Signatures are checked here with an
independent implementation of the documented scheme, FHIR Bundles by parsing them with the
``fhir.resources`` models.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from pydantic import SecretStr, ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from dicom_node.scp import AssociationInfo
from dicom_node.spool import StoredInstance
from models.findings import HEADLINE_KEYS
from server.api.main import create_app
from server.core.config import Settings
from server.core.db import downgrade, make_engine, session_scope, upgrade
from server.core.security import create_api_key
from server.db_models import Job, Notification, Series, utcnow
from server.notifications.facts import GENERATED_WEIGHTS_WITHHELD, EventFacts, HeadlineNumber, event_facts
from server.notifications.fhir import fhir_bundle
from server.notifications.record import receiver_address
from server.notifications.webhook import signature
from server.routing.intake import SeriesIntake
from server.tasks.app import ANALYSIS_TASK, NOTIFY_TASK, LungcdsCelery, create_celery
from server.tasks.notify import is_permanent_refusal, pump_notifications
from tests.server.conftest import HeaderFactory, Recorder

SECRET = "webhook-secret-for-tests"
ASSOC = AssociationInfo(id="a1", calling_aet="CT01", called_aet="LUNGCDS", peer_host="127.0.0.1", peer_port=1)


@dataclass
class Request:
    """One request as the receiver got it: the raw body bytes, before any parsing."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real HTTP server on loopback: records every POST, answers each with the next (status, delay) scripted."""

    server: ThreadingHTTPServer
    requests: list[Request] = field(default_factory=list)
    script: list[tuple[int, float]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def on(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                state.requests.append(Request(self.path, dict(self.headers.items()), body))
                status, delay = state.script.pop(0) if state.script else (200, 0.0)
            time.sleep(delay)
            answer = json.dumps({"resourceType": "Bundle", "type": "transaction-response"}).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:  # the client gave up waiting (the timeout test)
                pass

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server signature
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def notifying(settings: Settings, receiver: Receiver) -> Settings:
    """The test settings with a webhook and a FHIR server, both on the receiver."""
    settings.notify_webhook_urls = [f"{receiver.url}/hook"]
    settings.notify_webhook_secret = SecretStr(SECRET)
    settings.notify_fhir_base_url = f"{receiver.url}/fhir"
    settings.notify_fhir_patient_system = "urn:oid:1.2.3.999"
    settings.public_api_url = "https://lungcds.example.org:8443"
    settings.notify_timeout_s = 2.0
    return settings


@pytest.fixture
def app(notifying: Settings) -> LungcdsCelery:
    return create_celery(notifying)


def _rows(engine: Engine) -> list[Notification]:
    with Session(engine) as session:
        return list(session.exec(select(Notification).order_by(Notification.id)).all())  # type: ignore[arg-type]


def _send(app: LungcdsCelery, notification_id: int | None) -> None:
    app.tasks[NOTIFY_TASK].apply(args=[notification_id])


def _verified(request: Request) -> dict[str, Any]:
    """The webhook's JSON after checking its signature as a receiver would (documented scheme, not our code)."""
    timestamp = request.headers["X-Lungcds-Timestamp"]
    assert abs(time.time() - int(timestamp)) < 300, "a fresh timestamp"
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Lungcds-Signature"], f"sha256={expected}")
    assert request.headers["Content-Type"] == "application/json"
    document: dict[str, Any] = json.loads(request.body)
    return document


def _bundle(request: Request) -> Bundle:
    assert request.headers["Content-Type"] == "application/fhir+json"
    bundle = Bundle.model_validate_json(request.body)
    assert bundle.type == "transaction"
    return bundle


def _resources(bundle: Bundle) -> tuple[DiagnosticReport, list[Observation]]:
    resources = [entry.resource for entry in bundle.entry or []]
    reports = [r for r in resources if isinstance(r, DiagnosticReport)]
    assert len(reports) == 1
    return reports[0], [r for r in resources if isinstance(r, Observation)]


def _store_rejected(intake: SeriesIntake, ct_headers: HeaderFactory, **overrides: Any) -> str:
    """Store a series with 5 mm slices (the rules refuse it) and finalise it; its Series Instance UID."""
    headers = ct_headers(count=64, spacing=5.0, thickness=5.0, **overrides)
    for h in headers:
        intake.instance_stored(
            StoredInstance(header=h, path=Path(f"/x/{h.sop_instance_uid}"), size=1, duplicate=False), ASSOC
        )
    uid = headers[0].series_instance_uid
    assert uid is not None and intake.finalize(uid, trigger="test")
    return uid


def test_a_done_series_notifies_a_signed_webhook_and_a_fhir_transaction(
    app: LungcdsCelery, engine: Engine, queued: tuple[int, int, str], receiver: Receiver, notifying: Settings
) -> None:
    job_id, revision, uid = queued
    app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
    rows = _rows(engine)
    assert [(r.channel, r.event, r.job_id, r.state) for r in rows] == [
        ("webhook", "done", job_id, "pending"),
        ("fhir", "done", job_id, "pending"),
    ], "written with the job's completion, one per receiver"
    assert pump_notifications(app, engine) == 2
    assert pump_notifications(app, engine) == 0, "leased rows wait for their lease"
    for row in rows:
        _send(app, row.id)
    assert [r.state for r in _rows(engine)] == ["sent", "sent"]

    webhook = _verified(receiver.on("/hook")[0])
    assert webhook["event"] == "done" and webhook["series_instance_uid"] == uid and webhook["job_id"] == job_id
    assert webhook["validated"] is True and webhook["unvalidated"] == [] and webhook["headline_withheld"] is None
    result = json.loads((notifying.results_dir / uid / "result.json").read_text())
    headline = {n["key"]: n for n in webhook["headline"]}
    assert set(headline) == {k for k in HEADLINE_KEYS if result["headline"][k] is not None}
    volume = headline["lung_volume_ml"]
    assert volume["value"] == round(result["headline"]["lung_volume_ml"]) and volume["ucum"] == "ml"
    assert volume["provenance"] == "weight_free" and volume["model"] == result["headline_source"]["model"]
    assert webhook["links"]["pdf"] == f"https://lungcds.example.org:8443/api/v1/series/{uid}/reports/pdf"
    assert webhook["links"]["job"] == f"https://lungcds.example.org:8443/api/v1/jobs/{job_id}"
    assert "patient" not in webhook and b"PHANTOM-1" not in receiver.on("/hook")[0].body, "no Patient ID by default"

    fhir = receiver.on("/fhir")[0]
    assert b"Phantom" not in fhir.body, "the subject is an identifier, never a name"
    report, observations = _resources(_bundle(fhir))
    assert report.status == "final"
    assert report.code.coding[0].system == "http://loinc.org" and report.code.coding[0].code == "24627-2"
    assert report.subject.identifier.value == "PHANTOM-1" and report.subject.identifier.system == "urn:oid:1.2.3.999"
    assert report.imagingStudy[0].identifier.value == f"urn:oid:{webhook['study_instance_uid']}"
    assert report.presentedForm[0].url == webhook["links"]["pdf"]
    assert "decision support" in (report.conclusion or "") and "UNVALIDATED" not in (report.conclusion or "")
    assert len(observations) == len(headline) and len(report.result) == len(observations)
    by_text = {o.code.text: o for o in observations}
    lung_volume = by_text["Lung volume"]
    assert lung_volume.valueQuantity.value == volume["value"]
    assert (lung_volume.valueQuantity.system, lung_volume.valueQuantity.code) == ("http://unitsofmeasure.org", "ml")
    assert all(o.status == "final" and "weight-free" in (o.method.text or "") for o in observations)
    assert all(o.note and o.note[0].text for o in observations), "each carries its provenance in a note"
    entries = _bundle(fhir).entry or []
    assert all(e.request.method == "PUT" and "?identifier=" in e.request.url for e in entries), "conditional updates"

    keys = _keys(engine)
    client = TestClient(create_app(notifying, engine))
    job = client.get(f"/api/v1/jobs/{job_id}", headers=keys).json()
    assert [(n["channel"], n["state"], n["response_status"]) for n in job["notifications"]] == [
        ("fhir", "sent", 200),
        ("webhook", "sent", 200),
    ]
    assert job["notifications"][0]["receiver"] == f"{receiver.url}/fhir"
    timeline = client.get(f"/api/v1/jobs/{job_id}/timeline", headers=keys).json()
    assert sorted(e["name"] for e in timeline if e["kind"] == "notification_sent") == ["fhir", "webhook"]


def _keys(engine: Engine) -> dict[str, str]:
    with session_scope(engine) as session:
        return {"Authorization": f"Bearer {create_api_key(session, 'viewer').secret}"}


def test_a_failed_analysis_notifies_cancelled_with_the_reason(
    app: LungcdsCelery, engine: Engine, queued: tuple[int, int, str], receiver: Receiver, notifying: Settings
) -> None:
    job_id, revision, _ = queued
    next(notifying.spool_dir.rglob("*.dcm")).unlink()
    app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
    rows = _rows(engine)
    assert {(r.channel, r.event) for r in rows} == {("webhook", "failed"), ("fhir", "failed")}
    for row in rows:
        _send(app, row.id)
    webhook = _verified(receiver.on("/hook")[0])
    assert webhook["state"] == "failed" and "FileNotFoundError" in webhook["reasons"][0]
    assert webhook["headline"] == [] and "pdf" not in webhook["links"]
    report, observations = _resources(_bundle(receiver.on("/fhir")[0]))
    assert report.status == "cancelled" and observations == []
    assert report.conclusion is not None and "FileNotFoundError" in report.conclusion
    assert not report.presentedForm


def test_a_rejected_series_notifies_every_reason_without_a_job(
    intake: SeriesIntake,
    engine: Engine,
    ct_headers: HeaderFactory,
    receiver: Receiver,
    notifying: Settings,
    app: LungcdsCelery,
) -> None:
    notifying.notify_webhook_patient_id = True
    uid = _store_rejected(intake, ct_headers, patient_birth_date="19540321", accession_number="ACC-77")
    rows = _rows(engine)
    assert {(r.channel, r.event, r.job_id) for r in rows} == {("webhook", "rejected", None), ("fhir", "rejected", None)}
    for row in rows:
        _send(app, row.id)
    request = receiver.on("/hook")[0]
    webhook = _verified(request)
    assert webhook["series_instance_uid"] == uid and webhook["accession_number"] == "ACC-77"
    assert any("slice thickness 5.0 mm exceeds 3.0 mm" in r for r in webhook["reasons"])
    assert webhook["patient"] == {"id": "PID-1", "issuer": None}, "the Patient ID when the setting allows it"
    assert b"Doe" not in request.body and b"19540321" not in request.body, "never the name or the birth date"
    report, _ = _resources(_bundle(receiver.on("/fhir")[0]))
    assert report.status == "cancelled" and "slice thickness" in (report.conclusion or "")
    assert report.basedOn[0].identifier.value == "ACC-77"
    fhir_body = receiver.on("/fhir")[0].body
    assert b"Doe" not in fhir_body and b"19540321" not in fhir_body

    client = TestClient(create_app(notifying, engine))
    page = client.get("/api/v1/notifications", params={"series_instance_uid": uid}, headers=_keys(engine)).json()
    assert page["total"] == 2 and {n["state"] for n in page["items"]} == {"sent"}


def test_a_rejected_chest_ct_is_notified_once_with_its_notice_job(
    intake: SeriesIntake, engine: Engine, ct_headers: HeaderFactory, notifying: Settings, queue: Recorder
) -> None:
    uid = _store_rejected(intake, ct_headers, body_part_examined="CHEST")
    ((job_id, _),) = queue.calls
    with Session(engine) as session:
        job = session.get(Job, job_id)
    assert job is not None and job.series_instance_uid == uid, "the job that sends the not-analysed notice"
    assert {(r.event, r.job_id) for r in _rows(engine)} == {("rejected", job_id)}


def test_unreadable_pixels_notify_not_analysable_with_the_reason(
    app: LungcdsCelery, engine: Engine, queued: tuple[int, int, str], receiver: Receiver, notifying: Settings
) -> None:
    import pydicom

    job_id, revision, _ = queued
    victim = next(notifying.spool_dir.rglob("*.dcm"))
    ds = pydicom.dcmread(victim)
    ds.Rows = 64  # the pixel data no longer matches the other slices
    ds.save_as(victim)
    app.tasks[ANALYSIS_TASK].apply(args=[job_id, revision])
    rows = _rows(engine)
    assert {(r.channel, r.event, r.job_id) for r in rows} == {
        ("webhook", "not_analysable", job_id),
        ("fhir", "not_analysable", job_id),
    }
    for row in rows:
        _send(app, row.id)
    webhook = _verified(receiver.on("/hook")[0])
    assert "differing matrix size" in webhook["reasons"][0] and "pdf" in webhook["links"], "its notice PDF"
    report, observations = _resources(_bundle(receiver.on("/fhir")[0]))
    assert report.status == "cancelled" and observations == []
    assert (report.conclusion or "").startswith("Series not analysable: no results.")


def test_an_ignored_series_or_a_site_without_receivers_writes_no_notification(
    intake: SeriesIntake, engine: Engine, ct_headers: HeaderFactory, settings: Settings, notifying: Settings
) -> None:
    headers = ct_headers(series_uid="1.2.3.9.1", modality="MR", sop_class_uid="1.2.840.10008.5.1.4.1.1.4")
    for h in headers:
        intake.instance_stored(
            StoredInstance(header=h, path=Path(f"/x/{h.sop_instance_uid}"), size=1, duplicate=False), ASSOC
        )
    assert intake.finalize("1.2.3.9.1", trigger="test")
    with Session(engine) as session:
        series = session.get(Series, "1.2.3.9.1")
    assert series is not None and series.state == "ignored"
    assert _rows(engine) == [], "a series that is never analysable (not CT) is ignored, not notified"
    notifying.notify_webhook_urls, notifying.notify_fhir_base_url = [], None
    _store_rejected(intake, ct_headers)
    assert _rows(engine) == []


def test_a_failing_receiver_is_retried_with_back_off_and_gets_the_notification_once(
    intake: SeriesIntake,
    engine: Engine,
    ct_headers: HeaderFactory,
    receiver: Receiver,
    notifying: Settings,
    app: LungcdsCelery,
) -> None:
    notifying.notify_fhir_base_url = None
    _store_rejected(intake, ct_headers)
    (row,) = _rows(engine)
    receiver.script = [(500, 0.0), (200, 0.0)]
    _send(app, row.id)
    (failed,) = _rows(engine)
    assert failed.state == "pending" and failed.attempts == 1 and failed.failures == 1
    assert failed.response_status == 500 and failed.last_error is not None and failed.last_error.startswith("HTTP 500")
    assert failed.next_attempt_at is not None and failed.next_attempt_at > utcnow(), "backed off"
    assert pump_notifications(app, engine) == 0, "not due before its back-off"
    _send(app, row.id)
    _send(app, row.id)
    (sent,) = _rows(engine)
    assert sent.state == "sent" and sent.attempts == 2 and sent.last_error is None and sent.response_status == 200
    assert len(receiver.on("/hook")) == 2, "one failed attempt and one accepted; a sent row is not sent again"
    first, second = receiver.on("/hook")
    assert (
        first.body == second.body
        and first.headers["X-Lungcds-Notification"] == second.headers["X-Lungcds-Notification"]
    )
    _verified(second)
    metrics = TestClient(create_app(notifying, engine)).get("/metrics").text
    assert 'lungcds_notification_failures_total{channel="webhook",outcome="failed"} 1.0' in metrics
    assert 'lungcds_notification_failures_total{channel="webhook",outcome="refused"} 0.0' in metrics


def test_a_permanent_refusal_is_final_and_recorded(
    intake: SeriesIntake,
    engine: Engine,
    ct_headers: HeaderFactory,
    receiver: Receiver,
    notifying: Settings,
    app: LungcdsCelery,
) -> None:
    notifying.notify_webhook_urls = []
    _store_rejected(intake, ct_headers)
    (row,) = _rows(engine)
    receiver.script = [(400, 0.0)]
    _send(app, row.id)
    _send(app, row.id)
    (refused,) = _rows(engine)
    assert refused.state == "refused" and refused.attempts == 1 and refused.next_attempt_at is None
    assert refused.response_status == 400 and refused.last_error is not None and "HTTP 400" in refused.last_error
    assert len(receiver.requests) == 1, "not retried"
    assert pump_notifications(app, engine) == 0
    metrics = TestClient(create_app(notifying, engine)).get("/metrics").text
    assert 'lungcds_notification_failures_total{channel="fhir",outcome="refused"} 1.0' in metrics


def test_a_slow_receiver_times_out_and_is_retried(
    intake: SeriesIntake,
    engine: Engine,
    ct_headers: HeaderFactory,
    receiver: Receiver,
    notifying: Settings,
    app: LungcdsCelery,
) -> None:
    notifying.notify_fhir_base_url = None
    notifying.notify_timeout_s = 0.5
    _store_rejected(intake, ct_headers)
    (row,) = _rows(engine)
    receiver.script = [(200, 3.0)]
    started = time.monotonic()
    _send(app, row.id)
    assert time.monotonic() - started < 2.5, "the attempt gave up at its timeout"
    (waiting,) = _rows(engine)
    assert waiting.state == "pending" and waiting.failures == 1 and waiting.response_status is None
    assert waiting.last_error is not None and waiting.last_error.startswith("no answer within 0.5 s")
    _send(app, row.id)
    assert _rows(engine)[0].state == "sent"


def test_a_worker_without_the_secret_sends_nothing_unsigned(
    intake: SeriesIntake,
    engine: Engine,
    ct_headers: HeaderFactory,
    receiver: Receiver,
    notifying: Settings,
    app: LungcdsCelery,
) -> None:
    notifying.notify_fhir_base_url = None
    _store_rejected(intake, ct_headers)
    (row,) = _rows(engine)
    notifying.notify_webhook_secret = None
    _send(app, row.id)
    (waiting,) = _rows(engine)
    assert waiting.state == "pending" and "NOTIFY_WEBHOOK_SECRET" in (waiting.last_error or "")
    assert receiver.requests == []


def test_the_signature_covers_the_timestamp_and_every_byte() -> None:
    body = b'{"event":"done"}'
    reference = signature(b"k", 1700000000, body)
    assert reference == "sha256=" + hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature(b"k", 1700000001, body) != reference, "a replay with a new timestamp needs a new signature"
    assert signature(b"k", 1700000000, body + b" ") != reference
    assert signature(b"other", 1700000000, body) != reference


def _facts(provenance: str, validation: str, unvalidated: list[str]) -> EventFacts:
    number = HeadlineNumber(
        key="lung_volume_ml",
        name="Lung volume",
        value=5605.0,
        unit="mL",
        ucum="ml",
        digits=0,
        model="lungmask_r231",
        provenance=provenance,
        provenance_words="installed weights without a validation statement",
        validation=validation,
        validated=provenance in ("weight_free", "installed_validated"),
    )
    return EventFacts(
        event="done",
        occurred_at=datetime(2026, 12, 14, 9, 0, tzinfo=UTC),
        series_instance_uid="1.2.3.4",
        study_instance_uid="1.2.3",
        accession_number=None,
        patient_id=None,
        issuer_of_patient_id=None,
        study_date="20261214",
        job_id=1,
        pipeline_version="0.5.0",
        reasons=[],
        headline=[number],
        headline_withheld=None,
        unvalidated=unvalidated,
        reports=True,
    )


def test_unvalidated_outputs_make_a_preliminary_report_that_says_so() -> None:
    statement = "UNVALIDATED: installed weights without a validation statement, not a clinical result"
    facts = _facts("installed_unvalidated", statement, [f"lungmask_r231: {statement}"])
    report, (observation,) = _resources(fhir_bundle(facts, patient_system=None, public_api_url=None))
    assert report.status == "preliminary" and statement in (report.conclusion or "")
    assert observation.status == "preliminary" and observation.note[0].text == statement
    assert report.subject is None and not report.presentedForm, "no patient ID, no public URL: neither is invented"


def test_numbers_on_a_mask_of_generated_weights_are_never_notified(
    engine: Engine, intake: SeriesIntake, ct_headers: HeaderFactory
) -> None:
    headers = ct_headers()
    for h in headers:
        intake.instance_stored(
            StoredInstance(header=h, path=Path(f"/x/{h.sop_instance_uid}"), size=1, duplicate=False), ASSOC
        )
    result = {
        "headline": {"lung_volume_ml": 5000.0},
        "headline_source": {"model": "lungmask_r231", "provenance": "generated_weights", "validation": "UNVALIDATED"},
        "models": {"lungmask_r231": {"status": "ran", "validated": False, "validation": "UNVALIDATED: generated"}},
    }
    with Session(engine) as session:
        facts = event_facts(
            session,
            event="done",
            series_uid=headers[0].series_instance_uid or "",
            job_id=None,
            reasons=[],
            result=result,
        )
    assert facts.headline == [] and facts.headline_withheld == GENERATED_WEIGHTS_WITHHELD
    report, observations = _resources(fhir_bundle(facts, patient_system=None, public_api_url=None))
    assert observations == [] and report.status == "preliminary"
    assert "5000" not in (report.conclusion or "") and "generated demonstration weights" in (report.conclusion or "")


def test_permanent_and_passing_http_answers() -> None:
    assert [s for s in (301, 400, 401, 403, 404, 408, 410, 422, 425, 429, 500, 503) if is_permanent_refusal(s)] == [
        301,
        400,
        401,
        403,
        404,
        410,
        422,
    ]


def test_receivers_are_shown_without_their_credentials() -> None:
    assert (
        receiver_address("https://user:pw@hooks.example.org:9443/in?token=abc#x") == "https://hooks.example.org:9443/in"
    )
    assert receiver_address("http://[::1]:8080/fhir") == "http://[::1]:8080/fhir"


def test_webhooks_without_a_secret_or_receivers_that_are_no_urls_are_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="needs notify_webhook_secret"):
        Settings(data_dir=tmp_path, notify_webhook_urls="https://hooks.example.org/in")
    with pytest.raises(ValidationError, match="not an absolute http"):
        Settings(data_dir=tmp_path, notify_fhir_base_url="fhir.example.org/r4")
    settings = Settings(data_dir=tmp_path, notify_webhook_urls="https://a/x, https://b/y", notify_webhook_secret="s")
    assert settings.notify_webhook_urls == ["https://a/x", "https://b/y"]
    assert "s" not in repr(settings.notify_webhook_secret)
    assert settings.as_environment()["LUNGCDS_NOTIFY_WEBHOOK_SECRET"] == "s", "a child process gets the secret itself"


def test_the_notification_table_upgrades_and_downgrades(database_url: str) -> None:
    def tables() -> set[str]:
        engine = make_engine(database_url)
        try:
            return set(sa.inspect(engine).get_table_names())
        finally:
            engine.dispose()

    upgrade(database_url)
    assert "notification" in tables()
    downgrade(database_url, "0006")
    assert "notification" not in tables() and "job" in tables()
    upgrade(database_url)
    assert "notification" in tables()
