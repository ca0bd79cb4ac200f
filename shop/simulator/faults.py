"""Faults injected into the simulated Adyen, so that each way a payment can go wrong can be shown
(from the developer console, from /_sim/faults, from tests) and the shop's answer checked.

A fault is a row in sim_faults: where (`endpoint`), what (`kind`), how many more calls or webhooks
it affects (`remaining`; None: every one until cleared) and its settings (`params`). Rows, not
process memory, so every worker process sees the same faults.

Checkout API endpoints "/payments", "/payments/details", "/paymentMethods" and the modifications
("/payments/{paymentPspReference}/refunds", …/reversals, …/cancels):
  timeout             Adyen receives the request and does the work (a payment is created, the answer
                      stored for its Idempotency-Key), but the answer comes after the shop's read
                      timeout (params: seconds; default ADYEN_READ_TIMEOUT + 1). A retry with the same
                      Idempotency-Key then gets the stored first answer: the realistic case.
  http_500            answers 500 "Internal error" (errorCode 903) and does nothing
  http_422            answers a 422 validation error (params: error_code, message) and does nothing
  http_401            answers 401 Unauthorized, as with a wrong API key, and does nothing
  refuse              closes the connection without answering and does nothing
  slow                waits (params: delay_ms, default 1000), then answers normally
  http_704_on_repeat  /payments, /payments/details: a repeat with the same Idempotency-Key gets 704
                      "request already processed or in progress" with `transient-error: true` (HTTP
                      422, or 409 with SIMULATOR_704_STATUS), as while the first is still running at
                      Adyen, instead of the stored answer. (A repeated /payments/details WITHOUT a
                      key, or with another one, gets 704 anyway: no fault needed.)
Webhooks, endpoint "webhooks" (applied when the simulator queues a webhook):
  webhook_delay        each webhook goes out `seconds` (default 10) later than it would have
  webhook_duplicate    each webhook is delivered twice
  webhook_out_of_order the next `count` webhooks (at least 2) are held back, then sent newest first
  webhook_burst        the shop "is down": nothing is delivered until release_burst() (or clear()),
                       then the whole backlog arrives at once
  late_authorisation   the next offer to close is authorised anyway: its OFFER_CLOSED is followed,
                       `seconds` (default 5) later, by AUTHORISATION true ("If an offer expires, it may
                       still be authorised", Adyen's help centre: What are offers?)
Modifications, endpoints "/payments/{paymentPspReference}/refunds" and …/reversals:
  refund_refused       the request is answered `received` as usual, then its REFUND (CANCEL_OR_REFUND)
                       webhook says success false with `reason` (default: Webhooks-v1's example)
  refund_failed        REFUND success true, then `seconds` (default 5) later REFUND_FAILED (success
                       true, reason "Refund Failed", as Webhooks-v1's example): the scheme rejected it

Use from tests and the console (in an app context):
    faults.inject("/payments", "timeout", count=2)
    faults.inject("webhooks", "webhook_delay", count=None, seconds=5)
    faults.active()      # [{"id", "endpoint", "kind", "remaining", "fired", "params", "description", …}]
    faults.clear()       # all (or clear(fault_id)); held webhooks are released, none is lost
    faults.release_burst()
"""

import logging
from datetime import timedelta
from typing import NamedTuple

from flask import current_app
from sqlalchemy import delete, func, or_, select, update

from shop.db import db
from shop.simulator.models import DeliveryStatus, SimFault, SimWebhookDelivery, as_utc, run_update, utcnow

log = logging.getLogger(__name__)

REFUNDS = "/payments/{paymentPspReference}/refunds"
REVERSALS = "/payments/{paymentPspReference}/reversals"
CANCELS = "/payments/{paymentPspReference}/cancels"
MODIFICATION_ENDPOINTS = (REFUNDS, REVERSALS, CANCELS)
API_ENDPOINTS = ("/payments", "/payments/details", "/paymentMethods") + MODIFICATION_ENDPOINTS
WEBHOOKS = "webhooks"
# The reason of Webhooks-v1's own example of a REFUND with success false.
REFUSED_REASON = "Transaction hasn't been captured, refund not possible"
ENDPOINTS = API_ENDPOINTS + (WEBHOOKS,)

