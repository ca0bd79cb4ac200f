"""The simulated Adyen's webhook sender: queued deliveries, signed, retried on Adyen's schedule.

How Adyen delivers (https://docs.adyen.com/development-resources/webhooks and …/troubleshoot):
JSON over HTTP POST with basic auth, HMAC-signed items, accepted on any 2xx within 10 seconds;
otherwise three quick retries, then a queue at 2 min, 5 min, 10 min, 15 min, 30 min, 1 h, 2 h,
4 h, 8 h (and every 8 h) for up to 30 days. Here the schedule is multiplied by
SIMULATOR_RETRY_SCALE (1/60 by default: minutes become seconds).

Retries are one ordered queue per endpoint, as at Adyen: while a webhook to an endpoint is failing,
the ones queued after it wait, and when it is accepted the rest follow ("If a retry is successful,
we continue with the next webhook in the queue"). `endpoints` says, for the console, which endpoint
is failing since when, with how many retries, and how many webhooks wait behind it.

Deliveries are claimed on the shop's job queue (shop/jobs.py: a lease, attempts as the claim's
token), so several workers never send the same delivery twice, and one whose worker died is sent
again when its lease ends. No transaction is open during the HTTP POST. The key, the signature and
the password are never logged or stored.
"""

import json
import logging
import time
from datetime import timedelta

import requests
from flask import current_app
from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import aliased

from shop import jobs
from shop.db import db, transaction
from shop.simulator import faults, notifications, payments
from shop.simulator.config import SEND_TIMEOUT_SECONDS
from shop.simulator.models import DeliveryStatus, SimWebhookDelivery, as_utc, run_update, utcnow

log = logging.getLogger(__name__)

# Seconds before each retry, after the 1st, 2nd, … failed attempt; the last repeats.
RETRY_DELAYS = (9, 9, 9, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800)
RETRY_PERIOD = timedelta(days=30)
BATCH_SIZE = 20
RESPONSE_EXCERPT = 1000
HISTORY_LIMIT = 50
USER_AGENT = "Adyen HttpClient 1.0 (shop simulator)"


def retry_delay(failed_attempts):
    """Seconds until the next try after `failed_attempts` failures, on Adyen's scaled schedule."""
    index = min(max(failed_attempts, 1), len(RETRY_DELAYS)) - 1
    return RETRY_DELAYS[index] * _scale()


QUEUE = jobs.Queue(
    name="simulator webhook deliveries",
    table=SimWebhookDelivery.__table__,
    pending=DeliveryStatus.PENDING,
    running=DeliveryStatus.DELIVERING,
    failed=DeliveryStatus.FAILED,
    due_column="due_at",
    lease_setting="SIMULATOR_DELIVERY_LEASE",
    max_attempts_setting=None,  # Adyen gives up after RETRY_PERIOD, whatever the count
    backoff=retry_delay,
    returning=("target_url", "payload", "event_code", "psp_reference", "queued_at", "history"),
)


def deliver_due():
    """Called by the app's background worker every tick, in an app context.

    Closes expired offers (OFFER_CLOSED), then sends the deliveries that are due. Returns how many
    deliveries it attempted.
    """
    payments.expire_overdue()
    if faults.burst_active():
        return 0  # an injected outage: the backlog waits for faults.release_burst()
    claims = QUEUE.claim(BATCH_SIZE, where=_not_behind_a_failing_one(), order_by=_queue_order())
    for claim in claims:
        deliver(claim)
    return len(claims)


def _queue_order():
    table = SimWebhookDelivery.__table__
    return (table.c.due_at, table.c.id)


def _not_behind_a_failing_one():
    """Adyen's retries are one ordered queue per endpoint: while a webhook to an endpoint is failing
    (tried, not yet accepted), the ones queued after it wait; once it is accepted, the rest follow."""
    table = SimWebhookDelivery.__table__
    failing = aliased(table)
    return ~exists().where(
        failing.c.target_url == table.c.target_url,
        failing.c.status.in_((DeliveryStatus.PENDING, DeliveryStatus.DELIVERING)),
        failing.c.last_error.is_not(None),  # its last attempt was not accepted
        failing.c.id < table.c.id,
    )


