"""Database engine, sessions and migrations.

Tables come from Alembic (``server/alembic``), applied by :func:`upgrade` as a start-up step
of ``lungcds serve`` and by ``lungcds db upgrade`` (house rule 13).  SQLite, the embedded
default, is opened in WAL mode with a busy timeout, because the SCP threads, the API and the
in-process worker write to it concurrently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, SQLModel, create_engine

__all__ = ["insert_ignore", "make_engine", "session_scope", "upgrade"]

logger = logging.getLogger(__name__)
_ALEMBIC_DIR = Path(__file__).resolve().parents[1] / "alembic"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; creates the SQLite file's folder when needed."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session committed on success and rolled back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(url: str) -> Config:
    """Alembic configuration for ``url`` with the package's migration scripts."""
    config = Config()
    config.set_main_option("script_location", str(_ALEMBIC_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply Alembic migrations up to ``revision`` (idempotent)."""
    make_engine(url).dispose()
    command.upgrade(alembic_config(url), revision)
    logger.info("database schema upgraded", extra={"revision": revision})


def downgrade(url: str, revision: str) -> None:
    """Revert Alembic migrations down to ``revision`` (``base`` empties the schema)."""
    command.downgrade(alembic_config(url), revision)
    logger.info("database schema downgraded", extra={"revision": revision})


def insert_ignore(session: Session, model: type[SQLModel], values: dict[str, Any]) -> bool:
    """INSERT a row unless its primary/unique key exists; True when a row was inserted (checked on PostgreSQL
    and SQLite by tests).

    Concurrent SCP threads may index the first instance of the same study at once; ON
    CONFLICT DO NOTHING makes that race harmless on both SQLite and PostgreSQL.
    """
    dialect = session.get_bind().dialect.name
    table = model.__table__  # type: ignore[attr-defined]
    stmt: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        stmt = postgresql.insert(table).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing()
    else:
        raise RuntimeError(f"unsupported database dialect {dialect}")
    # RETURNING, not rowcount: psycopg reports rowcount -1 for INSERT ... ON CONFLICT DO NOTHING
    # through SQLAlchemy 2.1, which would make every duplicate look inserted.
    result = session.execute(stmt.returning(*table.primary_key.columns))
    return result.first() is not None
