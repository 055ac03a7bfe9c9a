"""Alembic migrations of the secret-store metadata database (``upgrade head`` at start-up)."""