def deliver(claim):
    """POST one claimed delivery and record the attempt. True if the endpoint accepted it (2xx)."""
    if not QUEUE.holds(claim):
        log.info("webhook delivery %s was taken over by another worker; not sending", claim.id)
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
            timeout=SEND_TIMEOUT_SECONDS,
            # Adyen does not follow redirects: a 3xx is a failed delivery.
            allow_redirects=False,
        )
        status_code = response.status_code
        response_body = response.text[:RESPONSE_EXCERPT]
    except requests.Timeout:
        error = f"no answer within {SEND_TIMEOUT_SECONDS} s"
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


@transaction
def _record_attempt(claim, accepted, status_code, response_body, error, duration_ms):
    """The attempt's outcome, if this worker still holds the claim (else the one that took the row
    over records its own)."""
    now = utcnow()
    history = list(claim.history or [])[-(HISTORY_LIMIT - 1) :]
    history.append(
        {
            "attempt": claim.attempts,
            "at": now.isoformat(timespec="milliseconds"),
            "status_code": status_code,
            "error": error,
            "duration_ms": duration_ms,
        }
    )
    values = {
        "history": history,
        "last_status_code": status_code,
        "last_response_body": response_body,
        "last_attempt_at": now,
    }
    if accepted:
        QUEUE.finish(claim, DeliveryStatus.DELIVERED, delivered_at=now, last_error=None, **values)
    elif now - as_utc(claim.queued_at) >= RETRY_PERIOD * _scale():
        QUEUE.finish(claim, DeliveryStatus.FAILED, last_error=error, **values)
        log.warning("webhook delivery %s failed for the whole retry period; giving up", claim.id)
    else:
        QUEUE.retry(claim, error or f"HTTP {status_code}", **values)


def _scale():
    return float(current_app.config["SIMULATOR_RETRY_SCALE"])


def endpoints():
    """Each endpoint the simulator sends to, as Adyen's Customer Area shows it: failing (since when,
    how many retries of the webhook at the head of its queue) or not, and how many webhooks wait."""
    table = SimWebhookDelivery.__table__
    waiting = (DeliveryStatus.PENDING, DeliveryStatus.DELIVERING, DeliveryStatus.HELD)
    rows = db.session.execute(
        select(table.c.target_url, func.count())
        .where(table.c.status.in_(waiting))
        .group_by(table.c.target_url)
        .order_by(table.c.target_url)
    ).all()
    result = []
    for url, count in rows:
        head = db.session.execute(
            select(table.c.id, table.c.attempts, table.c.history, table.c.due_at)
            .where(table.c.target_url == url, table.c.status.in_(waiting[:2]), table.c.last_error.is_not(None))
            .order_by(table.c.id)
            .limit(1)
        ).first()
        since = (head.history or [{}])[0].get("at") if head else None
        result.append(
            {
                "url": url,
                "failing": head is not None,
                "failing_since": since,
                "head_id": head.id if head else None,
                "retries": head.attempts if head else 0,
                "next_try": as_utc(head.due_at) if head else None,
                "waiting": count - (1 if head else 0),
            }
        )
    return result


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


def queue_customer_area_test():
    """Queue, due now, the AUTHORISATION the Customer Area's "Test configuration" button sends
    (pspReference test_AUTHORISATION_1, merchantReference testMerchantRef1). Returns its id."""
    item = notifications.customer_area_test_item(current_app.config["ADYEN_MERCHANT_ACCOUNT"], utcnow())
    return _queue_now(item)


def queue_report_available():
    """Queue, due now, a REPORT_AVAILABLE for today's payments accounting report: its file name as
    pspReference, its Customer Area download URL as reason. Returns its id."""
    account = current_app.config["ADYEN_MERCHANT_ACCOUNT"]
    now = utcnow()
    file_name = f"payments_accounting_report_{now.astimezone(notifications.AMSTERDAM):%Y_%m_%d}.csv"
    url = f"https://ca-test.adyen.com/reports/download/MerchantAccount/{account}/{file_name}"
    return _queue_now(notifications.report_available_item(account, file_name, url, now))


def _queue_now(item):
    delivery = notifications.add_delivery(item, 0)
    db.session.commit()
    return delivery.id
