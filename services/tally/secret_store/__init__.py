"""The secret-store: one party's shares of every dataset (DESIGN §2, §5).

Datasets are tables of secret-shared columns: metadata in SQL (SQLAlchemy, Alembic),
shares as blobs (a local directory or S3). Data providers upload and read through the
REST API in ``tally.secret_store.api``; the party's execution service reads job inputs
and writes results through the intra-party routes. Start it with
``python -m tally.secret_store serve``; ``create_app(settings)`` builds the ASGI app.
"""

from tally.secret_store.app import create_app
from tally.secret_store.settings import SecretStoreSettings

__all__ = ["SecretStoreSettings", "create_app"]
