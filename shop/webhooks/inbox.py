"""The webhook inbox: a verified item written to `notifications` durably, and cheaply.

It is the one statement that runs while Adyen waits, and the shop's hottest, so it is tuned
(bench/README.md says what each step gained):

- It goes to the driver, past the ORM and SQLAlchemy's statement layer (about three quarters of
  its cost in Python). PostgreSQL and SQLite both speak this SQL; only the parameter markers differ.
- One statement, committed on its own: on PostgreSQL the connection is in autocommit for it, so the
  INSERT and its commit are one round trip. The commit is synchronous: the row is on disk before
  Adyen hears [accepted]. (PostgreSQL already flushes the commits of concurrent requests together.)

INSERT … ON CONFLICT DO NOTHING on the unique constraint (pspReference, eventCode, success,
originalReference) decides what is new, also against a twin being stored at this very moment by
another thread, worker or host: no exception, no rolled-back transaction.
"""

from datetime import datetime

from shop.db import db

COLUMNS = (
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
KEY = ("psp_reference", "event_code", "success", "original_reference")  # uq_notification_event
INSERT = {
    dialect: f"INSERT INTO notifications ({', '.join(COLUMNS)}) VALUES ({', '.join([marker] * len(COLUMNS))}) "
    f"ON CONFLICT ({', '.join(KEY)}) DO NOTHING RETURNING id"
    for dialect, marker in (("postgresql", "%s"), ("sqlite", "?"))
}


def insert(values):
    """Store one row (a dict of COLUMNS). Its id, or None when the same event is stored already.
    Raises when the database refused it."""
    engine = db.engine
    postgresql = engine.dialect.name == "postgresql"
    parameters = [values[column] for column in COLUMNS]
    if not postgresql:
        # As SQLAlchemy stores DateTime in SQLite (UTC, as text), so that it reads them back alike.
        parameters = [p.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(p, datetime) else p for p in parameters]
    connection = engine.raw_connection()
    driver = connection.driver_connection
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
    except BaseException:
        connection.invalidate()  # whatever state it is in, it does not go back to the pool
        raise
    finally:
        connection.close()
    return row[0] if row else None
