"""Alembic migrations of the results store (run by :func:`workbench.teaching.store.open_store`)."""
