"""Alembic environment of the results store: runs on the connection that
:func:`workbench.teaching.store.migrate` hands over in ``config.attributes["connection"]``
(no alembic.ini, no URL in a file)."""

from alembic import context

from workbench.teaching.store import METADATA, VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=METADATA,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
