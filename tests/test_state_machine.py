"""The order state machine: every status × every webhook, arrival orders, races, and the redirect result.

Rules (https://docs.adyen.com/payment-methods/knet/api-only, the webhook table):
AUTHORISATION true → paid ("proceed with the order"); false → failed ("payment failed");
OFFER_CLOSED → expired ("payment timed out"). The redirect's resultCode is for display only.
"""

import itertools
import threading
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from shop.db import db
from shop.models import Order, OrderStatus
from shop.orders import state
from shop.orders.state import WebhookEvent, apply_webhook, decide_webhook, record_shopper_result
from tests.webhook_helpers import emails, events, get_order, make_order

PSP = "PSPPAYMENT000001"
AMOUNT, CURRENCY = 12500, "KWD"

EVENTS = {
    "auth_ok": WebhookEvent("AUTHORISATION", True, AMOUNT, CURRENCY, PSP),
    "auth_other_amount": WebhookEvent("AUTHORISATION", True, 13000, CURRENCY, PSP),
    "auth_other_currency": WebhookEvent("AUTHORISATION", True, AMOUNT, "EUR", PSP),
    "auth_fail": WebhookEvent("AUTHORISATION", False, AMOUNT, CURRENCY, PSP, "NOT CAPTURED"),
    "offer_closed": WebhookEvent("OFFER_CLOSED", True, AMOUNT, CURRENCY, PSP),
    "offer_closed_false": WebhookEvent("OFFER_CLOSED", False, AMOUNT, CURRENCY, PSP),
    "refund": WebhookEvent("REFUND", True, AMOUNT, CURRENCY, "PSPREFUND0000001"),
}

C, P, PAID, F, E = "created", "pending", "paid", "failed", "expired"
REVIEW, REFUND = "needs_review", "needs_refund_decision"

# (status before, event) -> (status after, flags raised, shopper email)
TABLE = {
    (C, "auth_ok"): (PAID, set(), "paid"),
    (P, "auth_ok"): (PAID, set(), "paid"),
    (PAID, "auth_ok"): (PAID, set(), None),
    (F, "auth_ok"): (PAID, {REFUND}, "late_paid"),
    (E, "auth_ok"): (PAID, {REFUND}, "late_paid"),
    (C, "auth_other_amount"): (C, {REVIEW}, None),
    (P, "auth_other_amount"): (P, {REVIEW}, None),
    (PAID, "auth_other_amount"): (PAID, {REVIEW}, None),
    (F, "auth_other_amount"): (F, {REVIEW}, None),
    (E, "auth_other_amount"): (E, {REVIEW}, None),
    (C, "auth_other_currency"): (C, {REVIEW}, None),
    (P, "auth_other_currency"): (P, {REVIEW}, None),
    (PAID, "auth_other_currency"): (PAID, {REVIEW}, None),
    (F, "auth_other_currency"): (F, {REVIEW}, None),
    (E, "auth_other_currency"): (E, {REVIEW}, None),
    (C, "auth_fail"): (F, set(), "failed"),
    (P, "auth_fail"): (F, set(), "failed"),
    (PAID, "auth_fail"): (PAID, set(), None),
    (F, "auth_fail"): (F, set(), None),
    (E, "auth_fail"): (E, set(), None),
    (C, "offer_closed"): (E, set(), "expired"),
    (P, "offer_closed"): (E, set(), "expired"),
    (PAID, "offer_closed"): (PAID, set(), None),
    (F, "offer_closed"): (F, set(), None),
    (E, "offer_closed"): (E, set(), None),
    (C, "offer_closed_false"): (C, set(), None),
    (P, "offer_closed_false"): (P, set(), None),
    (PAID, "offer_closed_false"): (PAID, set(), None),
    (F, "offer_closed_false"): (F, set(), None),
    (E, "offer_closed_false"): (E, set(), None),
    (C, "refund"): (C, set(), None),
    (P, "refund"): (P, set(), None),
    (PAID, "refund"): (PAID, set(), None),
    (F, "refund"): (F, set(), None),
    (E, "refund"): (E, set(), None),
}

SUBJECT_WORDS = {
    "paid": "Your payment was successful",
    "late_paid": "Your payment was successful",
    "failed": "cancelled: the payment failed",
    "expired": "cancelled: the payment timed out",
}


def test_the_table_covers_every_status_and_event():
    statuses = (C, P, PAID, F, E)
    assert set(TABLE) == set(itertools.product(statuses, EVENTS))
    assert set(statuses) == {OrderStatus.CREATED, OrderStatus.PENDING, *OrderStatus.FINAL}


