"""``insert_ignore`` tells a new row from a duplicate on both databases (the SCP's duplicate rule)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlmodel import Session

from server.core.db import insert_ignore, make_engine, upgrade
from server.db_models import Study

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _postgres_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite'}"
        return
    if not _postgres_up():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    name = f"lungcds_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_a_duplicate_is_not_reported_as_inserted(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    row = {"study_instance_uid": "1.2.3", "accession_number": "A1"}
    with Session(engine) as session:
        assert insert_ignore(session, Study, row) is True
        assert insert_ignore(session, Study, {**row, "accession_number": "A2"}) is False
        session.commit()
        study = session.get(Study, "1.2.3")
    assert study is not None and study.accession_number == "A1", "the first row is kept"
    engine.dispose()
