"""The admin console (issue 18): login, sessions, CSRF, roles, every page and every action's effect.

A real app (``create_app``) on a migrated SQLite database, driven through FastAPI's TestClient as a
browser drives it: forms posted as ``application/x-www-form-urlencoded`` with the session cookie and
the CSRF token the page carried.  Effects are read back from the database, the REST API and the
audit trail, so each action is shown to go through the REST API's own service functions.
"""

from __future__ import annotations

import io
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import numpy as np
import pydicom
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from httpx import Response
from jwt.algorithms import RSAAlgorithm
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from dicom_node.header import InstanceHeader
from dicom_node.scp import AssociationInfo, StorageSCP
from dicom_node.spool import Spool, StoredInstance
from server.api.deps import Principal, verify_secret
from server.api.main import create_app
from server.audit import REQUESTED
from server.console.rendering import SECURITY_HEADERS
from server.console.sessions import SessionStore
from server.core.config import Settings
from server.core.db import session_scope
from server.core.oidc import OidcVerifier
from server.core.security import create_api_key, revoke_api_key
from server.db_models import AuditEvent, Delivery, Job, Series
from server.routing.destinations import load_destinations
from server.routing.intake import SeriesIntake
from server.services.configuration import rules_in_force_for
from tests.peers import free_port
from tests.server.conftest import HeaderFactory
from tests.server.test_admin_api import FakeQueue
from tests.server.test_configuration_api import _Sink

ASSOC = AssociationInfo(id="a", calling_aet="CT01", called_aet="LUNGCDS", peer_host="127.0.0.1", peer_port=1)
THICK = "1.2.826.0.1.3680043.8.498.20"
FINE = "1.2.826.0.1.3680043.8.498.30"
REASON = "5 mm is all this scanner makes; the referring team accepts the caveat (ticket 4711)"


@dataclass
class Keys:
    """The secrets of one viewer and one admin key, and the admin key's id."""

    viewer: str
    admin: str
    admin_id: int


@pytest.fixture
def fake_queue() -> FakeQueue:
    return FakeQueue()


@pytest.fixture
def client(settings: Settings, engine: Engine, fake_queue: FakeQueue) -> TestClient:
    return TestClient(create_app(settings, engine, fake_queue))


@pytest.fixture
def keys(engine: Engine) -> Keys:
    with session_scope(engine) as session:
        viewer, admin = create_api_key(session, "viewer"), create_api_key(session, "admin")
    return Keys(viewer.secret, admin.secret, admin.id)


def _store(engine: Engine, settings: Settings, headers: list[InstanceHeader]) -> str:
    """Store ``headers`` as one series and finalise it (no files: routing reads the index)."""
    intake = SeriesIntake(engine, settings, lambda job, rev: None)
    for header in headers:
        intake.instance_stored(StoredInstance(header=header, path=Path("/x"), size=1, duplicate=False), ASSOC)
    uid = headers[0].series_instance_uid or ""
    assert intake.finalize(uid, trigger="test")
    return uid


@pytest.fixture
def thick(engine: Engine, settings: Settings, ct_headers: HeaderFactory) -> str:
    """A series of 5 mm slices of patient Doe^Jane (PID-1), rejected by the default rules (3 mm)."""
    return _store(
        engine,
        settings,
        ct_headers(series_uid=THICK, count=64, spacing=5.0, thickness=5.0, accession_number="ACC-77"),
    )


@pytest.fixture
def queued_job(engine: Engine, settings: Settings, ct_headers: HeaderFactory) -> int:
    """An eligible series of another patient, queued: its job id."""
    _store(
        engine,
        settings,
        ct_headers(
            series_uid=FINE,
            study_uid="1.2.826.0.1.3680043.8.498.3",
            patient_id="PID-2",
            patient_name="Roe^Richard",
            study_date="20260305",
        ),
    )
    with Session(engine) as session:
        job_id = session.exec(select(Job.id).where(Job.series_instance_uid == FINE)).one()
    assert job_id is not None
    return job_id


def _hidden(page: Response, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page.text)
    assert found is not None, f"no hidden field {name} in the page"
    return found.group(1)


