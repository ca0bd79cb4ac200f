"""Storing webhooks (shop/webhooks/inbox.py): deliveries at the same moment each stored once and
duplicates counted; a refused insert is an error and spoils nothing after it. On the test database
(SQLite, or PostgreSQL with TEST_DATABASE_URL)."""

import threading

import pytest
from sqlalchemy import func, select, text

from shop.db import db
from shop.models import Notification
from shop.webhooks import parsing, processing
from tests.webhook_helpers import envelope, item, make_order


def run_at_once(count, target):
    """`target(n)` in `count` threads released together; their results (or exceptions) by n."""
    barrier = threading.Barrier(count)
    results = {}

    def run(n):
        barrier.wait()
        try:
            results[n] = target(n)
        except Exception as error:  # noqa: BLE001 - the test looks at it
            results[n] = error

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_simultaneous_deliveries_are_each_stored_once(app):
    """Eight events, four of them delivered twice, all at once from twelve threads."""
    references = [make_order(app) for _ in range(8)]
    items = [item(app, reference, psp=f"SIMULTANEOUS{n:04d}") for n, reference in enumerate(references)]
    deliveries = items + items[:4]

    def deliver(n):
        with app.app_context():
            return processing.store(parsing.parse_item(deliveries[n]), envelope(deliveries[n]))

    results = run_at_once(len(deliveries), deliver)
    assert not [r for r in results.values() if isinstance(r, Exception)]
    assert sum(1 for r in results.values() if r.duplicate) == 4
    assert len({r.notification_id for r in results.values()}) == 8
    with app.app_context():
        rows = db.session.execute(select(Notification.psp_reference, Notification.duplicates)).all()
        assert sorted(rows) == [(f"SIMULTANEOUS{n:04d}", 1 if n < 4 else 0) for n in range(8)]
        assert db.session.execute(select(func.count()).select_from(Notification)).scalar() == 8


def test_a_refused_insert_is_an_error_and_the_next_one_works(app):
    reference = make_order(app)
    with app.app_context():
        db.session.execute(text("ALTER TABLE notifications RENAME TO notifications_away"))
        db.session.commit()
        try:
            with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises for a missing table
                processing.store(parsing.parse_item(item(app, reference)), envelope(item(app, reference)))
        finally:
            db.session.rollback()
            db.session.execute(text("ALTER TABLE notifications_away RENAME TO notifications"))
            db.session.commit()
        # The connection that failed was thrown away; the next delivery is stored.
        stored = processing.store(parsing.parse_item(item(app, reference)), envelope(item(app, reference)))
        assert not stored.duplicate