# kind -> (endpoints it applies to, what it does, its settings with their defaults)
KINDS = {
    "timeout": (
        API_ENDPOINTS,
        "Adyen does the work but answers after the shop's read timeout",
        {"seconds": None},
    ),
    "http_500": (API_ENDPOINTS, "Adyen answers 500 Internal error and does nothing", {}),
    "http_422": (
        API_ENDPOINTS,
        "Adyen answers 422 (validation) and does nothing",
        {"error_code": "130", "message": "Reference Missing (injected fault)"},
    ),
    "http_401": (API_ENDPOINTS, "Adyen answers 401 Unauthorized and does nothing", {}),
    "refuse": (API_ENDPOINTS, "the connection is closed without an answer; nothing is done", {}),
    "slow": (API_ENDPOINTS, "Adyen waits, then answers normally", {"delay_ms": 1000}),
    "http_704_on_repeat": (
        ("/payments", "/payments/details"),
        "a repeat with the same Idempotency-Key gets 704 'in progress', as while the first is still running",
        {},
    ),
    "webhook_delay": ((WEBHOOKS,), "webhooks go out later than they would have", {"seconds": 10}),
    "webhook_duplicate": ((WEBHOOKS,), "each webhook is delivered twice", {}),
    "webhook_out_of_order": (
        (WEBHOOKS,),
        "a group of webhooks is held back, then sent newest first",
        {},
    ),
    "webhook_burst": (
        (WEBHOOKS,),
        "the shop is down: webhooks pile up until released, then arrive at once",
        {},
    ),
    "late_authorisation": (
        (WEBHOOKS,),
        "an offer that closes (OFFER_CLOSED) is authorised anyway: AUTHORISATION true follows it",
        {"seconds": 5},
    ),
    "refund_refused": (
        (REFUNDS, REVERSALS),
        "the refund is received, then refused: REFUND (or CANCEL_OR_REFUND) success false with a reason",
        {"reason": REFUSED_REASON},
    ),
    "refund_failed": (
        (REFUNDS, REVERSALS),
        "the refund succeeds (REFUND success true), then the scheme rejects it: REFUND_FAILED follows",
        {"seconds": 5},
    ),
}
# Kinds that act on every matching call as it arrives (704 acts only on a repeated request).
API_KINDS = tuple(kind for kind, (endpoints, _, _) in KINDS.items() if endpoints == API_ENDPOINTS)
REFUND_KINDS = ("refund_refused", "refund_failed")
NUMERIC_PARAMS = ("seconds", "delay_ms")
TEXT_PARAMS = ("reason",)
MAX_TEXT_PARAM = 200
# Seconds between the webhooks of a reordered group, so they arrive (and are stored) in that order.
OUT_OF_ORDER_SPACING = 0.2


class Fault(NamedTuple):
    """A fault as it is after its latest use."""

    id: int
    endpoint: str
    kind: str
    remaining: int | None
    fired: int
    params: dict
    created_at: object

    def param(self, name):
        value = (self.params or {}).get(name)
        return KINDS[self.kind][2].get(name) if value is None else value

    def as_dict(self):
        return {
            "id": self.id,
            "endpoint": self.endpoint,
            "kind": self.kind,
            "remaining": self.remaining,
            "fired": self.fired,
            "params": dict(self.params or {}),
            "created_at": self.created_at,
            "description": describe(self.endpoint, self.kind, self.remaining, self.params),
        }


def choices():
    """Every (endpoint, kind, description, default params) that inject() accepts, for forms."""
    return [
        (endpoint, kind, description, dict(defaults))
        for kind, (endpoints, description, defaults) in KINDS.items()
        for endpoint in endpoints
    ]


