"""Alembic revisions of the tuple-service's chunk index."""
