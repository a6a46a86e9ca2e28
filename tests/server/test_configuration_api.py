"""Consistent writes (issue 18): PUT replaces, PATCH merges; destinations one by one by AE title; all audited."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from dicom_node.scp import AssociationInfo, StorageSCP
from dicom_node.spool import Spool, StoredInstance
from dicom_node.tls import server_context
from server.api.main import create_app
from server.audit import REQUESTED, AuditTrail, AuditUnavailable
from server.core.config import OUTPUT_KINDS, Settings
from server.core.db import session_scope
from server.core.security import create_api_key
from server.db_models import AuditEvent
from server.routing.destinations import DestinationEntry, destinations_file, load_destinations
from server.services.configuration import RULE_NAMES, create_destination
from tests.dicom_node.certificates import ThrowawayCA
from tests.peers import free_port


class _Sink:
    def instance_stored(self, stored: StoredInstance, assoc: AssociationInfo) -> None:
        return None

    def instance_refused(
        self,
        sop_instance_uid: str,
        status: int,
        reason: str,
        assoc: AssociationInfo,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        return None

    def association_ended(self, assoc: AssociationInfo, series_uids: frozenset[str], released: bool) -> None:
        return None


@pytest.fixture
def client(settings: Settings, engine: Engine) -> TestClient:
    return TestClient(create_app(settings, engine))


@pytest.fixture
def keys(engine: Engine) -> dict[str, str]:
    with session_scope(engine) as session:
        return {role: create_api_key(session, role).secret for role in ("viewer", "admin")}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _admin_events(engine: Engine) -> list[AuditEvent]:
    with Session(engine) as session:
        rows = session.exec(select(AuditEvent).where(AuditEvent.channel == "admin").order_by(AuditEvent.id))  # type: ignore[arg-type]
        return list(rows.all())


# --- rules: PUT replaces, PATCH merges ---------------------------------------------------------


def test_put_replaces_the_whole_document_and_patch_changes_only_what_it_names(
    client: TestClient, keys: dict[str, str], settings: Settings
) -> None:
    admin = _auth(keys["admin"])
    assert client.patch("/api/v1/rules", json={"min_slices": 7}, headers=admin).json()["min_slices"] == 7
    document = client.get("/api/v1/rules", headers=admin).json()
    assert (document["min_slices"], document["min_age_years"]) == (7, 18)

    document.update(min_slices=20, min_age_years=16)  # the listing, edited and sent back whole
    replaced = client.put("/api/v1/rules", json=document, headers=admin)
    assert replaced.status_code == 200
    assert (replaced.json()["min_slices"], replaced.json()["min_age_years"]) == (20, 16)

    merged = client.patch("/api/v1/rules", json={"min_age_years": 21}, headers=admin).json()
    assert (merged["min_slices"], merged["min_age_years"]) == (20, 21), "PATCH leaves the other rules as they are"
    assert settings.rules_file is not None and "min_age_years = 21" in settings.rules_file.read_text()


def test_a_put_without_every_rule_names_what_is_missing_and_changes_nothing(
    client: TestClient, keys: dict[str, str], settings: Settings
) -> None:
    admin = _auth(keys["admin"])
    assert client.patch("/api/v1/rules", json={"min_slices": 7}, headers=admin).status_code == 200
    assert settings.rules_file is not None
    before = settings.rules_file.read_bytes()
    partial = client.put("/api/v1/rules", json={"min_slices": 9}, headers=admin)
    assert partial.status_code == 422 and partial.json()["title"] == "Missing rule"
    missing = [name for name in RULE_NAMES if name != "min_slices"]
    assert f"missing: {', '.join(missing)}" in partial.json()["detail"]
    whole = client.get("/api/v1/rules", headers=admin).json()
    unknown = client.put("/api/v1/rules", json={**whole, "colour": "red"}, headers=admin)
    assert unknown.status_code == 422 and "no such rule: colour" in unknown.json()["detail"]
    invalid = client.put("/api/v1/rules", json={**whole, "min_slices": 0}, headers=admin)
    assert invalid.status_code == 422 and "min_slices" in invalid.json()["detail"]
    assert settings.rules_file.read_bytes() == before
    assert client.put("/api/v1/rules", json=whole, headers=_auth(keys["viewer"])).status_code == 403
    assert client.patch("/api/v1/rules", json={"min_slices": 3}).status_code == 401


def test_rule_changes_are_audited_with_what_changed_and_who(
    client: TestClient, keys: dict[str, str], engine: Engine
) -> None:
    admin = _auth(keys["admin"])
    whole = client.get("/api/v1/rules", headers=admin).json()
    assert client.put("/api/v1/rules", json={**whole, "min_coverage_mm": 120.0}, headers=admin).status_code == 200
    (event,) = _admin_events(engine)
    assert (event.action, event.outcome, event.actor.split(":")[0]) == ("replace rules", REQUESTED, "apikey")
    assert event.detail == {"changed": {"min_coverage_mm": {"from": 150.0, "to": 120.0}}}
    listed = client.get("/api/v1/audit", params={"channel": "admin"}, headers=admin).json()["items"]
    assert [e["action"] for e in listed] == ["replace rules"]


# --- destinations, one by one ------------------------------------------------------------------


def test_one_destination_at_a_time_starting_from_the_settings(
    client: TestClient, keys: dict[str, str], settings: Settings
) -> None:
    admin, viewer = _auth(keys["admin"]), _auth(keys["viewer"])
    settings.destinations = ["PACS@10.0.0.1:104"]
    assert not destinations_file(settings).exists()

    created = client.post("/api/v1/destinations", json={"address": "VNA@vna.example:11112"}, headers=admin)
    assert created.status_code == 201 and created.headers["location"] == "/api/v1/destinations/VNA"
    assert {k: created.json()[k] for k in ("address", "outputs", "tls", "calling_aet")} == {
        "address": "VNA@vna.example:11112",
        "outputs": list(OUTPUT_KINDS),
        "tls": False,
        "calling_aet": None,
    }
    listed = client.get("/api/v1/destinations", headers=viewer).json()
    assert listed["source"] == "file", "the first edit starts the admin's file from the settings' list"
    assert [e["address"] for e in listed["destinations"]] == ["PACS@10.0.0.1:104", "VNA@vna.example:11112"]

    assert client.get("/api/v1/destinations/PACS", headers=viewer).json()["address"] == "PACS@10.0.0.1:104"
    assert client.get("/api/v1/destinations/NONE", headers=viewer).status_code == 404

    changed = {"address": "VNA@vna2.example:104", "outputs": ["sr", "pdf"], "calling_aet": "LUNG"}
    replaced = client.put("/api/v1/destinations/VNA", json=changed, headers=admin)
    assert replaced.status_code == 200 and replaced.json()["outputs"] == ["sr", "pdf"]
    entry = next(e for e in load_destinations(settings).destinations if e.ae_title == "VNA")
    assert (entry.address, entry.calling_aet) == ("VNA@vna2.example:104", "LUNG")

    assert client.delete("/api/v1/destinations/PACS", headers=admin).status_code == 204
    assert [e.address for e in load_destinations(settings).destinations] == ["VNA@vna2.example:104"]
    assert client.delete("/api/v1/destinations/PACS", headers=admin).status_code == 404


def test_single_destination_refusals(client: TestClient, keys: dict[str, str], settings: Settings) -> None:
    admin = _auth(keys["admin"])
    settings.destinations = ["PACS@10.0.0.1:104"]
    same = client.post("/api/v1/destinations", json={"address": "PACS@10.0.0.1:104"}, headers=admin)
    assert same.status_code == 409 and "PACS@10.0.0.1:104 is listed already" in same.json()["detail"]
    title = client.post("/api/v1/destinations", json={"address": "PACS@10.0.0.2:104"}, headers=admin)
    assert title.status_code == 409 and "AE title PACS is listed already" in title.json()["detail"]
    renamed = client.put("/api/v1/destinations/PACS", json={"address": "OTHER@10.0.0.1:104"}, headers=admin)
    assert renamed.status_code == 422 and "delete it and create the new one" in renamed.json()["detail"]
    unknown = client.put("/api/v1/destinations/NONE", json={"address": "NONE@10.0.0.9:104"}, headers=admin)
    assert unknown.status_code == 404
    bad = client.post("/api/v1/destinations", json={"address": "VNA@h:104", "outputs": ["xml"]}, headers=admin)
    assert bad.status_code == 422 and "unknown outputs" in bad.json()["detail"]
    tls = client.post("/api/v1/destinations", json={"address": "VNA@h:104", "tls": True}, headers=admin)
    assert tls.status_code == 422 and "LUNGCDS_DICOM_TLS_CA" in tls.json()["detail"]
    assert not destinations_file(settings).exists(), "nothing was written"
    viewer = _auth(keys["viewer"])
    assert client.post("/api/v1/destinations", json={"address": "VNA@h:104"}, headers=viewer).status_code == 403
    assert client.delete("/api/v1/destinations/PACS", headers=viewer).status_code == 403
    assert client.post("/api/v1/destinations/PACS/echo", headers=viewer).status_code == 403
    assert client.delete("/api/v1/destinations/PACS").status_code == 401


def test_a_list_naming_one_ae_title_twice_is_refused(client: TestClient, keys: dict[str, str]) -> None:
    body = {"destinations": [{"address": "PACS@10.0.0.1:104"}, {"address": "PACS@10.0.0.2:104"}]}
    response = client.put("/api/v1/destinations", json=body, headers=_auth(keys["admin"]))
    assert response.status_code == 422
    assert "AE title PACS is listed more than once (PACS@10.0.0.1:104, PACS@10.0.0.2:104)" in response.json()["detail"]


def test_destination_changes_are_audited(client: TestClient, keys: dict[str, str], engine: Engine) -> None:
    admin = _auth(keys["admin"])
    client.post("/api/v1/destinations", json={"address": "VNA@vna.example:104"}, headers=admin)
    client.put("/api/v1/destinations/VNA", json={"address": "VNA@vna.example:105"}, headers=admin)
    client.delete("/api/v1/destinations/VNA", headers=admin)
    client.put("/api/v1/destinations", json={"destinations": [{"address": "PACS@p:104"}]}, headers=admin)
    events = _admin_events(engine)
    assert [(e.action, e.target) for e in events] == [
        ("create destination", "VNA@vna.example:104"),
        ("replace destination", "VNA@vna.example:105"),
        ("delete destination", "VNA"),
        ("replace destinations", str(destinations_file(client.app.state.settings))),  # type: ignore[attr-defined]
    ]
    assert {e.outcome for e in events} == {REQUESTED} and len({e.actor for e in events}) == 1
    assert events[1].detail["before"]["address"] == "VNA@vna.example:104"
    assert [e["address"] for e in events[3].detail["after"]] == ["PACS@p:104"]


def test_concurrent_edits_of_one_destination_each_are_kept(settings: Settings, engine: Engine) -> None:
    """Read-modify-write under the edit lock: eight admins adding at once lose nobody's entry."""
    trail = AuditTrail(engine)
    threads = [
        threading.Thread(
            target=create_destination,
            args=(settings, trail, "apikey:1", DestinationEntry(address=f"D{n}@10.0.0.{n}:104")),
        )
        for n in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(e.ae_title for e in load_destinations(settings).destinations) == [f"D{n}" for n in range(8)]


# --- C-ECHO now, and with verify -----------------------------------------------------------------


def test_echo_says_whether_the_destination_answers(
    client: TestClient, keys: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    admin = _auth(keys["admin"])
    with StorageSCP("LISTENING", Spool(tmp_path / "pacs", min_free_bytes=0), _Sink()) as pacs:
        port = pacs.start("127.0.0.1", 0)
        silent = {"address": f"GONE@127.0.0.1:{free_port()}"}
        refused = client.post("/api/v1/destinations", params={"verify": True}, json=silent, headers=admin)
        assert refused.status_code == 422 and "no C-ECHO answer from GONE@127.0.0.1" in refused.json()["detail"]
        assert client.get("/api/v1/destinations/GONE", headers=admin).status_code == 404, "not created"
        listening = {"address": f"LISTENING@127.0.0.1:{port}"}
        assert (
            client.post("/api/v1/destinations", params={"verify": True}, json=listening, headers=admin).status_code
            == 201
        )
        assert client.post("/api/v1/destinations", json=silent, headers=admin).status_code == 201
        answered = client.post("/api/v1/destinations/LISTENING/echo", headers=admin).json()
        assert answered == {
            "ae_title": "LISTENING",
            "address": f"LISTENING@127.0.0.1:{port}",
            "tls": False,
            "answered": True,
            "detail": "answered the C-ECHO",
        }
        unanswered = client.post("/api/v1/destinations/GONE/echo", headers=admin)
        assert unanswered.status_code == 200 and unanswered.json()["answered"] is False
        assert client.post("/api/v1/destinations/NONE/echo", headers=admin).status_code == 404
        moved = {"address": f"GONE@127.0.0.1:{free_port()}"}
        assert (
            client.put("/api/v1/destinations/GONE", params={"verify": True}, json=moved, headers=admin).status_code
            == 422
        )


def test_echo_goes_over_tls_when_the_entry_says_so(
    client: TestClient, keys: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    admin = _auth(keys["admin"])
    ca = ThrowawayCA(tmp_path / "hospital", "Hospital CA")
    settings.dicom_tls_ca = ca.files.certificate
    issued = ca.issue("pacs", server=True)
    context = server_context(issued.certificate, issued.key, client_ca=ca.files.certificate)
    with StorageSCP("SECURE", Spool(tmp_path / "pacs", min_free_bytes=0), _Sink(), ssl_context=context) as pacs:
        port = pacs.start("127.0.0.1", 0)
        entry: dict[str, Any] = {"address": f"SECURE@127.0.0.1:{port}", "tls": True}
        assert (
            client.post("/api/v1/destinations", params={"verify": True}, json=entry, headers=admin).status_code == 201
        )
        over_tls = client.post("/api/v1/destinations/SECURE/echo", headers=admin).json()
        assert (over_tls["tls"], over_tls["answered"]) == (True, True)
        assert client.put("/api/v1/destinations/SECURE", json={**entry, "tls": False}, headers=admin).status_code == 200
        plain = client.post("/api/v1/destinations/SECURE/echo", headers=admin).json()
        assert (plain["tls"], plain["answered"]) == (False, False), "plain DICOM to a TLS-only PACS gets no answer"


class _AdminEventsLost(AuditTrail):
    """A trail that writes the API's events but not the services' own."""

    def record_or_raise(self, **event: Any) -> None:
        if event["channel"] == "admin":
            raise AuditUnavailable(503, "the database went away")
        super().record_or_raise(**event)


def test_a_change_whose_own_event_cannot_be_written_is_not_made(
    settings: Settings, engine: Engine, keys: dict[str, str]
) -> None:
    client = TestClient(create_app(settings, engine, audit_trail=_AdminEventsLost(engine)))
    admin = _auth(keys["admin"])
    refused = client.patch("/api/v1/rules", json={"min_slices": 9}, headers=admin)
    assert refused.status_code == 503 and "nothing was changed" in refused.json()["detail"]
    assert settings.rules_file is not None and not settings.rules_file.exists()
    created = client.post("/api/v1/destinations", json={"address": "VNA@vna.example:104"}, headers=admin)
    assert created.status_code == 503 and not destinations_file(settings).exists()