def login(client: TestClient, secret: str) -> str:
    """Log in through the form as a browser does; the session's CSRF token (from the next page)."""
    form = client.get("/console/login")
    assert form.status_code == 200
    answer = client.post(
        "/console/login",
        data={"login_token": _hidden(form, "login_token"), "credential": secret, "then": "/console/"},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/console/", answer.text
    return csrf(client)


def csrf(client: TestClient, page: str = "/console/") -> str:
    return _hidden(client.get(page), "csrf_token")


def _events(engine: Engine, **where: str) -> list[AuditEvent]:
    with Session(engine) as session:
        stmt = select(AuditEvent).order_by(col(AuditEvent.id))
        for name, value in where.items():
            stmt = stmt.where(getattr(AuditEvent, name) == value)
        return list(session.exec(stmt).all())


def _series(engine: Engine, uid: str) -> Series:
    with Session(engine) as session:
        series = session.get(Series, uid)
    assert series is not None
    return series


# --- login, session, CSRF -----------------------------------------------------------------------


def test_pages_send_strangers_to_the_login_form_and_back(client: TestClient, keys: Keys, thick: str) -> None:
    asked = client.get(f"/console/series/{thick}", follow_redirects=False)
    assert asked.status_code == 303
    assert asked.headers["location"] == f"/console/login?then=%2Fconsole%2Fseries%2F{thick}"
    form = client.get(asked.headers["location"])
    assert _hidden(form, "then") == f"/console/series/{thick}"
    back = client.post(
        "/console/login",
        data={"login_token": _hidden(form, "login_token"), "credential": keys.viewer, "then": _hidden(form, "then")},
        follow_redirects=False,
    )
    assert back.status_code == 303 and back.headers["location"] == f"/console/series/{thick}"
    offsite = client.get("/console/login", params={"then": "//evil.example/console/"}, follow_redirects=False)
    assert offsite.status_code == 303 and offsite.headers["location"] == "/console/", "never to another site"


def test_login_checks_the_key_as_the_api_does_and_sets_a_strict_session_cookie(
    client: TestClient, keys: Keys, engine: Engine
) -> None:
    form = client.get("/console/login")
    token = _hidden(form, "login_token")
    login_cookie = form.headers["set-cookie"]
    assert "HttpOnly" in login_cookie and "Path=/console/login" in login_cookie and "SameSite=strict" in login_cookie
    wrong = client.post("/console/login", data={"login_token": token, "credential": "lcds_not_a_key"})
    assert wrong.status_code == 401 and "the API key is unknown or revoked" in wrong.text
    assert "lungcds_console=" not in wrong.headers.get("set-cookie", "")

    form = client.get("/console/login")
    answer = client.post(
        "/console/login",
        data={"login_token": _hidden(form, "login_token"), "credential": keys.admin},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    session_cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("lungcds_console="))
    attributes = {part.strip().split("=")[0].lower() for part in session_cookie.split(";")[1:]}
    assert {"httponly", "path", "samesite"} <= attributes and "secure" not in attributes, "Secure over HTTPS only"
    assert "Path=/console" in session_cookie and "SameSite=strict" in session_cookie
    page = client.get("/console/")
    assert page.status_code == 200 and f"apikey:{keys.admin_id} (admin)" in page.text
    logins = [e for e in _events(engine, channel="api") if e.action == "POST /console/login"]
    assert [(e.actor, e.outcome) for e in logins] == [("anonymous", "401"), (f"apikey:{keys.admin_id}", "303")]
    assert all(keys.admin not in str(e.target) + str(e.detail) for e in _events(engine)), "no key in the trail"


def test_over_https_the_cookies_are_secure(settings: Settings, engine: Engine, keys: Keys) -> None:
    client = TestClient(create_app(settings, engine), base_url="https://testserver")
    form = client.get("/console/login")
    assert "Secure" in form.headers["set-cookie"]
    answer = client.post(
        "/console/login",
        data={"login_token": _hidden(form, "login_token"), "credential": keys.viewer},
        follow_redirects=False,
    )
    session_cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("lungcds_console="))
    assert "Secure" in session_cookie and "HttpOnly" in session_cookie


def test_a_login_post_without_the_forms_token_is_refused(client: TestClient, keys: Keys) -> None:
    """Login CSRF: another site cannot log a browser in under its own key (no login-form cookie there)."""
    client.get("/console/login")
    forged = client.post("/console/login", data={"login_token": "guessed", "credential": keys.admin})
    assert forged.status_code == 403
    client.cookies.clear()
    no_cookie = client.post("/console/login", data={"login_token": "", "credential": keys.admin})
    assert no_cookie.status_code == 403 and client.get("/console/", follow_redirects=False).status_code == 303


