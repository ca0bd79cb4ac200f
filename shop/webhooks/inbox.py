"""The webhook inbox: a verified item written to `notifications` durably, and cheaply.

It is the one statement that runs while Adyen waits, and the shop's hottest, so it is tuned
(bench/README.md says what each step gained):

- It goes to the driver, past the ORM and SQLAlchemy's statement layer (about three quarters of
  its cost in Python). PostgreSQL and SQLite both speak this SQL; only the parameter markers differ.
- One statement, committed on its own: on PostgreSQL the connection is in autocommit for it, so the
  INSERT and its commit are one round trip. The commit is synchronous: the row is on disk before
  Adyen hears [accepted]. (PostgreSQL already flushes the commits of concurrent requests together.)

INSERT … ON CONFLICT DO NOTHING on the unique event_key (a SHA-256 of pspReference, eventCode,
success and originalReference: shop.webhooks.parsing.event_key) decides what is new, also against a
twin being stored at this very moment by another thread, worker or host: no exception, no
rolled-back transaction.

When the driver reports a lost connection (the database restarted, a proxy or firewall dropped it),
the insert is tried once more on a fresh one. Safe: if the first one was committed before the
connection broke, the second finds its twin and the delivery is counted as a duplicate.
"""

import logging
from datetime import datetime

from shop.db import db

log = logging.getLogger(__name__)

COLUMNS = (
    "event_key",
    "psp_reference",
    "original_reference",
    "event_code",
    "success",
    "merchant_reference",
    "merchant_account",
    "amount_value",
    "currency",
    "reason",
    "event_date",
    "raw_body",
    "duplicates",
    "status",
    "attempts",
    "processed_at",
    "note",
    "next_attempt_at",
    "received_at",
)
INSERT = {
    dialect: f"INSERT INTO notifications ({', '.join(COLUMNS)}) VALUES ({', '.join([marker] * len(COLUMNS))}) "
    "ON CONFLICT (event_key) DO NOTHING RETURNING id"
    for dialect, marker in (("postgresql", "%s"), ("sqlite", "?"))
}


class _Disconnected(Exception):
    """The driver lost its connection to the database during the insert."""


def insert(values):
    """Store one row (a dict of COLUMNS). Its id, or None when the same event is stored already.
    Raises when the database refused it."""
    engine = db.engine
    parameters = [values[column] for column in COLUMNS]
    if engine.dialect.name != "postgresql":
        # As SQLAlchemy stores DateTime in SQLite (UTC, as text), so that it reads them back alike.
        parameters = [p.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(p, datetime) else p for p in parameters]
    try:
        return _insert_once(engine, parameters, retry_if_lost=True)
    except _Disconnected as lost:
        log.warning("webhook insert: the database connection was lost (%s); trying once more", lost)
        engine.dispose()  # the pool's other connections are likely gone too: start afresh
        return _insert_once(engine, parameters, retry_if_lost=False)


def _insert_once(engine, parameters, retry_if_lost):
    postgresql = engine.dialect.name == "postgresql"
    connection = engine.raw_connection()
    driver = connection.driver_connection
    cursor = None
    try:
        if postgresql:
            driver.autocommit = True
        cursor = connection.cursor()
        cursor.execute(INSERT[engine.dialect.name], parameters)
        row = cursor.fetchone()
        cursor.close()
        connection.commit()  # SQLite's implicit transaction; nothing left to do in autocommit
        if postgresql:
            driver.autocommit = False
    except BaseException as exc:
        connection.invalidate()  # whatever state it is in, it does not go back to the pool
        dbapi = engine.dialect.loaded_dbapi
        if retry_if_lost and isinstance(exc, dbapi.Error) and engine.dialect.is_disconnect(exc, driver, cursor):
            raise _Disconnected(type(exc).__name__) from exc  # the name only: no SQL parameter in a log
        raise
    finally:
        connection.close()
    return row[0] if row else None
