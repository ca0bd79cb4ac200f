"""A bounded log of refused webhook requests, for the developer console's inbox.

A refused request stores no body, no header and no credential (nothing of it may be trusted or
kept): only when, why, the answer's status, the remote address and the body's size. The log keeps
the newest KEEP rows. Writing it never changes the answer: a failure here is logged and dropped.
"""

import logging

from sqlalchemy import delete, select

from shop.db import db
from shop.models import WebhookRejection

log = logging.getLogger(__name__)

KEEP = 200


def record(reason, status_code, remote_addr, body_size):
    """Log one refusal, in its own transaction, and drop the rows beyond the newest KEEP."""
    try:
        db.session.rollback()
        db.session.add(
            WebhookRejection(
                reason=reason[:64],
                status_code=status_code,
                remote_addr=(remote_addr or "")[:64] or None,
                body_size=body_size,
            )
        )
        db.session.flush()
        oldest_kept = (
            select(WebhookRejection.id).order_by(WebhookRejection.id.desc()).offset(KEEP - 1).limit(1).scalar_subquery()
        )
        db.session.execute(
            delete(WebhookRejection).where(WebhookRejection.id < oldest_kept),
            execution_options={"synchronize_session": False},
        )
        db.session.commit()
    except Exception:  # noqa: BLE001 - the log is for people; the answer to Adyen must not depend on it
        db.session.rollback()
        log.warning("could not record a webhook rejection (%s)", reason)