def test_every_answer_keeps_the_page_to_our_host(client: TestClient, keys: Keys) -> None:
    login(client, keys.viewer)
    for path in ("/console/login", "/console/", "/console/static/console.css", "/console/nowhere"):
        answer = client.get(path)
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (path, name)
    page = client.get("/console/series").text
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_a_post_without_the_sessions_csrf_token_is_refused_and_changes_nothing(
    client: TestClient, keys: Keys, settings: Settings, engine: Engine
) -> None:
    login(client, keys.admin)
    address = {"address": "PACS@127.0.0.1:104", "outputs": "sr"}
    missing = client.post("/console/destinations", data=address)
    wrong = client.post("/console/destinations", data={**address, "csrf_token": "x" * 43})
    assert (missing.status_code, wrong.status_code) == (403, 403)
    assert "CSRF token" in wrong.text
    assert load_destinations(settings).destinations == []
    assert _events(engine, channel="admin") == [] and _events(engine, outcome=REQUESTED) == []


def test_a_post_without_a_session_is_refused_before_anything(client: TestClient, thick: str, engine: Engine) -> None:
    refused = client.post(f"/console/series/{thick}/reevaluate", data={"decision": "rules"})
    assert refused.status_code == 401 and "log in again" in refused.text
    assert _series(engine, thick).state == "rejected"


def test_logout_ends_the_session_even_for_a_kept_cookie(client: TestClient, keys: Keys) -> None:
    token = login(client, keys.viewer)
    cookie = client.cookies.get("lungcds_console")
    assert client.post("/console/logout", data={"csrf_token": "wrong"}).status_code == 403
    out = client.post("/console/logout", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    assert client.get("/console/", follow_redirects=False).status_code == 303
    client.cookies.set("lungcds_console", cookie or "", path="/console")
    assert client.get("/console/", follow_redirects=False).status_code == 303, "the server forgot it"


def test_revoking_the_key_ends_its_sessions(client: TestClient, keys: Keys, engine: Engine) -> None:
    login(client, keys.admin)
    assert client.get("/console/").status_code == 200
    with session_scope(engine) as session:
        assert revoke_api_key(session, keys.admin_id)
    assert client.get("/console/", follow_redirects=False).status_code == 303


def test_sessions_end_when_idle_after_their_lifetime_and_with_their_token() -> None:
    now = [datetime(2026, 1, 1, 8, tzinfo=UTC)]
    store = SessionStore(idle=timedelta(minutes=30), lifetime=timedelta(hours=12), clock=lambda: now[0])
    token, opened = store.open(Principal(actor="apikey:1", role="admin", key_id=1))
    assert opened.csrf_token != token and store.find(token) is opened
    now[0] += timedelta(minutes=29)
    assert store.find(token) is opened, "a request restarts the idle time"
    now[0] += timedelta(minutes=30)
    assert store.find(token) is None and len(store) == 0

    token, _ = store.open(Principal(actor="apikey:1", role="admin", key_id=1))
    for _ in range(12 * 4):
        now[0] += timedelta(minutes=15)
        store.find(token)
    assert store.find(token) is None, "no session outlives its lifetime, however active"

    expiry = now[0] + timedelta(minutes=10)
    token, opened = store.open(Principal(actor="oidc:jane", role="viewer", expires_at=expiry))
    assert opened.expires_at == expiry
    now[0] += timedelta(minutes=11)
    assert store.find(token) is None, "a session ends with the token it was opened with"
    assert store.find("made-up") is None and store.find(None) is None


def test_an_oidc_access_token_pasted_into_the_form_logs_in_with_its_role_until_it_expires(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "key-1", "use": "sig", "alg": "RS256"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    issuer, audience = "https://idp.hospital.example/realms/radiology", "lungcds"
    settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_file = issuer, audience, jwks
    expiry = int(time.time()) + 300

    def token(roles: list[str]) -> str:
        claims = {"iss": issuer, "aud": audience, "sub": "dr.house", "exp": expiry, "roles": roles}
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "key-1"})

    client = TestClient(create_app(settings, engine))
    form = client.get("/console/login")
    nurse = client.post(
        "/console/login", data={"login_token": _hidden(form, "login_token"), "credential": token(["nurse"])}
    )
    assert nurse.status_code == 403 and "grants none of the roles" in nurse.text
    login(client, token(["lungcds-admin"]))
    assert "oidc:dr.house (admin)" in client.get("/console/").text
    verifier = OidcVerifier(issuer, audience, jwks)
    principal = verify_secret(engine, verifier, "roles", token(["lungcds-admin"]))
    assert principal.expires_at == datetime.fromtimestamp(expiry, UTC), "the session ends with the token"
    actors = [(e.actor, e.outcome) for e in _events(engine, channel="api") if e.action == "POST /console/login"]
    assert actors == [("oidc:dr.house", "403"), ("oidc:dr.house", "303")]


