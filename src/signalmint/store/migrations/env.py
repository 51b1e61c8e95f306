"""Alembic environment: runs on the connection signalmint hands it."""

from __future__ import annotations

from alembic import context

from signalmint.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only when alembic's own CLI is used
    raise SystemExit("run migrations with `signalmint migrate -c FILE`")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