def snapshot(status, **overrides):
    values = dict(
        status=status,
        amount_value=AMOUNT,
        currency=CURRENCY,
        # A paid order was paid by this payment; the others have seen no successful payment.
        psp_reference=PSP if status == PAID else None,
        needs_review=False,
        needs_refund_decision=False,
    )
    values.update(overrides)
    return SimpleNamespace(**values)


@pytest.mark.parametrize("status,event_name", sorted(TABLE))
def test_decide_webhook(status, event_name):
    expected_status, expected_flags, expected_email = TABLE[(status, event_name)]
    order = snapshot(status)
    decision = decide_webhook(order, EVENTS[event_name])
    for column, value in decision.changes.items():
        setattr(order, column, value)
    assert order.status == expected_status
    assert {flag for flag in (REVIEW, REFUND) if getattr(order, flag)} == expected_flags
    assert decision.email == expected_email
    assert decision.note
    # Applying the same event again changes nothing: duplicates have no second effect.
    assert decide_webhook(order, EVENTS[event_name]).changes == {}


@pytest.mark.parametrize("status,event_name", sorted(TABLE))
def test_apply_webhook_in_the_database(app, status, event_name):
    expected_status, expected_flags, expected_email = TABLE[(status, event_name)]
    reference = make_order(app, status=status, psp_reference=PSP if status == PAID else None)
    event = EVENTS[event_name]
    with app.app_context():
        for _ in range(2):  # the second time is a duplicate: no second transition, no second email
            order, changed = apply_webhook(
                reference, event.event_code, event.success, event.amount_value, event.currency, event.psp_reference
            )
    order = get_order(app, reference)
    assert order.status == expected_status
    assert {flag for flag in (REVIEW, REFUND) if getattr(order, flag)} == expected_flags
    sent = emails(app, reference)
    if expected_email:
        assert len(sent) == 1 and SUBJECT_WORDS[expected_email] in sent[0].subject
    else:
        assert sent == []
    transitions = events(app, reference, kind="transition")
    if expected_status != status:
        summary = f"{status} → {expected_status}: {event.describe()}"
        if REFUND in expected_flags:
            summary += "; needs a refund decision (the shopper was told the order was cancelled)"
        assert transitions == [summary]
    else:
        assert transitions == []


def test_transition_summary_wording(app):
    reference = make_order(app)
    with app.app_context():
        apply_webhook(reference, "AUTHORISATION", True, AMOUNT, CURRENCY, "X1234567890ABCDE")
    assert events(app, reference, kind="transition") == [
        "pending → paid: AUTHORISATION success=true (pspReference X1234567890ABCDE)"
    ]
    assert get_order(app, reference).psp_reference == "X1234567890ABCDE"


def test_second_successful_payment_on_a_paid_order_needs_a_refund_decision():
    order = snapshot(PAID, psp_reference="PSPFIRST00000001")
    decision = decide_webhook(order, WebhookEvent("AUTHORISATION", True, AMOUNT, CURRENCY, "PSPSECOND0000002"))
    assert decision.changes == {"needs_refund_decision": True}
    assert decision.email is None


def test_amount_mismatch_is_flagged_not_paid(app):
    reference = make_order(app, amount_value=12500)
    with app.app_context():
        order, changed = apply_webhook(reference, "AUTHORISATION", True, 12000, "KWD", PSP)
    assert changed == {"needs_review": True}
    order = get_order(app, reference)
    assert (order.status, order.needs_review, order.needs_refund_decision) == ("pending", True, False)
    assert emails(app, reference) == []
    assert "12.000 KWD, not the order's 12.500 KWD" in events(app, reference, kind="review")[0]


def test_unknown_merchant_reference_changes_nothing(app):
    with app.app_context():
        assert apply_webhook("NO-SUCH-ORDER", "AUTHORISATION", True, AMOUNT, CURRENCY, PSP) == (None, None)


# Sets of webhooks that may arrive in any order (with duplicates) -> the status they must end in.
ARRIVALS = [
    (["auth_ok", "offer_closed"], PAID),
    (["auth_ok", "auth_fail", "offer_closed"], PAID),
    (["auth_ok", "auth_ok", "offer_closed", "offer_closed"], PAID),
    (["auth_fail", "auth_fail", "auth_ok"], PAID),
    (["auth_other_amount", "offer_closed"], E),
    (["auth_other_amount", "auth_fail"], F),
    (["auth_ok", "auth_other_amount", "refund"], PAID),
    (["offer_closed", "offer_closed_false", "refund"], E),
]


