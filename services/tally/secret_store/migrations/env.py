"""Alembic environment: migrates the URL handed in by ``tally.common.db.upgrade_database``.

Run by hand with ``python -m tally.secret_store migrate`` (which reads the service
settings) rather than the ``alembic`` command line.
"""

from __future__ import annotations

from alembic import context

from tally.common.db import make_engine
from tally.secret_store.models import Base

config = context.config
url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("no database URL: run migrations through tally.common.db.upgrade_database")

engine = make_engine(url)
try:
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
finally:
    engine.dispose()
