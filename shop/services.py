"""Shared services built once per app: the Adyen client, with every call recorded for the developer views."""

import copy

from flask import current_app, has_app_context
from sqlalchemy.exc import DBAPIError

from shop.adyen import AdyenClient
from shop.config import ConfigError
from shop.db import db, is_disconnect
from shop.models import ApiCall


def init_app(app):
    if not app.config.get("ADYEN_API_BASE_URL"):
        raise ConfigError("ADYEN_ENVIRONMENT=simulator needs the simulator plug-in (PLUGINS: shop.simulator).")
    app.extensions["adyen"] = AdyenClient(
        app.config["ADYEN_API_BASE_URL"],
        app.config["ADYEN_API_KEY"],
        connect_timeout=app.config["ADYEN_CONNECT_TIMEOUT"],
        read_timeout=app.config["ADYEN_READ_TIMEOUT"],
        recorder=lambda record: _record_call(app, record),
        before_send=end_read_transaction,
    )


def end_read_transaction():
    """Before a slow call (Adyen over HTTP), end the reading the request did so far.

    Its pooled connection then serves other requests while this one waits: with several threads per
    worker, a slow Adyen would otherwise hold every connection of the pool, and in simulator mode
    the simulator (served by the same process) would wait for a connection that its caller holds.
    Loaded objects reload on their next use. Writes happen in units of work (shop.db.transaction),
    never across a call to Adyen: one here is a bug, and it says so rather than lose or keep them.
    """
    if not has_app_context():
        return
    session = db.session
    if session.info.get("unit_of_work") or session.new or session.dirty or session.deleted:
        raise RuntimeError("a call to Adyen inside a database transaction")
    session.rollback()


def adyen():
    """The app's Adyen client."""
    return current_app.extensions["adyen"]


def _record_call(app, record):
    """Store the call in a transaction of its own, on a connection of its own, so it is kept whatever
    happens to the caller's work afterwards (a log of what was said to Adyen)."""
    with app.app_context():
        for attempt in range(2):  # once more on a new connection if the server dropped this one
            try:
                _insert_call(record)
                return
            except DBAPIError as error:
                if attempt or not is_disconnect(error):
                    raise


def _insert_call(record):
    with db.engine.begin() as connection:
        connection.execute(
            ApiCall.__table__.insert().values(
                order_id=record["context"].get("order_id"),
                checkout_key=record["context"].get("checkout_key"),
                endpoint=record["endpoint"],
                url=record["url"],
                idempotency_key=record["idempotency_key"],
                request_json=copy.deepcopy(record["request_json"]),
                status_code=record["status_code"],
                response_json=record["response_json"],
                error=record["error"],
                duration_ms=record["duration_ms"],
            )
        )
