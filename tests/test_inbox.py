"""Storing webhooks (shop/webhooks/inbox.py): deliveries at the same moment each stored once and
duplicates counted; a refused insert is an error and spoils nothing after it; a lost connection is
replaced once. On the test database (SQLite, or PostgreSQL with TEST_DATABASE_URL)."""

import threading

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.pool import NullPool

from shop.db import db
from shop.models import Notification
from shop.webhooks import parsing, processing
from tests.databases import backend
from tests.webhook_helpers import envelope, item, make_order, order_status, post


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


def test_the_key_tells_apart_what_joined_text_would_not(app):
    """event_key encodes the four fields so that no value passes for a separator, and a number
    never passes for the string of its digits (an authenticated item may carry either)."""
    reference = make_order(app)
    twins = [
        item(app, reference, psp="A:B", event_code="C"),
        item(app, reference, psp="A", event_code="B:C"),
        item(app, reference, psp="7914073381342284"),
        item(app, reference, psp=7914073381342284),
    ]
    assert len({parsing.event_key(twin) for twin in twins}) == 4
    with app.app_context():
        stored = [processing.store(parsing.parse_item(twin), envelope(twin)) for twin in twins]
        assert [s.duplicate for s in stored] == [False] * 4
        # The same event again: an absent, null or empty originalReference are one (as in the signature).
        again = dict(twins[0], originalReference=None)
        assert processing.store(parsing.parse_item(again), envelope(again)).duplicate


@pytest.mark.skipif(backend() != "postgresql", reason="a SQLite file has no connection to lose")
def test_a_connection_the_database_dropped_is_replaced_and_the_webhook_stored(live_server_factory, caplog):
    """The database restarted (or a proxy dropped the pool's connections): the insert is tried once
    more on a fresh connection, and Adyen hears [accepted], not a 500. (No background worker here,
    so that nothing but the receiver touches the pool between the two deliveries.)"""
    server = live_server_factory(BACKGROUND_WORKER=False)
    app = server.app
    first, second = make_order(app), make_order(app)
    assert post(server, envelope(item(app, first))).text == "[accepted]"
    admin = create_engine(app.config["SQLALCHEMY_DATABASE_URI"], poolclass=NullPool)
    with admin.connect() as connection:
        dropped = connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar()
    admin.dispose()
    assert dropped >= 1
    response = post(server, envelope(item(app, second)))
    assert (response.status_code, response.text) == (200, "[accepted]")
    assert "webhook insert: the database connection was lost" in caplog.text
    with app.app_context():
        assert processing.process_due() == 2
    assert (order_status(app, first), order_status(app, second)) == ("paid", "paid")
