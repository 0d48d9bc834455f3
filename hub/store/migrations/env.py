"""Alembic environment: the hub passes its own connection in ``config.attributes['connection']``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from hub.store.schema import metadata

connection: Connection | None = context.config.attributes.get("connection")
if connection is None:  # `alembic` command line use: url from the ini / -x url=
    from sqlalchemy import create_engine

    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise SystemExit("no database: give -x url=… or sqlalchemy.url in the ini")
    with create_engine(url).begin() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=conn.dialect.name == "sqlite")
        context.run_migrations()
else:
    context.configure(
        connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite"
    )
    with context.begin_transaction():
        context.run_migrations()