# --- pages --------------------------------------------------------------------------------------


def test_the_series_list_shows_patient_accession_and_date_and_filters(
    client: TestClient, keys: Keys, thick: str, queued_job: int
) -> None:
    login(client, keys.viewer)
    page = client.get("/console/series").text
    for shown in ("Doe, Jane", "PID-1", "ACC-77", "2026-01-01", "Roe, Richard", "PID-2", "2026-03-05"):
        assert shown in page
    assert '<span class="state state-rejected">Not eligible</span>' in page, "states in words"
    assert '<span class="state state-queued">Queued</span>' in page

    def listed(**query: str) -> set[str]:
        text = client.get("/console/series", params=query).text
        return {uid for uid in (THICK, FINE) if f'/console/series/{uid}"' in text}

    assert listed(q="jane doe") == {THICK}, "the words of a DICOM name, in any order"
    assert listed(q="pid-2") == {FINE} and listed(q="acc-77") == {THICK} and listed(q="nobody") == set()
    assert listed(q="100%") == set(), "LIKE wildcards match themselves"
    assert listed(state="rejected") == {THICK} and listed(state="queued") == {FINE}
    assert listed(date_from="2026-02-01") == {FINE} and listed(date_to="2026-02-01") == {THICK}
    bad = client.get("/console/series", params={"date_from": "March"})
    assert bad.status_code == 422 and "is not a date" in bad.text


def test_the_series_page_shows_every_reason_and_the_timeline(
    client: TestClient, keys: Keys, thick: str, queued_job: int
) -> None:
    login(client, keys.viewer)
    rejected = client.get(f"/console/series/{thick}").text
    assert "slice thickness 5.0 mm exceeds 3.0 mm" in rejected and "Not eligible" in rejected
    queued = client.get(f"/console/series/{FINE}").text
    assert f"Analysis job {queued_job}" in queued and "Queued for analysis" in queued
    assert "First image received" in queued and "Series complete" in queued
    missing = client.get("/console/series/9.9.9")
    assert missing.status_code == 404 and "no series with Series Instance UID 9.9.9" in missing.text


def test_the_dashboard_counts_today_and_names_the_oldest_waiting_job(
    client: TestClient, keys: Keys, thick: str, queued_job: int
) -> None:
    login(client, keys.viewer)
    page = client.get("/console/").text
    assert re.search(r'id="received-today">2<', page) and re.search(r'id="failed-today">0<', page)
    assert f"Job {queued_job}</a>" in page and 'id="queue-gpu">0 waiting' in page
    assert "0</span> alive of 0 seen" in page and "MB</span> free" in page


def test_jobs_models_rules_and_destinations_pages(
    client: TestClient, keys: Keys, queued_job: int, settings: Settings
) -> None:
    settings.destinations = ["PACS@127.0.0.1:104"]
    login(client, keys.viewer)
    jobs = client.get("/console/jobs").text
    assert f"Job {queued_job}</a>" in jobs and "Roe, Richard" in jobs and "PID-2" in jobs
    assert f"Job {queued_job}</a>" not in client.get("/console/jobs", params={"state": "done"}).text
    models = client.get("/console/models").text
    assert "lung_mask" in models or "Lung" in models
    assert "no weights installed" in models
    rules = client.get("/console/rules").text
    assert "Thickest slices" in rules and "3.0" in rules
    destinations = client.get("/console/destinations").text
    assert "PACS@127.0.0.1:104" in destinations and "the settings (LUNGCDS_DESTINATIONS)" in destinations


