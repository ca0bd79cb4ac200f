"""Shared services built once per app: the Adyen client, with every call recorded for the developer views."""

import copy

from flask import current_app, has_app_context

from shop.adyen import AdyenClient
from shop.db import db
from shop.models import ApiCall

# Request fields never stored as they are (the API key travels in a header and is never stored).
_MASKED = "***"


def init_app(app):
    app.extensions["adyen"] = AdyenClient(
        app.config["ADYEN_API_BASE_URL"],
        app.config["ADYEN_API_KEY"],
        connect_timeout=app.config["ADYEN_CONNECT_TIMEOUT"],
        read_timeout=app.config["ADYEN_READ_TIMEOUT"],
        recorder=lambda record: _record_call(app, record),
        before_send=end_clean_transaction,
    )


def end_clean_transaction():
    """End the session's transaction if it has nothing unsaved, before a slow call (Adyen over HTTP).

    Its pooled connection then serves other requests while this one waits: with several threads per
    worker, a slow Adyen would otherwise hold every connection of the pool, and in simulator mode
    the simulator (served by the same process) would wait for a connection that its caller holds.
    Loaded objects reload on their next use. A session with unsaved changes is left as it is.
    """
    if not has_app_context():
        return
    session = db.session
    if not (session.new or session.dirty or session.deleted):
        session.commit()


def adyen():
    """The app's Adyen client."""
    return current_app.extensions["adyen"]


def _record_call(app, record):
    """Store the call in its own transaction, so it is kept even if the caller's work rolls back."""
    with app.app_context():
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
