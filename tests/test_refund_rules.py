"""The refund rules as pure functions: every refund status × every refund notification, any arrival order,
what is left to refund, the order's status that follows, and amounts typed by a person.

https://docs.adyen.com/online-payments/refund: `received` only acknowledges; REFUND success=true/false
is the outcome (false is a normal outcome, with Adyen's reason); REFUND_FAILED (and REFUNDED_REVERSED)
undo a refund that succeeded.
"""

import itertools
from types import SimpleNamespace

import pytest

from shop.models import OrderStatus, RefundStatus
from shop.money import parse_amount
from shop.orders.refund_state import (
    REFUND_EVENTS,
    decide_refund,
    left_to_refund,
    order_status_for,
)

REQ, REC, OK, FAIL = RefundStatus.REQUESTED, RefundStatus.RECEIVED, RefundStatus.SUCCEEDED, RefundStatus.FAILED
EVENTS = [(code, success) for code in REFUND_EVENTS for success in (True, False)]

# (refund status, eventCode, success) -> refund status after (None: unchanged)
OUTCOME = {True: OK, False: FAIL}
TABLE = {}
for _status in (REQ, REC):
    for _code in ("REFUND", "CANCEL_OR_REFUND", "CANCELLATION"):
        for _success in (True, False):
            TABLE[(_status, _code, _success)] = OUTCOME[_success]
for _status in (OK, FAIL):
    for _code in ("REFUND", "CANCEL_OR_REFUND", "CANCELLATION"):
        for _success in (True, False):
            TABLE[(_status, _code, _success)] = None  # decided already
for _status in (REQ, REC, OK, FAIL):
    for _code in ("REFUND_FAILED", "REFUNDED_REVERSED"):
        TABLE[(_status, _code, True)] = None if _status == FAIL else FAIL
        TABLE[(_status, _code, False)] = None  # reports nothing that happened


def test_the_table_covers_every_refund_status_and_notification():
    statuses = (REQ, REC, OK, FAIL)
    assert set(TABLE) == {(s, code, success) for s in statuses for code, success in EVENTS}


@pytest.mark.parametrize("status,code,success", sorted(TABLE))
def test_decide_refund(status, code, success):
    decision = decide_refund(status, code, success)
    assert decision.status == TABLE[(status, code, success)]
    assert decision.note
    after = decision.status or status
    # Applying the same notification again changes nothing: a duplicate has no second effect.
    assert decide_refund(after, code, success).status is None


def settle(events, status=REC):
    for code, success in events:
        status = decide_refund(status, code, success).status or status
    return status


@pytest.mark.parametrize(
    "events,end",
    [
        ([("REFUND", True), ("REFUND_FAILED", True)], FAIL),
        ([("REFUND", True), ("REFUNDED_REVERSED", True)], FAIL),
        ([("REFUND", True), ("REFUND", True)], OK),
        ([("CANCEL_OR_REFUND", True), ("CANCEL_OR_REFUND", True)], OK),
        ([("REFUND", False), ("REFUND_FAILED", True)], FAIL),
    ],
)
def test_any_arrival_order_ends_the_same(events, end):
    for order in itertools.permutations(events):
        assert settle(order) == end
        assert settle(order, status=REQ) == end  # the notification may come before the API's answer


FIRST, SECOND = "PSPFIRST00000001", "PSPSECOND0000002"  # an order paid twice: its payment, and the extra one


def refunds(*given):
    """Refunds as (status, amount) of the order's payment, or (status, amount, payment)."""
    return [
        SimpleNamespace(status=status, amount_value=amount, payment_psp_reference=payment[0] if payment else FIRST)
        for status, amount, *payment in given
    ]


@pytest.mark.parametrize(
    "given,left,status",
    [
        ([], 12500, OrderStatus.PAID),
        ([(REQ, 12500)], 0, OrderStatus.REFUND_PENDING),
        ([(REC, 2000)], 10500, OrderStatus.REFUND_PENDING),
        ([(OK, 2000)], 10500, OrderStatus.PARTIALLY_REFUNDED),
        ([(OK, 2000), (OK, 10500)], 0, OrderStatus.REFUNDED),
        ([(OK, 2000), (REC, 500)], 10000, OrderStatus.REFUND_PENDING),
        ([(FAIL, 12500)], 12500, OrderStatus.PAID),
        ([(OK, 12500), (FAIL, 12500)], 0, OrderStatus.REFUNDED),
        ([(OK, 1), (FAIL, 12499)], 12499, OrderStatus.PARTIALLY_REFUNDED),
        # The second payment given back: all of the order's own is left, and the order stays paid.
        ([(REC, 12500, SECOND)], 12500, OrderStatus.REFUND_PENDING),
        ([(OK, 12500, SECOND)], 12500, OrderStatus.PAID),
        ([(OK, 12500, SECOND), (OK, 2000)], 10500, OrderStatus.PARTIALLY_REFUNDED),
    ],
)
def test_what_is_left_counts_pending_refunds_and_the_status_follows(given, left, status):
    assert left_to_refund(12500, refunds(*given), FIRST) == left
    assert order_status_for(12500, refunds(*given), FIRST) == status


def test_what_is_left_is_counted_per_payment():
    given = refunds((OK, 2000), (REC, 500))  # of the order's own payment only
    assert (left_to_refund(12500, given, FIRST), left_to_refund(12500, given, SECOND)) == (10000, 12500)
    given = refunds((OK, 12500, SECOND))
    assert (left_to_refund(12500, given, FIRST), left_to_refund(12500, given, SECOND)) == (12500, 0)


@pytest.mark.parametrize(
    "text,fils",
    [("1.250", 1250), ("12.5", 12500), ("12", 12000), ("0.001", 1), (" 3.000 ", 3000), ("100000.999", 100000999)],
)
def test_amounts_typed_in_kwd_become_fils_exactly(text, fils):
    assert parse_amount(text, "KWD") == fils


@pytest.mark.parametrize("text", ["", "1,250", "-1", "1.2345", "1.", "abc", "١٫٢٥٠", "1e3", ".5"])
def test_amounts_that_are_not_amounts_are_refused_with_why(text):
    with pytest.raises(ValueError, match="amount|decimals"):
        parse_amount(text, "KWD")
