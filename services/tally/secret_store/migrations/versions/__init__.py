"""Alembic revisions of the secret-store schema."""
