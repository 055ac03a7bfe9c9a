"""SQL helpers: engine set-up per backend, transactions, UTC datetimes, migrations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, Table, select, text

from tally.common.db import (
    UTCDateTime,
    make_engine,
    make_metadata,
    make_sessionmaker,
    normalize_url,
    session_scope,
)


def test_normalize_url_routes_postgres_to_psycopg() -> None:
    assert normalize_url("postgresql://u:p@h/db").startswith("postgresql+psycopg://u:p@h/db")
    assert normalize_url("postgres://u@h/db").startswith("postgresql+psycopg://")
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_sqlite_gets_wal_and_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/sub/dir/x.db")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


metadata = make_metadata()
events = Table(
    "events", metadata, Column("id", Integer, primary_key=True), Column("at", UTCDateTime())
)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/x.db"
    return str(request.getfixturevalue("postgres_server").create_schema())


def test_session_scope_commits_or_rolls_back(url: str) -> None:
    engine = make_engine(url)
    metadata.create_all(engine)
    sessions = make_sessionmaker(engine)
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    with session_scope(sessions) as session:
        session.execute(events.insert().values(id=1, at=moment))
    with pytest.raises(RuntimeError), session_scope(sessions) as session:
        session.execute(events.insert().values(id=2, at=moment))
        raise RuntimeError("roll back")
    with session_scope(sessions) as session:
        rows = session.execute(select(events.c.id, events.c.at)).all()
    assert [row.id for row in rows] == [1]
    assert rows[0].at == moment and rows[0].at.tzinfo == UTC
    with pytest.raises(Exception, match="timezone-aware"), session_scope(sessions) as session:
        session.execute(events.insert().values(id=3, at=datetime(2026, 1, 1)))
    engine.dispose()