@pytest.mark.parametrize("names,final", ARRIVALS, ids=["+".join(names) for names, _ in ARRIVALS])
def test_any_order_of_arrival_ends_in_the_same_state(app, names, final):
    outcomes = set()
    for permutation in set(itertools.permutations(names)):
        reference = make_order(app)
        with app.app_context():
            for name in permutation:
                state.apply_event(reference, EVENTS[name])
        order = get_order(app, reference)
        outcomes.add((order.status, order.needs_review))
        # The refund decision is needed exactly when the shopper was told "cancelled" before the money came.
        closed_first = (
            any(
                n in ("auth_fail", "offer_closed") and i < permutation.index("auth_ok")
                for i, n in enumerate(permutation)
            )
            if "auth_ok" in permutation
            else False
        )
        assert order.needs_refund_decision == closed_first, permutation
        # One email per outcome: at most a cancellation and then the late success.
        assert len(emails(app, reference)) == (2 if closed_first else 1)
    assert outcomes == {(final, "auth_other_amount" in names)}


def test_redirect_result_is_display_only_and_never_downgrades(app):
    reference = make_order(app)
    order_id = get_order(app, reference).id
    with app.app_context():
        record_shopper_result(order_id, {"resultCode": "Authorised", "pspReference": PSP})
        record_shopper_result(order_id, {"resultCode": "Pending", "pspReference": PSP})  # a replayed return
        record_shopper_result(order_id, {"resultCode": "Received"})
    order = get_order(app, reference)
    assert (order.status, order.result_code) == ("pending", "Authorised")
    assert emails(app, reference) == []


@pytest.mark.parametrize("result_code", ["Authorised", "Refused", "Cancelled", "Error", "Pending", "Received"])
@pytest.mark.parametrize("status", [P, PAID, F, E])
def test_redirect_result_never_changes_status(app, status, result_code):
    reference = make_order(app, status=status)
    with app.app_context():
        record_shopper_result(get_order(app, reference).id, {"resultCode": result_code, "pspReference": PSP})
    order = get_order(app, reference)
    assert order.status == status
    assert order.result_code == result_code
    assert events(app, reference, kind="transition") == []


@pytest.mark.parametrize("webhook", ["auth_ok", "auth_fail", "offer_closed"])
def test_webhook_before_or_after_the_return_ends_the_same(app, webhook):
    result = {"auth_ok": "Authorised", "auth_fail": "Refused", "offer_closed": "Pending"}[webhook]
    finals = set()
    for webhook_first in (True, False):
        reference = make_order(app)
        order_id = get_order(app, reference).id
        with app.app_context():
            steps = [
                lambda reference=reference: state.apply_event(reference, EVENTS[webhook]),
                lambda order_id=order_id: record_shopper_result(order_id, {"resultCode": result, "pspReference": PSP}),
            ]
            for step in steps if webhook_first else reversed(steps):
                step()
        order = get_order(app, reference)
        finals.add((order.status, order.result_code))
        assert len(events(app, reference, kind="transition")) == 1
        assert len(emails(app, reference)) == 1
    assert len(finals) == 1


def test_concurrent_webhooks_and_returns_make_one_transition(app):
    """Checklist 43: the webhook-vs-return race and concurrent deliveries are serialised."""
    reference = make_order(app)
    order_id = get_order(app, reference).id
    barrier = threading.Barrier(12)
    errors = []

    def run(kind):
        try:
            with app.app_context():
                barrier.wait()
                if kind == "webhook":
                    state.apply_event(reference, EVENTS["auth_ok"])
                else:
                    record_shopper_result(order_id, {"resultCode": "Authorised", "pspReference": PSP})
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=("webhook" if i % 2 else "return",)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    order = get_order(app, reference)
    assert (order.status, order.result_code) == ("paid", "Authorised")
    assert len(events(app, reference, kind="transition")) == 1
    assert len(emails(app, reference)) == 1


def test_start_payment_still_guards_double_submission(app):
    reference = make_order(app, status="created")
    order_id = get_order(app, reference).id
    with app.app_context():
        assert state.start_payment(order_id) is True
        assert state.start_payment(order_id) is False
        assert db.session.execute(select(Order.status).where(Order.id == order_id)).scalar() == "pending"
