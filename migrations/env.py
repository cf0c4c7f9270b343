"""Alembic environment: runs on a connection handed over by `vault.db.migrate`, or a URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from api.models import metadata  # every package's tables, so autogenerate sees them

config = context.config
target_metadata = metadata


def _run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # LOCAL: the migration's transaction only, never the pooled connection after it.
        connection.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
        connection.exec_driver_sql("SET LOCAL statement_timeout = '10min'")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        _run(conn)