def test_a_viewer_sees_no_admin_action_and_is_refused_each(
    client: TestClient, keys: Keys, thick: str, queued_job: int, settings: Settings, engine: Engine
) -> None:
    settings.destinations = ["PACS@127.0.0.1:104"]
    token = login(client, keys.viewer)
    for page in (f"/console/series/{thick}", f"/console/series/{FINE}", "/console/destinations", "/console/rules"):
        text = client.get(page).text
        assert 'method="post"' not in text.replace('method="post" action="/console/logout"', ""), page
        assert "admin-actions" not in text
    assert "Audit trail" not in client.get("/console/").text
    for page in ("/console/audit", "/console/destinations/PACS/edit", "/console/destinations/PACS/remove"):
        assert client.get(page).status_code == 403, page
    actions = [
        (f"/console/series/{thick}/reevaluate", {"decision": "override", "reason": REASON}),
        (f"/console/jobs/{queued_job}/requeue", {}),
        (f"/console/jobs/{queued_job}/cancel", {}),
        (f"/console/jobs/{queued_job}/resend", {}),
        ("/console/destinations", {"address": "X@127.0.0.1:105", "outputs": "sr"}),
        ("/console/destinations/PACS", {"address": "PACS@127.0.0.1:106", "outputs": "sr"}),
        ("/console/destinations/PACS/remove", {}),
        ("/console/destinations/PACS/echo", {}),
        ("/console/rules/review", {"min_slices": "10"}),
        ("/console/rules", {"min_slices": "10"}),
    ]
    for path, data in actions:
        refused = client.post(path, data={**data, "csrf_token": token})
        assert refused.status_code == 403 and "Admin role required" in refused.text, path
    assert _series(engine, thick).state == "rejected" and _series(engine, FINE).state == "queued"
    assert [e.address for e in load_destinations(settings).destinations] == ["PACS@127.0.0.1:104"]
    assert _events(engine, outcome=REQUESTED) == [], "refused before it was audited as a change"


def test_the_audit_trail_page_filters_and_shows_console_requests_with_their_actor(
    client: TestClient, keys: Keys, engine: Engine
) -> None:
    login(client, keys.admin)
    client.get("/console/series")
    client.get("/console/static/console.css")
    page = client.get("/console/audit", params={"channel": "api", "actor": f"apikey:{keys.admin_id}"}).text
    assert "GET /console/series" in page and "GET /console/static" not in page, "the style sheet holds no data"
    actions = {e.action for e in _events(engine, actor=f"apikey:{keys.admin_id}")}
    assert {"POST /console/login", "GET /console/", "GET /console/series"} <= actions
    assert not any("static" in e.action for e in _events(engine))
    assert client.get("/console/audit", params={"channel": "radio"}).status_code == 422
    since = client.get("/console/audit", params={"since": "2999-01-01T00:00"}).text
    assert "No events match" in since


# --- admin actions ------------------------------------------------------------------------------


