"""Tap's KNET test cards, which Adyen's KNET docs point to for its test platform
(https://developers.tap.company/reference/testing-cards): on the KNET page choose "KNET Test Card
[KNET1]", then 8888880000000001 or …0002 with expiry 09/30 and PIN 1234 are captured; another expiry
is not. The console's test-card page shows them; the simulator adds cards of its own to the sheet.

The notes are lazy strings: shown in the page's language.
"""

from flask_babel import lazy_gettext as _l

SOURCE = "https://developers.tap.company/reference/testing-cards"
TEST_BANK_OPTION = "KNET Test Card [KNET1]"
ANY_OTHER = _l("any other")
TAP_CARDS = (
    {"card": "8888880000000001", "expiry": "09/30", "pin": "1234", "result": "Authorised", "note": ""},
    {"card": "8888880000000002", "expiry": "09/30", "pin": "1234", "result": "Authorised", "note": ""},
    {
        "card": "8888880000000001",
        "expiry": ANY_OTHER,
        "pin": "1234",
        "result": "Refused",
        "note": _l("(a date in the past: expired card)"),
    },
    {"card": "8888880000000001", "expiry": "09/30", "pin": ANY_OTHER, "result": "Refused", "note": _l("(wrong PIN)")},
)
