"""The simulated Adyen's webhook sender: queued deliveries, signed, retried on Adyen's schedule.

How Adyen delivers (https://docs.adyen.com/development-resources/webhooks and …/troubleshoot):
JSON over HTTP POST with basic auth, HMAC-signed items, accepted on any 2xx within 10 seconds;
otherwise three quick retries, then a queue at 2 min, 5 min, 10 min, 15 min, 30 min, 1 h, 2 h,
4 h, 8 h (and every 8 h) for up to 30 days. Here the schedule is multiplied by
SIMULATOR_RETRY_SCALE (1/60 by default: minutes become seconds).

Each due row is claimed by one conditional UPDATE (status → delivering, with a lease and a claim
token), so several workers never send the same delivery twice; a row whose lease ran out (a crash
mid-send) is claimed again. No transaction is open during the HTTP POST. The key, the signature
and the password are never logged or stored.
"""

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import requests
from flask import current_app
from sqlalchemy import and_, or_, select, update

from shop.db import db
from shop.simulator import faults, notifications, payments
from shop.simulator.models import DeliveryStatus, SimWebhookDelivery, as_utc, run_update, utcnow

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10  # Adyen waits 10 s for the answer
# Seconds before each retry, after the 1st, 2nd, … failed attempt; the last repeats.
RETRY_DELAYS = (9, 9, 9, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800)
RETRY_PERIOD = timedelta(days=30)
BATCH_SIZE = 20
RESPONSE_EXCERPT = 1000
HISTORY_LIMIT = 50
USER_AGENT = "Adyen HttpClient 1.0 (shop simulator)"


@dataclass(frozen=True)
class Claim:
    """A delivery this worker holds until lease_until: only its token may record the attempt."""

    delivery_id: int
    token: str
    target_url: str
    payload: dict
    event_code: str
    psp_reference: str


def deliver_due():
    """Called by the app's background worker every tick, in an app context.

    Closes expired offers (OFFER_CLOSED), then sends the deliveries that are due. Returns how many
    deliveries it attempted.
    """
    payments.expire_overdue()
    if faults.burst_active():
        return 0  # an injected outage: the backlog waits for faults.release_burst()
    claims = claim_due()
    for claim in claims:
        deliver(claim)
    return len(claims)


def _due_condition(now):
    return or_(
        and_(SimWebhookDelivery.status == DeliveryStatus.PENDING, SimWebhookDelivery.due_at <= now),
        # A worker died (or hung) while sending: its lease has run out, so take the row over.
        and_(SimWebhookDelivery.status == DeliveryStatus.DELIVERING, SimWebhookDelivery.lease_until < now),
    )


def claim_due(limit=BATCH_SIZE):
    """Claim up to `limit` due deliveries for this worker; each claim is committed on its own."""
    now = utcnow()
    candidates = (
        db.session.execute(
            select(SimWebhookDelivery.id)
            .where(_due_condition(now))
            .order_by(SimWebhookDelivery.due_at, SimWebhookDelivery.id)
            .limit(limit)
        )
        .scalars()
        .all()
    )
    db.session.commit()
    lease = timedelta(seconds=current_app.config["SIMULATOR_DELIVERY_LEASE"])
    claims = []
    for delivery_id in candidates:
        token = uuid.uuid4().hex
        won = (
            run_update(
                update(SimWebhookDelivery)
                .where(SimWebhookDelivery.id == delivery_id, _due_condition(now))
                .values(status=DeliveryStatus.DELIVERING, lease_until=now + lease, claim_token=token)
            ).rowcount
            == 1
        )
        if won:
            row = db.session.execute(
                select(
                    SimWebhookDelivery.target_url,
                    SimWebhookDelivery.payload,
                    SimWebhookDelivery.event_code,
                    SimWebhookDelivery.psp_reference,
                ).where(SimWebhookDelivery.id == delivery_id)
            ).one()
            claims.append(Claim(delivery_id, token, row.target_url, row.payload, row.event_code, row.psp_reference))
        db.session.commit()
    return claims


