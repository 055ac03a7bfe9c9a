"""Alembic migrations of the tuple-service's chunk index (``upgrade head`` at start-up)."""
