"""The Alembic migrations build exactly the chunk index the code uses (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from tally.common.db import make_engine
from tally.tuples.store import VERSION_TABLE, metadata, migrate


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_server").create_database()
        return url
    return f"sqlite:///{tmp_path / 'index.db'}"


def test_migrations_match_the_models(database_url: str) -> None:
    migrate(database_url)
    migrate(database_url)  # a second start-up changes nothing
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            assert compare_metadata(context, metadata) == []
            assert context.get_current_revision() == "0002"
        assert VERSION_TABLE in inspect(engine).get_table_names()
    finally:
        engine.dispose()
