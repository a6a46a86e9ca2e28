"""Alembic environment: targets ``SQLModel.metadata`` of :mod:`server.db_models`."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import server.db_models  # noqa: F401  (registers the tables on SQLModel.metadata)
from server.core.db import make_engine

target_metadata = SQLModel.metadata


def run_migrations() -> None:
    """Run migrations online against the configured URL."""
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
