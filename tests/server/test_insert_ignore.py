"""``insert_ignore`` tells a new row from a duplicate on both databases (the SCP's duplicate rule)."""

from __future__ import annotations

from sqlmodel import Session

from server.core.db import insert_ignore, make_engine, upgrade
from server.db_models import Study


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
