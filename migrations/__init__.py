"""Alembic migrations of the verdict database (shipped as a package so installs find them)."""
