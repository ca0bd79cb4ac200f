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
from shop.models import Order, OrderStatus, PaymentAttempt
from shop.orders import state
from shop.orders.state import WebhookEvent, decide_webhook, record_shopper_result
from tests.webhook_helpers import apply_event, emails, events, get_order, kept_emails, make_order, transitions

PSP = "PSPPAYMENT000001"
SECOND_PSP = "PSPPAYMENT000002"  # another successful payment for the same order
AMOUNT, CURRENCY = 12500, "KWD"

EVENTS = {
    "auth_ok": WebhookEvent("AUTHORISATION", True, AMOUNT, CURRENCY, PSP),
    "auth_ok_second": WebhookEvent("AUTHORISATION", True, AMOUNT, CURRENCY, SECOND_PSP),
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
    # Not paid yet, any pspReference is the order's payment; paid already, it is a second payment.
    (C, "auth_ok_second"): (PAID, set(), "paid"),
    (P, "auth_ok_second"): (PAID, set(), "paid"),
    (PAID, "auth_ok_second"): (PAID, {REFUND}, None),
    (F, "auth_ok_second"): (PAID, {REFUND}, "late_paid"),
    (E, "auth_ok_second"): (PAID, {REFUND}, "late_paid"),
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

# After the payment, the payment's webhooks act as on a paid order: the money came, the refunds decide.
AFTER_PAYMENT = (OrderStatus.REFUND_PENDING, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED)
for _status in AFTER_PAYMENT:
    for _event in EVENTS:
        _after, _flags, _email = TABLE[(PAID, _event)]
        TABLE[(_status, _event)] = (_status, _flags, _email)


# A paid order keeps the payment that paid it; a second successful one is kept apart, to be refunded.
SECOND_PAYMENT = {(status, "auth_ok_second") for status in (PAID, *AFTER_PAYMENT)}

SUBJECT_WORDS = {
    "paid": "Your payment was successful",
    "late_paid": "Your payment was successful",
    "failed": "cancelled: the payment failed",
    "expired": "cancelled: the payment timed out",
}


def test_the_table_covers_every_status_and_event():
    statuses = (C, P, PAID, F, E, *AFTER_PAYMENT)
    assert set(TABLE) == set(itertools.product(statuses, EVENTS))
    assert set(statuses) == {OrderStatus.CREATED, OrderStatus.PENDING, *OrderStatus.FINAL}


def snapshot(status, **overrides):
    values = dict(
        status=status,
        amount_value=AMOUNT,
        currency=CURRENCY,
        # A paid order was paid by this payment; the others have seen no successful payment.
        psp_reference=PSP if status in OrderStatus.MONEY_TAKEN else None,
        extra_psp_reference=None,
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
    if status in OrderStatus.MONEY_TAKEN:
        assert order.psp_reference == PSP
    assert order.extra_psp_reference == (SECOND_PSP if (status, event_name) in SECOND_PAYMENT else None)
    # Applying the same event again changes nothing: duplicates have no second effect.
    assert decide_webhook(order, EVENTS[event_name]).changes == {}


@pytest.mark.parametrize("status,event_name", sorted(TABLE))
def test_apply_webhook_in_the_database(app, status, event_name):
    expected_status, expected_flags, expected_email = TABLE[(status, event_name)]
    reference = make_order(app, status=status, psp_reference=PSP if status in OrderStatus.MONEY_TAKEN else None)
    event = EVENTS[event_name]
    with app.app_context():
        for _ in range(2):  # the second time is a duplicate: no second transition, no second email
            apply_event(reference, event)
    order = get_order(app, reference)
    assert order.status == expected_status
    assert {flag for flag in (REVIEW, REFUND) if getattr(order, flag)} == expected_flags
    assert order.extra_psp_reference == (SECOND_PSP if (status, event_name) in SECOND_PAYMENT else None)
    sent = kept_emails(app, reference)
    if expected_email:
        assert len(sent) == 1 and SUBJECT_WORDS[expected_email] in sent[0].subject
    else:
        assert sent == []
    changes = transitions(app, reference)
    if expected_status != status:
        assert [(old, new) for old, new, _ in changes] == [(status, expected_status)]
        if REFUND in expected_flags:
            assert "needs a refund decision" in changes[0][2]
    else:
        assert changes == []


def test_a_transition_is_recorded_as_fields_with_its_rule_and_email(app):
    reference = make_order(app)
    with app.app_context():
        apply_event(reference, WebhookEvent("AUTHORISATION", True, AMOUNT, CURRENCY, "X1234567890ABCDE"))
    (step,) = events(app, reference, kind="transition")
    assert (step.old_status, step.new_status, step.note) == ("pending", "paid", "proceed with the order")
    (email,) = emails(app, reference)
    assert step.email_id == email.id and email.kind == "paid"
    assert get_order(app, reference).psp_reference == "X1234567890ABCDE"


def test_second_successful_payment_on_a_paid_order_needs_a_refund_decision():
    order = snapshot(PAID, psp_reference="PSPFIRST00000001")
    decision = decide_webhook(order, WebhookEvent("AUTHORISATION", True, AMOUNT, CURRENCY, "PSPSECOND0000002"))
    assert decision.changes == {"needs_refund_decision": True, "extra_psp_reference": "PSPSECOND0000002"}
    assert decision.email is None


def test_amount_mismatch_is_flagged_not_paid(app):
    reference = make_order(app, amount_value=12500)
    with app.app_context():
        decision = apply_event(reference, WebhookEvent("AUTHORISATION", True, 12000, "KWD", PSP))
    assert decision.changes == {"needs_review": True}
    order = get_order(app, reference)
    assert (order.status, order.needs_review, order.needs_refund_decision) == ("pending", True, False)
    assert emails(app, reference) == []
    (review,) = events(app, reference, kind="review")
    assert "12.000 KWD, not the order's 12.500 KWD" in review.note and review.new_status is None


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
                apply_event(reference, EVENTS[name])
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
    assert transitions(app, reference) == []


@pytest.mark.parametrize("webhook", ["auth_ok", "auth_fail", "offer_closed"])
def test_webhook_before_or_after_the_return_ends_the_same(app, webhook):
    result = {"auth_ok": "Authorised", "auth_fail": "Refused", "offer_closed": "Pending"}[webhook]
    finals = set()
    for webhook_first in (True, False):
        reference = make_order(app)
        order_id = get_order(app, reference).id
        with app.app_context():
            steps = [
                lambda reference=reference: apply_event(reference, EVENTS[webhook]),
                lambda order_id=order_id: record_shopper_result(order_id, {"resultCode": result, "pspReference": PSP}),
            ]
            for step in steps if webhook_first else reversed(steps):
                step()
        order = get_order(app, reference)
        finals.add((order.status, order.result_code))
        assert len(transitions(app, reference)) == 1
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
                    apply_event(reference, EVENTS["auth_ok"])
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
    assert len(transitions(app, reference)) == 1
    assert len(emails(app, reference)) == 1


def test_start_payment_still_guards_double_submission(app):
    reference = make_order(app, status="created")
    order_id = get_order(app, reference).id
    with app.app_context():
        attempt_id = state.start_payment(order_id)
        assert attempt_id is not None
        assert state.start_payment(order_id) is None
        assert db.session.execute(select(Order.status).where(Order.id == order_id)).scalar() == "pending"
        # The order never is pending without its attempt: both were written in one transaction.
        attempts = db.session.execute(select(PaymentAttempt.id).where(PaymentAttempt.order_id == order_id)).scalars()
        assert list(attempts) == [attempt_id]
    (started,) = events(app, reference, kind="payment_started")
    assert (started.old_status, started.new_status, started.attempt_id) == ("created", "pending", attempt_id)


# One cart paid twice (two tabs, Back and pay again) ------------------------------------------------


def test_second_payment_rule_flags_the_order_paid_after_its_cart_was():
    first = SimpleNamespace(id=7, reference="KNET-FIRST")
    paid = decide_webhook(snapshot(P), EVENTS["auth_ok"])
    flagged = state.second_payment(paid, first)
    assert flagged.changes == dict(paid.changes, duplicate_of_id=7)
    assert flagged.email == "duplicate_paid" and "KNET-FIRST" in flagged.note
    # Only a payment that makes the order paid is a second payment; no first one, no flag.
    assert state.second_payment(paid, None) is paid
    failed = decide_webhook(snapshot(P), EVENTS["auth_fail"])
    assert state.second_payment(failed, first) is failed


def _cart_orders(app, count=2, cart_ref="cart-paid-twice"):
    return [make_order(app, cart_ref=cart_ref, psp_reference=None) for _ in range(count)]


def test_the_later_of_two_orders_of_one_cart_paid_is_flagged_duplicate_payment(app):
    first, second = _cart_orders(app)
    with app.app_context():
        apply_event(first, WebhookEvent("AUTHORISATION", True, AMOUNT, CURRENCY, "PSPFIRSTCART0001"))
        apply_event(second, WebhookEvent("AUTHORISATION", True, AMOUNT, CURRENCY, "PSPSECONDCART002"))
        apply_event(second, WebhookEvent("AUTHORISATION", True, AMOUNT, CURRENCY, "PSPSECONDCART002"))  # again
    one, two = get_order(app, first), get_order(app, second)
    assert (one.status, one.duplicate_of_id) == ("paid", None)
    assert (two.status, two.duplicate_of_id) == ("paid", one.id)
    assert two.flags == [f"duplicate_payment of order #{one.id}"]
    (flag_step,) = events(app, second, kind="duplicate_payment")
    assert (flag_step.old_status, flag_step.new_status) == ("pending", "paid")
    assert [e.kind for e in emails(app, second)] == ["duplicate_paid"]
    assert [e.kind for e in emails(app, first)] == ["paid"]


def test_orders_of_different_carts_are_not_duplicates(app):
    (first,) = _cart_orders(app, 1, cart_ref="cart-one")
    (second,) = _cart_orders(app, 1, cart_ref="cart-two")
    with app.app_context():
        apply_event(first, WebhookEvent("AUTHORISATION", True, AMOUNT, CURRENCY, "PSPCARTONE000001"))
        apply_event(second, WebhookEvent("AUTHORISATION", True, AMOUNT, CURRENCY, "PSPCARTTWO000002"))
    assert get_order(app, second).duplicate_of_id is None


def test_two_orders_of_one_cart_paid_at_the_same_moment_flag_exactly_one(app):
    """The check runs after the write, under the cart's lock (PostgreSQL) or the write lock (SQLite):
    of two payments applied at once, one sees the other."""
    for round_ in range(5):
        references = _cart_orders(app, 2, cart_ref=f"cart-race-{round_}")
        barrier = threading.Barrier(2)
        errors = []

        def pay(reference, n, barrier=barrier, round_=round_, errors=errors):
            try:
                with app.app_context():
                    barrier.wait()
                    apply_event(
                        reference, WebhookEvent("AUTHORISATION", True, AMOUNT, CURRENCY, f"PSPRACE{round_}{n:09d}")
                    )
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=pay, args=(r, n)) for n, r in enumerate(references)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        orders = [get_order(app, r) for r in references]
        assert [o.status for o in orders] == ["paid", "paid"]
        assert sorted(o.duplicate_of_id is not None for o in orders) == [False, True]
