"""Alembic environment: migrates the URL handed in by ``tally.common.db.upgrade_database``.

The revision is kept in ``tuple_alembic_version`` (not Alembic's default table), so
the chunk index can share a database with another service's schema.  Run by hand with
``python -m tally.tuples migrate`` (which reads the service settings).
"""

from __future__ import annotations

from alembic import context

from tally.common.db import make_engine
from tally.tuples.store import VERSION_TABLE, metadata

config = context.config
url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("no database URL: run migrations through tally.common.db.upgrade_database")

engine = make_engine(url)
try:
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=VERSION_TABLE,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
finally:
    engine.dispose()
