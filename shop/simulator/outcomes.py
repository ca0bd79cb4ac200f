"""What the simulated KNET page decides for a card, and what Adyen then reports.

Test cards are Tap's, which Adyen's KNET docs point to
(https://developers.tap.company/reference/testing-cards): 8888880000000001 and …0002 with expiry
09/30 and PIN 1234 are CAPTURED, other expiries NOT CAPTURED. Cards …0003 to …0005 exist only here,
to produce the other resultCodes the KNET docs list (https://docs.adyen.com/payment-methods/knet/api-only).
Refusal reasons and codes: https://docs.adyen.com/development-resources/refusal-reasons
"""

from dataclasses import dataclass
from datetime import date

from flask_babel import lazy_gettext as _l

from shop.checkout.knet_test_cards import TAP_CARDS

TEST_PIN = "1234"
GOOD_EXPIRY = (9, 2030)  # month, year: Tap's "09/30"
TAP_TEST_CARDS = ("8888880000000001", "8888880000000002")


@dataclass(frozen=True)
class Outcome:
    result_code: str
    refusal_reason: str | None = None
    refusal_reason_code: str | None = None


AUTHORISED = Outcome("Authorised")
# Tap's "NOT CAPTURED" for a test card with another (not yet past) expiry.
REFUSED = Outcome("Refused", "Refused", "2")
EXPIRED_CARD = Outcome("Refused", "Expired Card", "6")
INVALID_PIN = Outcome("Refused", "Invalid Pin", "17")
# resultCode Cancelled is what the KNET docs give for a cancel on KNET's page.
CANCELLED = Outcome("Cancelled", "Shopper Cancelled", "16")
ERROR = Outcome("Error", "Acquirer Error", "4")
PENDING = Outcome("Pending")
RECEIVED = Outcome("Received")

SIMULATOR_ONLY_CARDS = {
    "8888880000000003": ERROR,
    "8888880000000004": PENDING,
    "8888880000000005": RECEIVED,
}


def decide(card_number, expiry_month, expiry_year, pin, today=None):
    """The outcome of a submitted KNET form (already validated: 16 digits, month 1-12, a year).

    Tap's cards: an expiry in the past is "Expired Card"; any other expiry than 09/30 is a plain
    refusal (Tap's NOT CAPTURED); with the right expiry a PIN other than 1234 is "Invalid Pin".
    The simulator-only cards give their outcome whatever the expiry and PIN. Any other card is refused.
    """
    if card_number in SIMULATOR_ONLY_CARDS:
        return SIMULATOR_ONLY_CARDS[card_number]
    if card_number not in TAP_TEST_CARDS:
        return REFUSED
    today = today or date.today()
    if (expiry_year, expiry_month) < (today.year, today.month):
        return EXPIRED_CARD
    if (expiry_month, expiry_year) != GOOD_EXPIRY:
        return REFUSED
    if pin != TEST_PIN:
        return INVALID_PIN
    return AUTHORISED


@dataclass(frozen=True)
class Notification:
    """The AUTHORISATION webhook an outcome leads to."""

    success: bool
    reason: str
    # Pending and Received get their final webhook later (setting SIMULATOR_PENDING_DELAY).
    later: bool = False


def notification_for(outcome):
    if outcome.result_code == "Authorised":
        return Notification(True, "")
    if outcome.result_code == "Pending":
        return Notification(True, "", later=True)
    if outcome.result_code == "Received":
        return Notification(False, REFUSED.refusal_reason, later=True)
    return Notification(False, outcome.refusal_reason or "")


# The sheet shown next to the checkout in simulator mode (simulator/_test_cards.html), the same as the
# README's table: Tap's cards, then the simulator's own. `card` None: any card.
TEST_CARDS = (
    *TAP_CARDS,
    {"card": None, "expiry": "", "pin": "", "result": "Cancelled", "note": _l("(the Cancel button)")},
    {"card": "8888880000000003", "expiry": "09/30", "pin": "1234", "result": "Error", "note": _l("(simulator only)")},
    {
        "card": "8888880000000004",
        "expiry": "09/30",
        "pin": "1234",
        "result": "Pending",
        "note": _l("(then paid by webhook; simulator only)"),
    },
    {
        "card": "8888880000000005",
        "expiry": "09/30",
        "pin": "1234",
        "result": "Received",
        "note": _l("(then failed by webhook; simulator only)"),
    },
)


def card_sheet():
    """For templates: the rows of the test-card sheet."""
    return TEST_CARDS
