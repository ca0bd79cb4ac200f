"""The simulated KNET hosted page over real HTTP: the form, each card's outcome, the way back."""

import html
import os
import re
from urllib.parse import quote, unquote, unquote_plus, urlsplit

import pytest
import requests
from flask import render_template_string
from sqlalchemy import func, select

from shop.db import db
from shop.simulator import outcomes, payments
from shop.simulator.models import SimPayment, SimWebhookDelivery
from tests.conftest import LiveServer
from tests.simulator_helpers import (
    GOOD_CARD,
    PAGE_PATH,
    details,
    page_token,
    pay,
    redirect_result_from,
    start_payment,
    submit_page,
    wait_for,
)

FIELDS = ("bank", "card_number", "expiry_month", "expiry_year", "pin")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One live server for this module (no background worker: webhooks are only queued here)."""
    live = LiveServer(tmp_path_factory.mktemp("simulator-page"), BACKGROUND_WORKER=False)
    yield live
    live.stop()


def attribute(page, tag_pattern, name):
    """The unescaped value of attribute `name` in the first tag matching `tag_pattern`."""
    tag = re.search(tag_pattern, page).group(0)
    return html.unescape(re.search(rf'{name}="([^"]*)"', tag).group(1))


# The page --------------------------------------------------------------------------------------------


def test_page_has_every_field_with_a_visible_label(server):
    answer, _, _ = start_payment(server)
    page = requests.get(answer["action"]["url"], timeout=10)
    assert page.status_code == 200
    text = page.text
    for field in FIELDS:
        assert re.search(rf'<label for="{field}">[^<]+</label>', text), field
        assert re.search(rf'<(input|select) id="{field}" name="{field}"', text), field
    assert re.search(r'<input id="pin" name="pin" type="password"', text)
    assert "KNET Test Card [KNET1]" in text
    assert "National Bank of Kuwait" in text and "Kuwait Finance House" in text
    assert re.search(r'<button type="submit" name="action" value="submit"[^>]*>Submit</button>', text)
    assert re.search(r'<button type="submit" name="action" value="cancel"[^>]*>Cancel</button>', text)
    assert "12.500 KWD" in text
    assert server.app.config["SIMULATOR_MERCHANT_NAME"] in text
    # A heading, every part in a landmark, and the shop's own KNET logo (one mark in the whole flow).
    assert re.search(r'<h1 class="gateway-title">KNET Payment Gateway</h1>', text)
    assert re.search(r'<header class="gateway-header">\s*<img class="knet-mark" src="/static/logos/knet.svg"', text)
    assert re.search(r'<main class="gateway-body">\s*<p class="sim-note">', text)
    # Its own stylesheet, no inline script: it works with JavaScript off and under a strict CSP.
    assert "/_sim/static/knet.css" in text and "<script" not in text
    assert requests.get(server.url + "/_sim/static/knet.css", timeout=10).status_code == 200


def test_unknown_payment_is_404(server):
    response = requests.get(server.url + PAGE_PATH + "?paymentId=nope", timeout=10)
    assert response.status_code == 404
    assert "could not be found" in response.text


def test_arabic_shopper_locale_gives_an_arabic_page(server):
    answer, _, _ = start_payment(server, shopperLocale="ar-KW")
    page = requests.get(answer["action"]["url"], timeout=10).text
    assert '<html lang="ar" dir="rtl">' in page
    assert "رقم البطاقة" in page
    assert '<dd class="amount">12.500 د.ك</dd>' in page  # as the shop writes it in Arabic
    english = requests.get(answer["action"]["url"] + "&lang=en", timeout=10).text
    assert '<html lang="en" dir="ltr">' in english and "Card Number" in english


# Outcomes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "card, expected",
    [
        ({}, ("Authorised", None, None)),
        ({"card_number": "8888880000000002"}, ("Authorised", None, None)),
        ({"card_number": "8888 8800 0000 0001"}, ("Authorised", None, None)),
        ({"expiry_month": "05", "expiry_year": "2021"}, ("Refused", "Expired Card", "6")),
        ({"expiry_month": "10", "expiry_year": "2035"}, ("Refused", "Refused", "2")),
        ({"pin": "4321"}, ("Refused", "Invalid Pin", "17")),
        ({"card_number": "8888880000000003"}, ("Error", "Acquirer Error", "4")),
        ({"card_number": "8888880000000004"}, ("Pending", None, None)),
        ({"card_number": "8888880000000005"}, ("Received", None, None)),
        ({"card_number": "4111111111111111"}, ("Refused", "Refused", "2")),
        ("cancel", ("Cancelled", "Shopper Cancelled", "16")),
    ],
)
def test_each_card_gives_its_outcome_in_payments_details(server, card, expected):
    response, psp_reference, body = pay(server, card if card == "cancel" else dict(GOOD_CARD, **card))
    assert response.status_code == 303
    result = details(server, redirect_result_from(response.headers["Location"]))
    assert result.status_code == 200
    answer = result.json()
    result_code, reason, reason_code = expected
    assert answer["resultCode"] == result_code
    assert answer["pspReference"] == psp_reference
    assert answer["merchantReference"] == body["reference"]
    assert answer["amount"] == {"currency": "KWD", "value": 12500}
    assert answer.get("refusalReason") == reason
    assert answer.get("refusalReasonCode") == reason_code
    if result_code == "Authorised":
        assert answer["paymentMethod"] == {"type": "knet"}  # no `brand`: that is for cards (scheme)
    else:
        assert "paymentMethod" not in answer


def test_only_the_last_four_digits_are_kept(server):
    response, psp_reference, _ = pay(server)
    assert response.status_code == 303
    with server.app.app_context():
        payment = db.session.execute(select(SimPayment).where(SimPayment.psp_reference == psp_reference)).scalar_one()
        assert (payment.card_last4, payment.bank) == ("0001", "KNET1")
    uri = server.app.config["SQLALCHEMY_DATABASE_URI"]
    if not uri.startswith("sqlite"):
        return  # the byte-level check below reads SQLite's files
    database = urlsplit(uri).path
    files = [path for path in (database, database + "-wal") if os.path.exists(path)]
    assert files
    for path in files:
        with open(path, "rb") as stored:
            assert b"8888880000000001" not in stored.read()


# The way back to the shop -------------------------------------------------------------------------------


def test_get_return_appends_an_encoded_redirect_result_to_the_return_url_query(server):
    response, _, body = pay(server)
    location = response.headers["Location"]
    # returnUrl's own query is kept and redirectResult is added with "&".
    assert location.startswith(body["returnUrl"] + "&redirectResult=")
    encoded = location.split("&redirectResult=", 1)[1]
    value = unquote(encoded)
    assert encoded == quote(value, safe="")
    # Adyen-like and hostile to encoding bugs: "!" after the marker, Base64 with "+" and "/".
    assert value.startswith("X6XtfGC3!")
    assert "+" in value and "/" in value
    assert "%21" in encoded and "%2B" in encoded and "%2F" in encoded


def test_return_url_without_a_query_gets_one(server):
    response, _, _ = pay(server, returnUrl=f"{server.url}/checkout/return/xyz")
    assert response.headers["Location"].startswith(f"{server.url}/checkout/return/xyz?redirectResult=X6XtfGC3%21")


def test_mangled_redirect_results_do_not_resolve(server):
    response, _, _ = pay(server)
    location = response.headers["Location"]
    value = redirect_result_from(location)
    still_encoded = location.split("redirectResult=", 1)[1]
    plus_as_space = value.replace("+", " ")
    decoded_twice = unquote_plus(value)
    for wrong in (still_encoded, plus_as_space, decoded_twice, quote(value, safe="")):
        assert wrong != value
        result = details(server, wrong)
        assert result.status_code == 422, wrong
        assert result.json()["errorCode"] == "14_018"
    assert details(server, value).status_code == 200


def test_post_return_when_the_payment_asked_for_it(server):
    response, _, body = pay(server, redirectFromIssuerMethod="POST")
    assert_post_return(server, response, body["returnUrl"])


def test_post_return_when_the_simulator_is_set_to_post(live_server_factory):
    live = live_server_factory(SIMULATOR_RETURN_METHOD="POST", BACKGROUND_WORKER=False)
    response, _, body = pay(live)
    assert_post_return(live, response, body["returnUrl"])


def assert_post_return(live, response, return_url):
    assert response.status_code == 200
    page = response.text
    form = re.search(r"<form [^>]*data-autosubmit[^>]*>", page).group(0)
    assert 'method="post"' in form
    assert attribute(page, r"<form [^>]*data-autosubmit[^>]*>", "action") == return_url
    value = attribute(page, r'<input type="hidden" name="redirectResult"[^>]*>', "value")
    assert value.startswith("X6XtfGC3!")
    assert re.search(r'<button type="submit"[^>]*>Return to the shop</button>', page)
    script = re.search(r'<script src="([^"]+)"></script>', page).group(1)
    assert script == "/static/js/autosubmit.js"
    assert "submit()" in requests.get(live.url + script, timeout=10).text
    assert details(live, value).json()["resultCode"] == "Authorised"


def test_post_redirect_to_the_page_then_submit(server):
    answer, _, _ = start_payment(server, redirectToIssuerMethod="POST")
    response = submit_page(server, answer["action"], **GOOD_CARD)
    assert response.status_code == 303
    assert details(server, redirect_result_from(response.headers["Location"])).json()["resultCode"] == "Authorised"


# Bad input and second submissions ---------------------------------------------------------------------


def test_bad_input_shows_each_message_next_to_its_field_and_keeps_what_was_typed(server):
    answer, psp_reference, _ = start_payment(server)
    response = submit_page(
        server,
        answer["action"],
        bank="",
        card_number="8888 8800 0000 001",
        expiry_month="",
        expiry_year="",
        pin="12",
    )
    assert response.status_code == 200
    page = response.text
    assert 'role="alert"' in page
    for field, message in [
        ("bank", "Select your bank."),
        ("card_number", "Enter the 16-digit card number"),
        ("expiry_month", "Select the expiry month."),
        ("expiry_year", "Select the expiry year."),
        ("pin", "Enter your 4-digit PIN."),
    ]:
        assert re.search(rf'<p class="field-error" id="{field}-error">{re.escape(message)}', page), field
        assert re.search(rf'id="{field}" name="{field}"[^>]*aria-invalid="true" aria-describedby="{field}-error"', page)
    assert attribute(page, r'<input id="card_number"[^>]*>', "value") == "8888 8800 0000 001"
    assert not re.search(r'<input id="pin"[^>]*value=', page)

    # Fix some fields: the others stay as typed, and the PIN must be typed again.
    response = submit_page(server, answer["action"], **dict(GOOD_CARD, expiry_year=""))
    page = response.text
    assert '<option value="KNET1" selected>' in page
    assert '<option value="09" selected>' in page
    assert 'id="expiry_year-error"' in page and 'id="bank-error"' not in page
    with server.app.app_context():
        payment = db.session.execute(select(SimPayment).where(SimPayment.psp_reference == psp_reference)).scalar_one()
        assert payment.status == "awaiting_shopper"


def test_a_finished_payment_cannot_be_submitted_again(server):
    answer, psp_reference, _ = start_payment(server)
    first = submit_page(server, answer["action"], **GOOD_CARD)
    redirect_result = redirect_result_from(first.headers["Location"])

    form = {"paymentId": page_token(answer["action"]), **GOOD_CARD}
    for action in ("submit", "cancel"):
        again = requests.post(server.url + PAGE_PATH, data=dict(form, action=action), allow_redirects=False, timeout=10)
        assert again.status_code == 409
        assert "already completed" in again.text
        # It sends the shopper back to the same outcome: a link to the same result, followed by a script
        # after 3 s (no <meta refresh>, which restarts a screen reader); without JavaScript, pressed.
        link = attribute(again.text, r'<a class="button primary"[^>]*>', "href")
        assert redirect_result_from(link) == redirect_result
        assert "data-autosubmit" in again.text and "/static/js/autosubmit.js" in again.text
        assert 'http-equiv="refresh"' not in again.text

    reopened = requests.get(answer["action"]["url"], timeout=10)
    assert reopened.status_code == 200 and "already completed" in reopened.text
    assert details(server, redirect_result).json()["resultCode"] == "Authorised"
    with server.app.app_context():
        one_webhook = select(func.count()).where(SimWebhookDelivery.psp_reference == psp_reference)
        assert db.session.scalar(one_webhook) == 1


def test_a_second_submit_of_a_post_return_payment_offers_the_post_form_again(server):
    answer, _, _ = start_payment(server, redirectFromIssuerMethod="POST")
    first = submit_page(server, answer["action"], **GOOD_CARD)
    value = attribute(first.text, r'<input type="hidden" name="redirectResult"[^>]*>', "value")
    again = requests.post(
        server.url + PAGE_PATH, data={"paymentId": page_token(answer["action"]), "action": "cancel"}, timeout=10
    )
    assert again.status_code == 409 and "already completed" in again.text
    assert attribute(again.text, r'<input type="hidden" name="redirectResult"[^>]*>', "value") == value
    assert "data-autosubmit" in again.text and "/static/js/autosubmit.js" in again.text


# Expiry ----------------------------------------------------------------------------------------------


def test_an_expired_payment_is_refused_and_closed_once(live_server_factory):
    live = live_server_factory(SIMULATOR_OFFER_EXPIRY=1.0, BACKGROUND_WORKER=False)
    answer, psp_reference, body = start_payment(live)
    opened = requests.get(answer["action"]["url"], timeout=10)
    assert opened.status_code == 200 and "Card Number" in opened.text

    def expired_page():
        page = requests.get(answer["action"]["url"], timeout=10)
        return page.text if page.status_code == 410 else None

    expired = wait_for(expired_page, interval=0.1)
    assert "This payment has expired" in expired
    assert attribute(expired, r'<a class="button primary"[^>]*>', "href") == body["returnUrl"]

    late = requests.post(
        live.url + PAGE_PATH,
        data={"paymentId": page_token(answer["action"]), "action": "submit", **GOOD_CARD},
        allow_redirects=False,
        timeout=10,
    )
    assert late.status_code == 410 and "This payment has expired" in late.text

    with live.app.app_context():
        assert payments.expire_overdue() == 0  # the worker's scan finds nothing more to close
        deliveries = (
            db.session.execute(select(SimWebhookDelivery).where(SimWebhookDelivery.psp_reference == psp_reference))
            .scalars()
            .all()
        )
        assert [(d.event_code, d.success) for d in deliveries] == [("OFFER_CLOSED", "true")]


# The test-card sheet the checkout page includes -----------------------------------------------------------


def test_test_card_sheet_partial(server):
    with server.app.test_request_context():
        sheet = render_template_string('{% include "simulator/_test_cards.html" %}')
    assert "KNET Test Card [KNET1]" in sheet
    for card in ("8888880000000001", "8888880000000002", "8888880000000003", "8888880000000004", "8888880000000005"):
        assert card in sheet
    assert "09/30" in sheet and "1234" in sheet and "Cancelled" in sheet
    assert sheet.count('<th scope="col" role="columnheader">') == 4
    with server.app.test_request_context("/", headers={"Accept-Language": "ar"}):
        arabic = render_template_string('{% include "simulator/_test_cards.html" %}')
    # In the shopper's language on an Arabic checkout; KNET's bank option and Adyen's resultCodes as they are.
    assert "بطاقات الاختبار في المحاكي" in arabic and "رقم البطاقة" in arabic and "أي قيمة أخرى" in arabic
    assert '<strong lang="en" dir="ltr">KNET Test Card [KNET1]</strong>' in arabic
    assert '<code lang="en" dir="ltr">Authorised</code>' in arabic


def test_test_card_sheet_says_what_the_readme_says():
    """The README's table of test cards and the simulator's sheet: the same cards, expiries, PINs and results."""
    with open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8") as readme:
        table = readme.read().split("| Card number | Expiry | PIN | Result |", 1)[1].split("\n\n", 1)[0]
    readme = []
    for line in table.strip().splitlines()[1:]:  # after the |---| line
        card, expiry, pin, result = (cell.strip() for cell in line.strip("|").split("|"))
        result_code = re.split(r"[ ,]", result.replace("**Cancel** button: ", ""))[0]  # "Pending, then…"
        readme.append((None if card == "(any)" else card, expiry, pin, result_code))
    sheet = [(row["card"], str(row["expiry"]), str(row["pin"]), row["result"]) for row in outcomes.TEST_CARDS]
    assert sheet == readme
