"""The one leased job queue: stored webhooks to apply, emails to send, and the work a plug-in
registers (the simulator's webhook deliveries). Each kind of work is a table; a `Queue` describes
how its rows are claimed, and the background loop (shop/worker.py) runs the queues' jobs.

A row is due when its status is the queue's `pending` and its due time has come, or when it is
`running` and its lease (the same due time) has ended: the worker that held it died. `claim` takes
up to `limit` due rows in one `UPDATE … RETURNING` (on PostgreSQL the rows are picked `FOR UPDATE SKIP
LOCKED`, so workers never wait for each other): status → running, attempts + 1, due → now + lease.
`attempts` is the claim's token: only the worker whose claim it is may finish the row (`finish`,
`retry`), so one that lost its lease never overwrites the one that took over. A failed attempt is
due again after `backoff(attempts)`; after `max_attempts` the row is `failed`, for a person to look
at. Leases, attempts and backoff come from the app's settings (shop/config.py), checked at start-up.
"""

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import and_, bindparam, or_, select, update

from shop.db import db, transaction
from shop.models import utcnow

log = logging.getLogger(__name__)


class LostClaim(RuntimeError):
    """This worker's claim on a row ended (its lease ran out) and another worker has the row now."""


def exponential(base_setting, cap_seconds=3600):
    """Seconds before the next try: the setting's value, doubled after each failed attempt, at most
    `cap_seconds`."""

    def delay(attempts):
        return min(float(current_app.config[base_setting]) * 2 ** max(attempts - 1, 0), cap_seconds)

    return delay


@dataclass(frozen=True)
class Queue:
    """How one table's rows are claimed and finished. Status names are the table's own words."""

    name: str
    table: object  # a SQLAlchemy Table
    pending: str
    running: str
    failed: str
    due_column: str
    lease_setting: str  # seconds a claim lasts
    max_attempts_setting: str | None  # None: no limit (the caller decides when to give up)
    backoff: Callable[[int], float]
    returning: tuple = ()  # columns `claim` returns besides id and attempts

    @property
    def _c(self):
        return self.table.c

    def _due(self, now):
        due = self._c[self.due_column]
        return or_(
            and_(self._c.status == self.pending, due <= now),
            and_(self._c.status == self.running, due <= now),  # its worker stopped: the lease ended
        )

    @transaction
    def claim(self, limit, where=None, order_by=None):
        """Claim up to `limit` due rows, oldest first, in one statement (a transaction of its own,
        unless called inside one). Rows that were
        already tried `max_attempts` times and whose last lease ended become `failed` instead."""
        config = current_app.config
        now = utcnow()
        condition = self._due(now) if where is None else and_(self._due(now), where)
        if self.max_attempts_setting is not None:
            max_attempts = config[self.max_attempts_setting]
            db.session.execute(
                update(self.table)
                .where(condition, self._c.attempts >= max_attempts)
                .values(status=self.failed, last_error="the last attempt did not finish (its worker stopped)")
            )
            condition = and_(condition, self._c.attempts < max_attempts)
        # A CTE, evaluated once: as a plain `IN (subquery)` PostgreSQL may run the subquery again for
        # each row it considers, and with SKIP LOCKED each run picks other rows, so a claim of one
        # row took every due row.
        picked = (
            select(self._c.id)
            .where(condition)
            .order_by(*(order_by or (self._c.id,)))
            .limit(limit)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite has one writer at a time anyway
            .cte("picked")
            .prefix_with("MATERIALIZED", dialect="postgresql")  # never folded back into a subquery
        )
        lease = timedelta(seconds=config[self.lease_setting])
        rows = db.session.execute(
            update(self.table)
            # The condition again: a row is claimed only if it is still due as it is locked.
            .where(self._c.id.in_(select(picked.c.id)), condition)
            .values(status=self.running, attempts=self._c.attempts + 1, **{self.due_column: now + lease})
            .returning(self._c.id, self._c.attempts, *(self._c[name] for name in self.returning))
        ).all()
        return sorted(rows, key=lambda row: row.id)

    def claim_one(self, row_id):
        """Claim one row by id if it is due (a replay from the console). The row, or None."""
        claimed = self.claim(1, where=self._c.id == row_id)
        return claimed[0] if claimed else None

    def _held(self, row):
        return and_(self._c.id == row.id, self._c.status == self.running, self._c.attempts == row.attempts)

    def holds(self, row):
        """Whether this worker's claim on `row` still stands (before work that must not be done twice,
        such as an HTTP POST). Ends the read."""
        held = db.session.execute(select(self._c.id).where(self._held(row))).first() is not None
        db.session.rollback()
        return held

    def finish(self, row, status, **values):
        """In the caller's transaction: the row's outcome, if this worker still holds the claim.
        Returns whether it did (False: its lease ended and another worker took it over)."""
        done = db.session.execute(update(self.table).where(self._held(row)).values(status=status, **values))
        return done.rowcount == 1

    def finish_many(self, rows, status, values):
        """`finish` for each row of `rows`, with its dict of `values` (the same columns for every row),
        in one statement. Returns whether this worker still held every claim."""
        statement = _finish_many(self, status, tuple(sorted(values[0])))
        parameters = [
            {**row_values, "b_id": row.id, "b_attempts": row.attempts}
            for row, row_values in zip(rows, values, strict=True)
        ]
        return db.session.execute(statement, parameters).rowcount == len(rows)

    @transaction
    def retry(self, row, error, **values):
        """A failed attempt: due again after the backoff, or `failed` after the last one. Returns the
        delay in seconds, or None when it was the last attempt."""
        setting = self.max_attempts_setting
        if setting is not None and row.attempts >= current_app.config[setting]:
            self.finish(row, self.failed, last_error=error, **values)
            return None
        delay = self.backoff(row.attempts)
        values[self.due_column] = utcnow() + timedelta(seconds=delay)
        self.finish(row, self.pending, last_error=error, **values)
        return delay

    def requeue(self, row_id, from_statuses):
        """In the caller's transaction: a finished row (one of `from_statuses`) due again now, from a
        clean count of attempts. Returns whether it was."""
        changed = db.session.execute(
            update(self.table)
            .where(self._c.id == row_id, self._c.status.in_(from_statuses))
            .values(status=self.pending, attempts=0, last_error=None, **{self.due_column: utcnow()})
        )
        return changed.rowcount == 1


@functools.cache
def _finish_many(queue, status, keys):
    c = queue.table.c
    return (
        update(queue.table)
        .where(c.id == bindparam("b_id"), c.status == queue.running, c.attempts == bindparam("b_attempts"))
        .values({**{key: bindparam(key) for key in keys}, "status": status})
    )


def describe_error(exc):
    """A short error text that never carries SQL parameters (a stored body holds a signature)."""
    original = getattr(exc, "orig", None)
    text = str(original) if original is not None else str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]
