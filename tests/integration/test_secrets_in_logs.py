"""A key sent in a URL is never stored, by a real ``lungcds serve`` (issue 14, item 7).

The unit tests check the audit trail and Python logging inside one process; this one reads what a
running server leaves on disk: its log (uvicorn's included) and its database, after requests
that put a valid admin key, a made-up token and a password in query strings and the path.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.peers import start_lungcds

pytestmark = pytest.mark.integration


def test_keys_in_urls_reach_neither_the_log_nor_the_database(tmp_path: Path) -> None:
    server = start_lungcds(tmp_path / "lungcds", worker=False, extra_env={"LUNGCDS_LOG_LEVEL": "DEBUG"})
    secrets = (server.api_key, "made-up-token-6f1c9e", "hunter2-password")
    try:
        base = f"http://127.0.0.1:{server.api_port}/api/v1"
        with httpx.Client(base_url=base, timeout=30) as client:
            refused = client.get("/series", params={"api_key": server.api_key})
            assert refused.status_code == 401, "a key in the URL is no credential"
            client.get("/series", params={"token": secrets[1]}, headers={"X-API-Key": server.api_key})
            client.get("/series", params={"password": secrets[2]}, headers={"X-API-Key": server.api_key})
            client.get(f"/series/{server.api_key}", headers={"X-API-Key": server.api_key})
        with server.api as client:
            audit = client.get("/audit", params={"limit": "100"}).json()["items"]
        assert any("REDACTED" in str(event.get("target")) for event in audit), "the requests were audited"
    finally:
        server.stop()
    logged = server.log.read_text(errors="replace")
    assert "server process" in logged, "the log captured the server (uvicorn's own lines included)"
    engine = create_engine(f"sqlite:///{server.data_dir / 'lungcds.db'}")
    with engine.connect() as conn:
        stored = " ".join(
            str(row)
            for table in ("audit_event", "job_event")
            for row in conn.execute(text(f"SELECT * FROM {table}"))  # noqa: S608 - fixed table names
        )
    engine.dispose()
    for secret in secrets:
        assert secret not in logged, "a secret in the server's log"
        assert secret not in stored, "a secret in the database"
