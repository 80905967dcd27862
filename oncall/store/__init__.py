"""The one data-access layer of the agent: every SQL statement lives in this package.

``database.Store`` owns the SQLAlchemy engine (SQLite by default, PostgreSQL with ``DATABASE_URL``);
``schema`` declares the tables, which Alembic migrations (``migrations/``) create and evolve; one
module per table (or pair of tables that are only ever written together) holds its statements.
Callers pass the ``Connection`` of a ``Store.write()``/``Store.read()`` block, so several
statements from different modules commit in one transaction.
"""
