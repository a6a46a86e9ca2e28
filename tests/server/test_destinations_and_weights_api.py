"""Admins edit destinations (validated, optionally C-ECHOed) and install weights (checksum verified)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.engine import Engine

from dicom_node.scp import AssociationInfo, StorageSCP
from dicom_node.spool import Spool, StoredInstance
from server.api.main import create_app
from server.core.config import OUTPUT_KINDS, Settings
from server.core.db import session_scope
from server.core.security import create_api_key
from server.core.weights import AdminWeightStore
from server.routing.destinations import destinations_file, load_destinations
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
def admin(settings: Settings, engine: Engine) -> tuple[TestClient, dict[str, str]]:
    with session_scope(engine) as session:
        key = create_api_key(session, "admin").secret
    return TestClient(create_app(settings, engine)), {"Authorization": f"Bearer {key}"}


def test_destinations_start_from_the_settings_and_are_replaced_whole(
    settings: Settings, admin: tuple[TestClient, dict[str, str]]
) -> None:
    client, headers = admin
    settings.destinations = ["PACS@10.0.0.1:104"]
    listed = client.get("/api/v1/destinations", headers=headers).json()
    assert listed == {
        "destinations": [
            {
                "address": "PACS@10.0.0.1:104",
                "outputs": list(OUTPUT_KINDS),
                "tls": False,
                "calling_aet": None,
                "uncompressed": False,
            }
        ],
        "source": "settings",
        "error": None,
    }
    new = {"destinations": [{"address": "VNA@vna.example:11112", "outputs": ["sr", "pdf"]}]}
    assert client.put("/api/v1/destinations", json=new, headers=headers).json()["source"] == "file"
    assert [e.address for e in load_destinations(settings).destinations] == ["VNA@vna.example:11112"]
    listed = client.get("/api/v1/destinations", headers=headers).json()
    listed["destinations"][0]["tls"] = False
    assert client.put("/api/v1/destinations", json=listed, headers=headers).status_code == 200, "sent back as listed"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"destinations": [{"address": "no-at-sign"}]}, "AET@host:port"),
        ({"destinations": [{"address": "PACS@h:104", "outputs": ["xml"]}]}, "unknown outputs"),
        ({"destinations": [{"address": "PACS@h:104"}, {"address": "PACS@h:104"}]}, "listed twice"),
        ({"destinations": [{"address": "PACS@h:104", "tls": True}]}, "LUNGCDS_DICOM_TLS_CA"),
        ({"destinations": [{"address": "PACS@h:104", "colour": "red"}]}, "colour"),
    ],
)
def test_invalid_destination_lists_change_nothing(
    settings: Settings, admin: tuple[TestClient, dict[str, str]], body: dict[str, object], words: str
) -> None:
    client, headers = admin
    settings.destinations = ["PACS@10.0.0.1:104"]
    response = client.put("/api/v1/destinations", json=body, headers=headers)
    assert response.status_code == 422 and words in response.json()["detail"]
    assert [e.address for e in load_destinations(settings).destinations] == ["PACS@10.0.0.1:104"]


@pytest.mark.parametrize(
    "entry",
    [
        {"address": "PACS@host\n[x]:104"},
        {"address": "PACS\u0000@host:104"},
        {"address": "PACS@host:104", "calling_aet": "US\r"},
    ],
)
def test_control_characters_in_destinations_are_refused(
    settings: Settings, admin: tuple[TestClient, dict[str, str]], entry: dict[str, object]
) -> None:
    client, headers = admin
    client.put("/api/v1/destinations", json={"destinations": [{"address": "PACS@10.0.0.1:104"}]}, headers=headers)
    before = destinations_file(settings).read_bytes()
    response = client.put("/api/v1/destinations", json={"destinations": [entry]}, headers=headers)
    assert response.status_code == 422 and "control character" in response.json()["detail"]
    assert destinations_file(settings).read_bytes() == before


@pytest.mark.parametrize("broken", [b'{"destinations": [{"address": "VNA@vna', b"", b'{"destinations": 7}'])
def test_a_hand_broken_destinations_file_keeps_the_last_good_list(
    settings: Settings, admin: tuple[TestClient, dict[str, str]], broken: bytes
) -> None:
    client, headers = admin
    settings.destinations = ["PACS@10.0.0.1:104"]
    new = {"destinations": [{"address": "VNA@vna.example:11112", "outputs": ["sr"]}]}
    assert client.put("/api/v1/destinations", json=new, headers=headers).status_code == 200
    destinations_file(settings).write_bytes(broken)
    assert [e.address for e in load_destinations(settings).destinations] == ["VNA@vna.example:11112"]
    listed = client.get("/api/v1/destinations", headers=headers).json()
    assert listed["source"] == "last good copy" and "destinations.json is invalid" in listed["error"]
    assert [e["address"] for e in listed["destinations"]] == ["VNA@vna.example:11112"]
    ready = client.get("/api/v1/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    assert "destinations.json is invalid" in ready.json()["checks"]["destinations"]
    events = client.get("/api/v1/audit", params={"channel": "config"}, headers=headers).json()["items"]
    assert [(e["target"], e["outcome"]) for e in events] == [(str(destinations_file(settings)), "rejected")]
    assert "destinations.json is invalid" in events[0]["detail"]["error"], "audited once, with the reason"


def test_verify_echoes_every_destination(
    settings: Settings, admin: tuple[TestClient, dict[str, str]], tmp_path: Path
) -> None:
    client, headers = admin
    with StorageSCP("LISTENING", Spool(tmp_path / "pacs", min_free_bytes=0), _Sink()) as pacs:
        port = pacs.start("127.0.0.1", 0)
        body = {
            "destinations": [{"address": f"LISTENING@127.0.0.1:{port}"}, {"address": f"GONE@127.0.0.1:{free_port()}"}]
        }
        refused = client.put("/api/v1/destinations", params={"verify": True}, json=body, headers=headers)
        assert refused.status_code == 422 and "GONE@127.0.0.1" in refused.json()["detail"]
        body["destinations"] = body["destinations"][:1]  # type: ignore[index]
        assert (
            client.put("/api/v1/destinations", params={"verify": True}, json=body, headers=headers).status_code == 200
        )


def test_weights_install_only_with_the_right_checksum(
    settings: Settings, admin: tuple[TestClient, dict[str, str]]
) -> None:
    client, headers = admin
    payload = b"\x01" * 4096
    good = hashlib.sha256(payload).hexdigest()
    wrong = client.put(
        "/api/v1/models/corads/weights", content=payload, headers={**headers, "X-Content-SHA256": "0" * 64}
    )
    assert wrong.status_code == 422 and good in wrong.json()["detail"]
    assert (
        client.put(
            "/api/v1/models/nonsense/weights", content=payload, headers={**headers, "X-Content-SHA256": good}
        ).status_code
        == 404
    )
    ok = client.put(
        "/api/v1/models/corads/weights",
        params={"validation": "local validation report QA-2026-14"},
        content=payload,
        headers={**headers, "X-Content-SHA256": good},
    )
    assert ok.status_code == 200
    assert ok.json()["weights_sha256"] == good and ok.json()["validation"] == "local validation report QA-2026-14"
    listed = {m["name"]: m for m in client.get("/api/v1/models", headers=headers).json()}
    assert listed["corads"]["weights_sha256"] == good and listed["lobes"]["weights_sha256"] is None
    assert listed["lungmask_ltrclobes"]["weights_sha256"] is None  # installable alternatives are listed too
    assert not list(settings.weights_dir.glob(".upload-*")), "no upload left behind"


def test_weights_uploads_have_their_own_limit_and_leave_nothing_behind(settings: Settings, engine: Engine) -> None:
    settings.max_request_body_kb, settings.max_weights_upload_mb = 1, 1
    with session_scope(engine) as session:
        key = create_api_key(session, "admin").secret
    client = TestClient(create_app(settings, engine))
    payload = b"\x02" * (512 * 2**10)  # over the 1 KiB request body limit, within the 1 MiB upload limit
    headers = {"Authorization": f"Bearer {key}", "X-Content-SHA256": hashlib.sha256(payload).hexdigest()}
    assert client.put("/api/v1/models/corads/weights", content=payload, headers=headers).status_code == 200
    too_big = b"\x02" * (2**20 + 1)
    headers["X-Content-SHA256"] = hashlib.sha256(too_big).hexdigest()
    declared = client.put("/api/v1/models/corads/weights", content=too_big, headers=headers)
    assert declared.status_code == 413 and declared.headers["content-type"].startswith("application/problem+json")
    chunks = (too_big[i : i + 65536] for i in range(0, len(too_big), 65536))
    streamed = client.put("/api/v1/models/corads/weights", content=chunks, headers=headers)
    assert streamed.status_code == 413 and "LUNGCDS_MAX_WEIGHTS_UPLOAD_MB" in streamed.json()["detail"]
    assert not list(settings.weights_dir.glob(".upload-*")), "no upload left behind"
    listed = {m["name"]: m for m in client.get("/api/v1/models", headers=headers).json()}
    assert listed["corads"]["weights_sha256"] == hashlib.sha256(payload).hexdigest()


def _upload(client: TestClient, headers: dict[str, str], payload: bytes, validation: str) -> Response:
    sha = hashlib.sha256(payload).hexdigest()
    return client.put(
        "/api/v1/models/corads/weights",
        params={"validation": validation},
        content=payload,
        headers={**headers, "X-Content-SHA256": sha},
    )


@pytest.mark.parametrize("validation", ["ok\n[oops\x1b[2J", "QA-2026\x00", "report\x7f"])
def test_control_characters_in_a_validation_statement_are_refused(
    settings: Settings, admin: tuple[TestClient, dict[str, str]], validation: str
) -> None:
    client, headers = admin
    refused = _upload(client, headers, b"\x01" * 4096, validation)
    assert refused.status_code == 422 and "control character" in refused.json()["detail"]
    assert not (settings.weights_dir / "corads").exists(), "nothing stored"
    assert not list(settings.weights_dir.glob(".upload-*")), "no upload left behind"
    listed = {m["name"]: m for m in client.get("/api/v1/models", headers=headers).json()}
    assert listed["corads"]["weights_sha256"] is None


@pytest.mark.parametrize(
    "broken", [b'{"name": "corads", "sha256": "ab', b"", b'{"validation": 7}', b"(a control character)"]
)
def test_a_hand_broken_weights_manifest_keeps_the_last_good_installation(
    settings: Settings, admin: tuple[TestClient, dict[str, str]], broken: bytes
) -> None:
    client, headers = admin
    payload = b"\x01" * 4096
    assert _upload(client, headers, payload, "local validation report QA-2026-14").status_code == 200
    manifest = settings.weights_dir / "corads" / "manifest.json"
    if broken == b"(a control character)":  # the right manifest, with an escape sequence in its statement
        broken = manifest.read_bytes().replace(b'"local validation report QA-2026-14"', b'"ok\\u001b[2J"')
    manifest.write_bytes(broken)

    listed = {m["name"]: m for m in client.get("/api/v1/models", headers=headers).json()}
    corads = listed["corads"]
    assert corads["weights_sha256"] == hashlib.sha256(payload).hexdigest(), "the last good manifest is in force"
    assert corads["validation"] == "local validation report QA-2026-14"
    assert "manifest.json is invalid" in corads["manifest_error"]
    assert corads["manifest_error"].endswith("the last good copy is in force")
    assert listed["lobes"]["manifest_error"] is None
    assert AdminWeightStore(settings.weights_dir).verify("corads"), "the file it names is intact"
    ready = client.get("/api/v1/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    assert "manifest.json is invalid" in ready.json()["checks"]["weights"]
    events = client.get("/api/v1/audit", params={"channel": "config"}, headers=headers).json()["items"]
    assert [(e["target"], e["outcome"]) for e in events] == [(str(manifest), "rejected")]

    repaired = _upload(client, headers, bytes(4096), "QA-2026-15")
    assert repaired.status_code == 200 and repaired.json()["manifest_error"] is None
    assert client.get("/api/v1/health/ready").json()["status"] == "ready"
    weights_files = [p.name for p in (settings.weights_dir / "corads").iterdir() if len(p.stem) == 64]
    assert weights_files == [f"{hashlib.sha256(bytes(4096)).hexdigest()}.safetensors"], "the replaced file is gone"
