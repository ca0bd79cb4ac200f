"""One cart, one payment (issue 12, point 1), over real HTTP with two tabs of one browser.

Two tabs share the browser's cookies: here two Shoppers share one cookie jar. While tab A's order is
being paid on KNET's page, /checkout in tab B (or in tab A after Back) shows that order and the
three ways on; a new payment is only made on purpose, and if both are paid the later one is flagged
duplicate_payment, linked to the first, in the console and in `flask orders list`. Once any order of
the cart is paid, the cart is empty in every tab.
"""

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select

from shop.db import db
from shop.models import Order
from tests.conftest import process_env
from tests.console_helpers import steps_of
from tests.fault_helpers import api_calls, form_posting_to
from tests.shopper import GOOD_CARD, Shopper, forms_of, link, text_of
from tests.webhook_helpers import emails, order_status, wait_for

ROOT = Path(__file__).resolve().parent.parent
FAST = {"SIMULATOR_WEBHOOK_DELAY": "0"}
IN_PROGRESS = "Your payment is in progress"


def two_tabs(server):
    tab_a, tab_b = Shopper(server.url), Shopper(server.url)
    tab_b.http.cookies = tab_a.http.cookies  # one browser: one cookie jar
    return tab_a, tab_b


def at_knet(page):
    return page.status_code == 200 and "Card Number" in text_of(page.text)


def payment_id(url):
    return parse_qs(urlsplit(url).query)["paymentId"][0]


def orders(server):
    """[(id, reference, status, cart_ref, duplicate_of_id)] oldest first."""
    with server.app.app_context():
        try:
            return db.session.execute(
                select(Order.id, Order.reference, Order.status, Order.cart_ref, Order.duplicate_of_id).order_by(
                    Order.id
                )
            ).all()
        finally:
            db.session.rollback()


def test_a_second_tab_and_back_from_knet_show_the_payment_in_progress(live_server_factory):
    server = live_server_factory(ENV=FAST)
    tab_a, tab_b = two_tabs(server)
    tab_a.add_to_cart()
    knet_page = tab_a.place_order()
    assert at_knet(knet_page)
    [(_, reference, status, _, _)] = orders(server)
    assert status == "pending"

    for page in (tab_b.checkout_page(), tab_a.checkout_page()):  # tab B; tab A after Back
        assert page.status_code == 200
        text = text_of(page.text)
        assert IN_PROGRESS in text and reference in text
        assert "Paying again would charge you twice" in text
        assert not any("first_name" in form["fields"] for form in forms_of(page.text)), "a second checkout form"
        form_posting_to(page, "/checkout/new")  # "Start a new payment", on purpose only
        assert "Start a new payment" in text

    # "Go back to the KNET page": the same payment page, without a second /payments.
    page = tab_b.checkout_page()
    back_at_knet = tab_b.get(link(page, "Go back to the KNET page"))
    assert at_knet(back_at_knet)
    assert payment_id(back_at_knet.url) == payment_id(knet_page.url)
    # "Check the result": still waiting, with the way back to KNET.
    result = tab_b.get(link(page, "Check the result"))
    assert "Waiting for the payment result" in text_of(result.text)
    assert link(result, "Continue to KNET to pay").endswith("/pay")
    assert len(orders(server)) == 1
    assert len(api_calls(server, "/payments")) == 1


def cli_orders_list(server):
    """`flask --app wsgi orders list` in a process of its own, on the test's database."""
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "orders", "list"],
        cwd=ROOT,
        env=process_env(server.app),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_new_payment_on_purpose_and_both_paid_flags_the_later_as_duplicate(live_server_factory):
    server = live_server_factory(ENV=FAST)
    tab_a, tab_b = two_tabs(server)
    tab_a.add_to_cart()
    knet_a = tab_a.place_order()
    assert at_knet(knet_a)

    # Tab B: "Start a new payment" gives a new checkout form, and Pay a new order of the same cart.
    form_page = tab_b.new_checkout_form()
    assert "A new payment: if you already paid on KNET's page, check that order's result first." in text_of(
        form_page.text
    )
    assert any("first_name" in form["fields"] for form in forms_of(form_page.text))
    knet_b = tab_b.place_order()
    assert at_knet(knet_b) and payment_id(knet_b.url) != payment_id(knet_a.url)
    (first_id, first, _, cart_ref, _), (second_id, second, _, cart_ref_b, _) = orders(server)
    assert cart_ref == cart_ref_b and first != second

    # The shopper pays in both tabs: A first, then B.
    assert "Payment successful" in text_of(tab_a.pay_on_knet(knet_a).text)
    wait_for(lambda: order_status(server.app, first) == "paid", message="the first order paid")
    assert "Your cart is empty." in text_of(tab_b.get("/cart").text)  # paid in tab A: empty in tab B
    tab_b.pay_on_knet(knet_b)
    wait_for(lambda: order_status(server.app, second) == "paid", message="the second order paid")
    assert [(o.reference, o.status, o.duplicate_of_id) for o in orders(server)] == [
        (first, "paid", None),
        (second, "paid", first_id),
    ]
    flag = f"duplicate_payment of order #{first_id}"

    console = Shopper(server.url)
    listing = text_of(console.get("/console/orders").text)
    assert listing.count(flag) == 1
    assert re.search(rf"{second} .*?{re.escape(flag)}", listing)
    timeline = console.get(f"/console/orders/{second_id}")
    assert flag in text_of(timeline.text)
    assert f'href="/console/orders/{first_id}"' in timeline.text  # the link to the first payment's order
    assert "duplicate_payment" in [kind for kind, _ in steps_of(timeline.text)]
    assert flag not in text_of(console.get(f"/console/orders/{first_id}").text)

    lines = {line.split()[3]: line for line in cli_orders_list(server).splitlines()[1:]}  # ID, date, time, ref
    assert lines[second].endswith(flag)
    assert lines[first].endswith("-")

    wait_for(lambda: len(emails(server.app)) == 2, message="both emails queued")
    assert sorted((e.order_id, e.kind) for e in emails(server.app)) == [
        (first_id, "paid"),
        (second_id, "duplicate_paid"),
    ]


def test_an_order_paid_in_one_tab_empties_the_cart_in_the_other(live_server_factory):
    """Tab A pays on KNET's page and is closed before it comes back; the webhook makes the order paid.
    Tab B's cart is empty, and its checkout says the cart was bought, in which order."""
    server = live_server_factory(ENV=FAST)
    tab_a, tab_b = two_tabs(server)
    tab_a.add_to_cart()
    knet_page = tab_a.place_order()
    assert "Your cart is empty." not in text_of(tab_b.get("/cart").text)
    index, _ = form_posting_to(knet_page, "PaymentHTTP.htm")
    back = tab_a.submit(knet_page, index, allow_redirects=False, bank="KNET1", action="submit", **GOOD_CARD)
    assert back.status_code == 303  # the way back to the shop, never followed
    [(_, reference, _, _, _)] = orders(server)
    wait_for(lambda: order_status(server.app, reference) == "paid", message="the order paid by its webhook")

    cart = tab_b.get("/cart")
    assert "Your cart is empty." in text_of(cart.text)
    assert f"This cart was bought already, in order {reference}." in text_of(cart.text)
    checkout = tab_b.checkout_page()
    assert "Your cart is empty. Add a product before checking out." in text_of(checkout.text)