def test_reevaluate_without_and_with_an_override_as_the_rest_api_does(
    client: TestClient, keys: Keys, thick: str, fake_queue: FakeQueue, engine: Engine
) -> None:
    token = login(client, keys.admin)
    path = f"/console/series/{thick}/reevaluate"
    still = client.post(path, data={"csrf_token": token, "decision": "rules"})
    assert still.status_code == 200 and "Still not eligible under the rules in force" in still.text
    assert fake_queue.enqueued == []
    blank = client.post(path, data={"csrf_token": token, "decision": "override", "reason": "   "})
    assert blank.status_code == 422 and "must say why" in blank.text

    done = client.post(
        path, data={"csrf_token": token, "decision": "override", "reason": REASON}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"] == f"/console/series/{thick}"
    page = client.get(done.headers["location"]).text
    assert "Queued for analysis although not eligible" in page and REASON in page
    assert "slice thickness 5.0 mm exceeds 3.0 mm" in page
    rest = client.get(f"/api/v1/series/{thick}", headers={"Authorization": f"Bearer {keys.viewer}"}).json()
    override = rest["job"]["eligibility_override"]
    assert rest["state"] == "queued" and override["reason"] == REASON and override["by"] == f"apikey:{keys.admin_id}"
    assert fake_queue.enqueued == [(rest["job"]["id"], 1)]
    changes = [e for e in _events(engine, channel="admin") if e.action == "re-evaluate series"]
    assert [e.detail["eligibility_override"] is not None for e in changes] == [False, True]
    assert {e.actor for e in changes} == {f"apikey:{keys.admin_id}"}
    console = [
        (e.outcome, e.actor)
        for e in _events(engine, channel="api", action="POST /console/series/{series_uid}/reevaluate")
    ]
    assert console[-2:] == [(REQUESTED, f"apikey:{keys.admin_id}"), ("303", f"apikey:{keys.admin_id}")]
    again = client.post(path, data={"csrf_token": token, "decision": "rules"})
    assert again.status_code == 409 and "re-queue its job" in again.text and f"/console/series/{thick}" in again.text


def test_requeue_cancel_and_resend(
    client: TestClient, keys: Keys, queued_job: int, fake_queue: FakeQueue, engine: Engine, settings: Settings
) -> None:
    token = login(client, keys.admin)
    page = client.get(f"/console/series/{FINE}").text
    assert f'action="/console/jobs/{queued_job}/cancel"' in page
    requeued = client.post(f"/console/jobs/{queued_job}/requeue", data={"csrf_token": token}, follow_redirects=False)
    assert requeued.status_code == 303 and requeued.headers["location"] == f"/console/series/{FINE}"
    assert fake_queue.enqueued == [(queued_job, 2)]
    assert client.post(f"/console/jobs/{queued_job}/cancel", data={"csrf_token": token}).status_code == 200
    with Session(engine) as session:
        job = session.get(Job, queued_job)
        assert job is not None and (job.state, job.revision) == ("cancelled", 3)
    again = client.post(f"/console/jobs/{queued_job}/cancel", data={"csrf_token": token})
    assert again.status_code == 409 and "only queued or running jobs can be cancelled" in again.text
    nothing = client.post(f"/console/jobs/{queued_job}/resend", data={"csrf_token": token, "destination": ""})
    assert nothing.status_code == 409 and "has no report objects" in nothing.text
    settings.destinations = ["PACS@127.0.0.1:104"]
    with session_scope(engine) as session:
        session.add(
            Delivery(
                job_id=queued_job,
                destination="PACS@127.0.0.1:104",
                kind="sr",
                path="/x",
                sop_instance_uid="1.2",
                state="sent",
            )
        )
    unknown = client.post(f"/console/jobs/{queued_job}/resend", data={"csrf_token": token, "destination": "X@h:1"})
    assert unknown.status_code == 422 and "not a configured destination" in unknown.text
    sent = client.post(
        f"/console/jobs/{queued_job}/resend", data={"csrf_token": token, "destination": "PACS@127.0.0.1:104"}
    )
    assert sent.status_code == 200 and "go to PACS@127.0.0.1:104 again" in sent.text
    with Session(engine) as session:
        assert session.exec(select(Delivery.state)).one() == "pending"
    assert client.post("/console/jobs/999/requeue", data={"csrf_token": token}).status_code == 404


def test_destinations_added_tested_changed_and_removed(
    client: TestClient, keys: Keys, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    token = login(client, keys.admin)
    with StorageSCP("LISTENING", Spool(tmp_path / "pacs", min_free_bytes=0), _Sink()) as pacs:
        port = pacs.start("127.0.0.1", 0)
        form = {"csrf_token": token, "address": f"LISTENING@127.0.0.1:{port}", "outputs": ["sr", "pdf"], "verify": "1"}
        added = client.post("/console/destinations", data=form)
        assert added.status_code == 200 and f"Destination LISTENING@127.0.0.1:{port} added" in added.text
        (entry,) = load_destinations(settings).destinations
        assert (entry.outputs, entry.tls) == (["sr", "pdf"], False)
        echoed = client.post("/console/destinations/LISTENING/echo", data={"csrf_token": token})
        assert "answered the C-ECHO" in echoed.text and 'class="notice ok"' in echoed.text
        silent = {"csrf_token": token, "address": f"GONE@127.0.0.1:{free_port()}", "outputs": "sr", "verify": "1"}
        refused = client.post("/console/destinations", data=silent)
        assert refused.status_code == 422 and "no C-ECHO answer from GONE" in refused.text
        twice = client.post("/console/destinations", data={**form, "verify": ""})
        assert twice.status_code == 409 and "listed already" in twice.text

    invalid = client.post("/console/destinations", data={"csrf_token": token, "address": "no address", "outputs": "sr"})
    assert invalid.status_code == 422 and "Invalid destination" in invalid.text
    edit = client.get("/console/destinations/LISTENING/edit").text
    assert f'value="LISTENING@127.0.0.1:{port}"' in edit
    moved = {"csrf_token": token, "address": "LISTENING@127.0.0.1:11112", "outputs": "kos", "uncompressed": "1"}
    assert "changed" in client.post("/console/destinations/LISTENING", data=moved).text
    (entry,) = load_destinations(settings).destinations
    assert (entry.address, entry.outputs, entry.uncompressed) == ("LISTENING@127.0.0.1:11112", ["kos"], True)
    renamed = client.post("/console/destinations/LISTENING", data={**moved, "address": "OTHER@127.0.0.1:1"})
    assert renamed.status_code == 422 and "delete it and create the new one" in renamed.text
    assert "Remove LISTENING" in client.get("/console/destinations/LISTENING/remove").text
    removed = client.post("/console/destinations/LISTENING/remove", data={"csrf_token": token})
    assert removed.status_code == 200 and "Destination LISTENING removed" in removed.text
    assert load_destinations(settings).destinations == []
    actions = [e.action for e in _events(engine, channel="admin")]
    assert actions == ["create destination", "replace destination", "delete destination"]


def test_the_rules_editor_shows_the_diff_and_saves_only_what_was_reviewed(
    client: TestClient, keys: Keys, settings: Settings, engine: Engine
) -> None:
    token = login(client, keys.admin)
    editor = client.get("/console/rules").text
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)" maxlength', editor))
    assert fields["max_slice_thickness_mm"] == "3.0" and fields["modalities"] == "CT"

    invalid = client.post("/console/rules/review", data={**fields, "csrf_token": token, "min_slices": "many"})
    assert invalid.status_code == 422 and "min_slices" in invalid.text and "Nothing was changed" in invalid.text
    review = client.post(
        "/console/rules/review", data={**fields, "csrf_token": token, "max_slice_thickness_mm": "5", "min_slices": "30"}
    )
    assert review.status_code == 200
    diff = re.findall(r'<th>([^<]+)</th><td class="old">([^<]*)</td><td class="new">([^<]*)</td>', review.text)
    assert diff == [("Fewest slices", "20", "30"), ("Thickest slices (blank: the setting&#39;s value)", "3.0", "5.0")]
    assert rules_in_force_for(settings).rules.max_slice_thickness_mm == 3.0, "a review stores nothing"
    assert _events(engine, channel="admin") == []

    confirmed = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', review.text))
    saved = client.post("/console/rules", data=confirmed)
    assert saved.status_code == 200 and "Rules saved: max_slice_thickness_mm, min_slices" in saved.text
    rules = rules_in_force_for(settings).rules
    assert (rules.max_slice_thickness_mm, rules.min_slices, rules.modalities) == (5.0, 30, ["CT"])
    (event,) = _events(engine, channel="admin")
    assert event.action == "merge rules" and event.detail["changed"] == {
        "max_slice_thickness_mm": {"from": 3.0, "to": 5.0},
        "min_slices": {"from": 20, "to": 30},
    }
    stale = client.post("/console/rules", data=confirmed)
    assert stale.status_code == 409 and "review it again" in stale.text, "the rules in force are not those reviewed"


def _secondary_capture(path: Path, pixels: np.ndarray) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = pixels.shape[:2]
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation, dataset.PlanarConfiguration = 3, "RGB", 0
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 8, 8, 7, 0
    dataset.PixelData = pixels.tobytes()
    dataset.save_as(path, enforce_file_format=True)


def test_outputs_download_and_the_key_image_shows_the_secondary_captures_pixels(
    client: TestClient, keys: Keys, queued_job: int, engine: Engine, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "report.pdf").write_bytes(b"%PDF-1.4 a report")
    pixels = np.random.default_rng(7).integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    _secondary_capture(results / "key_images_sc.dcm", pixels)
    with session_scope(engine) as session:
        job = session.get(Job, queued_job)
        assert job is not None
        job.result_dir = str(results)
        session.add(job)
    login(client, keys.viewer)
    page = client.get(f"/console/series/{FINE}").text
    assert f'href="/console/series/{FINE}/reports/pdf"' in page and "Download PDF report" in page
    assert "Structured Report" not in page, "only what the analysis wrote"
    pdf = client.get(f"/console/series/{FINE}/reports/pdf")
    assert pdf.content == b"%PDF-1.4 a report" and pdf.headers["content-type"] == "application/pdf"
    assert client.get(f"/console/series/{FINE}/reports/sr").status_code == 404
    assert f'src="/console/series/{FINE}/key-image.png"' in client.get(f"/console/series/{FINE}/key-image").text
    png = client.get(f"/console/series/{FINE}/key-image.png")
    assert png.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))), pixels)
    assert pydicom.dcmread(results / "key_images_sc.dcm").Rows == 40