def deliver(claim):
    """POST one claimed delivery and record the attempt. True if the endpoint accepted it (2xx)."""
    if not _still_held(claim):
        log.info("webhook delivery %s was taken over by another worker; not sending", claim.delivery_id)
        return False
    config = current_app.config
    body = json.dumps(notifications.signed(claim.payload, config["ADYEN_HMAC_KEY"]))
    status_code = error = None
    response_body = ""
    started = time.monotonic()
    try:
        response = requests.post(
            claim.target_url,
            data=body.encode("utf-8"),
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
            auth=(config["WEBHOOK_USERNAME"] or "", config["WEBHOOK_PASSWORD"] or ""),
            timeout=TIMEOUT_SECONDS,
            # Adyen does not follow redirects: a 3xx is a failed delivery.
            allow_redirects=False,
        )
        status_code = response.status_code
        response_body = response.text[:RESPONSE_EXCERPT]
    except requests.Timeout:
        error = f"no answer within {TIMEOUT_SECONDS} s"
    except requests.RequestException as exc:
        error = f"could not connect: {type(exc).__name__}"
    duration_ms = int((time.monotonic() - started) * 1000)
    accepted = status_code is not None and 200 <= status_code < 300
    _record_attempt(claim, accepted, status_code, response_body, error, duration_ms)
    log.info(
        "webhook %s for %s to %s -> %s in %d ms",
        claim.event_code,
        claim.psp_reference,
        claim.target_url,
        status_code or error,
        duration_ms,
    )
    return accepted


def _still_held(claim):
    held = db.session.execute(
        select(SimWebhookDelivery.id).where(
            SimWebhookDelivery.id == claim.delivery_id,
            SimWebhookDelivery.claim_token == claim.token,
            SimWebhookDelivery.status == DeliveryStatus.DELIVERING,
        )
    ).first()
    db.session.commit()
    return held is not None


def _record_attempt(claim, accepted, status_code, response_body, error, duration_ms):
    now = utcnow()
    row = db.session.execute(
        select(SimWebhookDelivery.attempts, SimWebhookDelivery.history, SimWebhookDelivery.queued_at).where(
            SimWebhookDelivery.id == claim.delivery_id, SimWebhookDelivery.claim_token == claim.token
        )
    ).first()
    if row is None:  # our lease ran out and another worker took the row: its record wins
        db.session.commit()
        return
    attempts = row.attempts + 1
    history = list(row.history or [])[-(HISTORY_LIMIT - 1) :]
    history.append(
        {
            "attempt": attempts,
            "at": now.isoformat(timespec="milliseconds"),
            "status_code": status_code,
            "error": error,
            "duration_ms": duration_ms,
        }
    )
    values = {
        "attempts": attempts,
        "history": history,
        "last_status_code": status_code,
        "last_response_body": response_body,
        "last_error": error,
        "last_attempt_at": now,
        "lease_until": None,
        "claim_token": None,
    }
    if accepted:
        values.update(status=DeliveryStatus.DELIVERED, delivered_at=now)
    elif now - as_utc(row.queued_at) >= RETRY_PERIOD * _scale():
        values.update(status=DeliveryStatus.FAILED)
        log.warning("webhook delivery %s failed for the whole retry period; giving up", claim.delivery_id)
    else:
        values.update(status=DeliveryStatus.PENDING, due_at=now + timedelta(seconds=retry_delay(attempts)))
    run_update(
        update(SimWebhookDelivery)
        .where(SimWebhookDelivery.id == claim.delivery_id, SimWebhookDelivery.claim_token == claim.token)
        .values(**values)
    )
    db.session.commit()


def _scale():
    return float(current_app.config["SIMULATOR_RETRY_SCALE"])


def retry_delay(failed_attempts):
    """Seconds until the next try after `failed_attempts` failures, on Adyen's scaled schedule."""
    index = min(max(failed_attempts, 1), len(RETRY_DELAYS)) - 1
    return RETRY_DELAYS[index] * _scale()


# Helpers for the developer console -----------------------------------------------------------


def enqueue_duplicate(delivery_id):
    """Queue a second delivery of the same event, due now, as Adyen sometimes does. Returns its id."""
    original = db.session.get(SimWebhookDelivery, delivery_id)
    if original is None:
        raise LookupError(f"no simulator webhook delivery {delivery_id}")
    now = utcnow()
    duplicate = original.duplicate(status=DeliveryStatus.PENDING, due_at=now, created_at=now, queued_at=now)
    db.session.add(duplicate)
    db.session.commit()
    return duplicate.id


def resend(delivery_id):
    """Send a delivered or failed delivery again, now, keeping its history. False if it is queued or being sent."""
    now = utcnow()
    changed = (
        run_update(
            update(SimWebhookDelivery)
            .where(
                SimWebhookDelivery.id == delivery_id,
                SimWebhookDelivery.status.in_((DeliveryStatus.DELIVERED, DeliveryStatus.FAILED)),
            )
            .values(status=DeliveryStatus.PENDING, due_at=now, queued_at=now, delivered_at=None)
        ).rowcount
        == 1
    )
    db.session.commit()
    return changed