def describe(endpoint, kind, remaining=None, params=None):
    """One line for people: what the fault does, where, and for how long."""
    _, text, _ = KINDS[kind]
    settings = ", ".join(f"{name}={value}" for name, value in sorted((params or {}).items()) if value is not None)
    if kind == "webhook_burst":
        span = "until released"
    elif kind == "webhook_out_of_order":
        span = f"{remaining} more webhook(s) to hold" if remaining else "done"
    elif remaining is None:
        span = "every time, until cleared"
    else:
        span = f"{remaining} more time(s)"
    return f"{endpoint}: {text}{f' ({settings})' if settings else ''}; {span}"


# For tests and the console --------------------------------------------------------------------


def inject(endpoint, kind, count=1, **params):
    """Add a fault. `count`: how many calls (or webhooks) it affects; None: all until cleared.

    For webhook_out_of_order `count` is the size of the group to reverse (at least 2); for
    webhook_burst it is ignored (a burst lasts until release_burst()). Commits; returns the fault
    as a dict (see active()). Raises ValueError for an unknown endpoint, kind or setting.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(KINDS)}")
    endpoints, _, defaults = KINDS[kind]
    if endpoint not in endpoints:
        raise ValueError(f"{kind} applies to {', '.join(endpoints)}, not {endpoint!r}")
    unknown = set(params) - set(defaults)
    if unknown:
        raise ValueError(f"{kind} has no setting {', '.join(sorted(unknown))}")
    for name in NUMERIC_PARAMS:
        value = params.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ValueError(f"{name} must be a number of at least 0")
    for name in TEXT_PARAMS:
        value = params.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT_PARAM):
            raise ValueError(f"{name} must be a text of 1 to {MAX_TEXT_PARAM} characters")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError("count must be a whole number of at least 1, or None for every time")
    if kind == "webhook_out_of_order":
        count = max(count or 2, 2)
    elif kind == "webhook_burst":
        count = 1
    fault = SimFault(endpoint=endpoint, kind=kind, remaining=count, fired=0, params=params, created_at=utcnow())
    db.session.add(fault)
    db.session.commit()
    log.info("simulator fault injected: %s", describe(endpoint, kind, count, params))
    return _load(fault.id).as_dict()


def active():
    """The faults still in force, oldest first, as dicts."""
    rows = db.session.execute(_columns().where(_in_force()).order_by(SimFault.id)).all()
    db.session.commit()
    return [Fault(*row).as_dict() for row in rows]


def clear(fault_id=None):
    """Remove one fault (or all). Webhooks they held back are released, so none is lost. Commits.

    Returns how many faults were removed.
    """
    statement = delete(SimFault)
    if fault_id is not None:
        statement = statement.where(SimFault.id == fault_id)
    removed = run_update(statement).rowcount
    if not _exists("webhook_out_of_order"):
        _release_held(utcnow())
    db.session.commit()
    if removed:
        log.info("simulator faults cleared: %d", removed)
    _wake()
    return removed


def release_burst():
    """End a webhook_burst: the shop is "up" again and the backlog is delivered at once. Commits.

    Returns how many webhooks are waiting to go out.
    """
    run_update(delete(SimFault).where(SimFault.kind == "webhook_burst"))
    db.session.commit()
    waiting = db.session.execute(
        select(func.count()).select_from(SimWebhookDelivery).where(SimWebhookDelivery.status == DeliveryStatus.PENDING)
    ).scalar()
    db.session.commit()
    log.info("simulator webhook burst released: %d webhook(s) waiting", waiting)
    _wake()
    return waiting


# For the simulator itself -----------------------------------------------------------------------


def take(endpoint, kinds):
    """Use one unit of the oldest fault in force on `endpoint` of one of `kinds`.

    One conditional UPDATE decides, so two requests never use the same last unit. Returns the
    Fault after the use, or None. Does not commit: the caller's transaction does.
    """
    candidates = (
        db.session.execute(
            select(SimFault.id)
            .where(SimFault.endpoint == endpoint, SimFault.kind.in_(kinds), _in_force())
            .order_by(SimFault.id)
        )
        .scalars()
        .all()
    )
    for fault_id in candidates:
        won = run_update(
            update(SimFault)
            .where(SimFault.id == fault_id, _in_force())
            # NULL - 1 is NULL: a fault without a count stays in force.
            .values(remaining=SimFault.remaining - 1, fired=SimFault.fired + 1)
        ).rowcount
        if won == 1:
            fault = _load(fault_id)
            log.info("simulator fault acts: %s (%s)", fault.kind, fault.endpoint)
            return fault
    return None


def take_api_fault(endpoint):
    """The fault (if any) for this Checkout API call as it arrives; its use is committed."""
    fault = take(endpoint, API_KINDS)
    db.session.commit()
    return fault


def take_repeat_704(endpoint):
    """True if a repeated request to `endpoint` is to be answered 704; its use is committed."""
    fault = take(endpoint, ("http_704_on_repeat",))
    db.session.commit()
    return fault is not None


def timeout_seconds(fault):
    """How long a `timeout` fault holds the answer: longer than the shop waits for it."""
    seconds = fault.param("seconds")
    if seconds is None:
        seconds = float(current_app.config.get("ADYEN_READ_TIMEOUT", 15)) + 1.0
    return float(seconds)


def burst_active():
    """True while a webhook_burst holds every delivery back."""
    active_burst = _exists("webhook_burst")
    db.session.commit()
    return active_burst


def on_webhook_queued(delivery):
    """Apply the webhook faults to a delivery just added to the session (the caller commits)."""
    if not _exists_any(("webhook_delay", "webhook_duplicate", "webhook_out_of_order")):
        return
    db.session.flush()  # the delivery's id, for a duplicate's duplicate_of
    delay = take(WEBHOOKS, ("webhook_delay",))
    if delay is not None:
        delivery.due_at = as_utc(delivery.due_at) + timedelta(seconds=float(delay.param("seconds")))
    held = take(WEBHOOKS, ("webhook_out_of_order",))
    if held is not None:
        delivery.status = DeliveryStatus.HELD
    if take(WEBHOOKS, ("webhook_duplicate",)) is not None:
        db.session.add(delivery.duplicate())
    if held is not None and held.remaining == 0:
        # The last of the group: send them all, newest first.
        _release_held(max(as_utc(delivery.due_at), utcnow()))


# Internals ------------------------------------------------------------------------------------------


def _columns():
    return select(
        SimFault.id,
        SimFault.endpoint,
        SimFault.kind,
        SimFault.remaining,
        SimFault.fired,
        SimFault.params,
        SimFault.created_at,
    )


def _in_force():
    return or_(SimFault.remaining.is_(None), SimFault.remaining > 0)


def _load(fault_id):
    return Fault(*db.session.execute(_columns().where(SimFault.id == fault_id)).one())


def _exists(kind):
    return _exists_any((kind,))


def _exists_any(kinds):
    found = db.session.execute(select(SimFault.id).where(SimFault.kind.in_(kinds), _in_force()).limit(1)).first()
    return found is not None


def _release_held(start):
    """Held deliveries become due from `start`, newest first, a moment apart."""
    held = (
        db.session.execute(
            select(SimWebhookDelivery)
            .where(SimWebhookDelivery.status == DeliveryStatus.HELD)
            .order_by(SimWebhookDelivery.id.desc())
        )
        .scalars()
        .all()
    )
    for position, delivery in enumerate(held):
        delivery.status = DeliveryStatus.PENDING
        delivery.due_at = start + timedelta(seconds=OUT_OF_ORDER_SPACING * position)
    if held:
        log.info("simulator: %d held webhook(s) released, newest first", len(held))
    return len(held)


def _wake():
    from shop import worker

    worker.wake(current_app._get_current_object())
