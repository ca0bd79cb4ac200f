"""Property-based fuzzing with Hypothesis: the checkout form, the cart forms, the webhook parser and
the webhook endpoint. Whatever comes in: never a 500, never an exception other than the parser's
own `Malformed`, never a stored row for bad input, and the cart and orders stay valid.

Example counts are modest so the suite stays fast; `HYPOTHESIS_MAX_EXAMPLES` raises them for a
longer local run.
"""

import json
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from shop.adyen.signature import sign
from shop.checkout.forms import normalise_kuwait_phone
from shop.db import db
from shop.models import Notification, Order, OrderEvent
from shop.storefront.cart import MAX_QUANTITY
from shop.storefront.catalog import all_products
from shop.webhooks import parsing
from tests.conftest import LiveServer, build_app
from tests.shopper import Shopper, forms_of

EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "0")) or None


def fuzz_settings(examples):
    return settings(
        max_examples=EXAMPLES or examples,
        deadline=None,
        database=None,  # no example database kept between runs
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


PRODUCT_IDS = [product.id for product in all_products()]
E164 = re.compile(r"^\+965[24569]\d{7}$")

# Text as a browser may send it: any Unicode (no lone surrogates, which UTF-8 can't carry), with
# some of the awkward cases on purpose.
any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=120)
awkward = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\u202e",
        "٠١٢٣",
        "a" * 81,
        "x" * 5000,
        "<script>alert(1)</script>",
        "' OR 1=1 --",
        "%00",
        "\r\nSet-Cookie: a=b",
        "ﷺ",
        "🙂",
        "Fatima",
        "+965 5000 0000",
        "fatima@example.com",
    ]
)
field = st.one_of(any_text, awkward)
quantities = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(["1e9", "NaN", "inf", "", " 3 ", "0x10", "١", "٣", "1.5", "-0", "99999999999999999999"]),
    any_text,
)
product_ids = st.one_of(st.sampled_from(PRODUCT_IDS), any_text)

short_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    short_text,
    awkward,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)


# The shop over HTTP and through the test client, one of each for the module ------------------------


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    server = LiveServer(tmp_path_factory.mktemp("fuzz-server"), ENV={"SIMULATOR_WEBHOOK_DELAY": "600"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fuzz_shopper(fuzz_server):
    """A shopper with a cart and the checkout form, fetched again once an order has used its key."""
    shopper = Shopper(fuzz_server.url)
    shopper.add_to_cart()
    shopper.form = None
    return shopper


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    return build_app(tmp_path_factory.mktemp("fuzz-app"), WTF_CSRF_ENABLED=False)


def rows(app, model):
    with app.app_context():
        try:
            return db.session.execute(select(func.count()).select_from(model)).scalar()
        finally:
            db.session.rollback()


# Checkout form ------------------------------------------------------------------------------------------


@fuzz_settings(40)
@given(
    # Each field valid or not, so that some examples make orders and most are refused.
    first=st.one_of(st.just("Fatima"), field),
    last=st.one_of(st.just("Al-Sabah"), field),
    email=st.one_of(st.just("fatima@example.com"), field),
    phone=st.one_of(st.sampled_from(["5000 0000", "+965 9999 1234", "٥٠٠٠٠٠٠٠"]), field),
    key=st.one_of(st.none(), field),
)
def test_checkout_form_never_fails_and_only_valid_details_make_an_order(
    fuzz_server, fuzz_shopper, first, last, email, phone, key
):
    shopper = fuzz_shopper
    if shopper.form is None:
        page = shopper.new_checkout_form()  # the order before is being paid: pay again on purpose
        shopper.form = next(f for f in forms_of(page.text) if "first_name" in f["fields"])
    data = dict(shopper.form["fields"], first_name=first, last_name=last, email=email, phone=phone)
    if key is not None:
        data["checkout_key"] = key
    response = shopper.http.post(fuzz_server.url + "/checkout", data=data, allow_redirects=False, timeout=30)

    assert response.status_code in (303, 422), response.text[:500]
    if response.status_code == 422:
        assert 'class="field-error"' in response.text
        return
    location = response.headers["Location"]
    assert location.startswith("/"), location
    match = re.match(r"^/orders/([^/]+)/pay$", location)
    if match:  # an order was made: only from valid details
        shopper.form = None  # its key is used: the next form has a new one
        with fuzz_server.app.app_context():
            order = db.session.execute(select(Order).filter_by(token=match.group(1))).scalar_one()
            assert E164.match(order.shopper_phone)
            assert 0 < len(order.shopper_first_name) <= 80 and 0 < len(order.shopper_last_name) <= 80
            assert "@" in order.shopper_email and "\x00" not in order.shopper_email
            db.session.rollback()


kuwaiti_looking = st.builds(
    lambda prefix, digits, separator: prefix + separator.join([digits[:4], digits[4:]]),
    st.sampled_from(["", "+965", "00965", "965", "+965 ", "+966"]),
    st.text("0123456789٠١٢٣٤٥٦٧٨٩", min_size=7, max_size=9),
    st.sampled_from(["", " ", "-", ".", "\u00a0"]),
)


@fuzz_settings(200)
@given(raw=st.one_of(field, kuwaiti_looking))
def test_phone_normalisation_is_total_and_idempotent(raw):
    e164 = normalise_kuwait_phone(raw)
    assert e164 is None or E164.match(e164)
    if e164 is not None:
        assert normalise_kuwait_phone(e164) == e164


# Cart forms ------------------------------------------------------------------------------------------------


@fuzz_settings(60)
@given(
    actions=st.lists(
        st.tuples(st.sampled_from(["add", "update", "remove"]), product_ids, quantities, st.booleans()), max_size=8
    )
)
def test_cart_forms_never_fail_and_the_cart_stays_valid(fuzz_app, actions):
    client = fuzz_app.test_client()
    for action, product_id, quantity, with_quantity in actions:
        data = {"product_id": product_id}
        if with_quantity:
            data["quantity"] = quantity
        response = client.post(f"/cart/{action}", data=data)
        assert response.status_code == 303, (action, data, response.status_code)
        assert response.headers["Location"].startswith("/")
    with client.session_transaction() as session:
        cart = session.get("cart", {})
    assert set(cart) <= set(PRODUCT_IDS)
    assert all(type(quantity) is int and 1 <= quantity <= MAX_QUANTITY for quantity in cart.values())
    assert client.get("/cart").status_code == 200
    assert client.get("/checkout").status_code in (200, 303)


# Webhook parser -------------------------------------------------------------------------------------------

VALID_ITEM = {
    "additionalData": {"paymentMethodVariant": "knet"},
    "amount": {"currency": "KWD", "value": 12500},
    "eventCode": "AUTHORISATION",
    "eventDate": "2025-01-01T12:00:00+03:00",
    "merchantAccountCode": "KnetDemoShopECOM",
    "merchantReference": "KNET-20250101-ABCDEF01",
    "paymentMethod": "knet",
    "pspReference": "ABCDEFGHIJKLMNOP",
    "reason": "",
    "success": "true",
}


@st.composite
def near_valid_items(draw):
    """A valid item with some fields replaced by anything JSON, or removed."""
    item = json.loads(json.dumps(VALID_ITEM))
    for name in draw(st.lists(st.sampled_from(sorted(VALID_ITEM)), max_size=4, unique=True)):
        if draw(st.booleans()):
            item.pop(name)
        else:
            item[name] = draw(json_values)
    if draw(st.booleans()):
        item["amount"] = {"currency": draw(json_values), "value": draw(json_values)}
    return item


@st.composite
def near_valid_bodies(draw):
    envelope = {
        "live": draw(st.one_of(st.sampled_from(["true", "false"]), json_values)),
        "notificationItems": [
            {"NotificationRequestItem": item} if draw(st.integers(0, 9)) else item
            for item in draw(st.lists(near_valid_items(), max_size=7))
        ],
    }
    if draw(st.integers(0, 9)) == 0:
        envelope = draw(json_values)
    return json.dumps(envelope).encode()


STORABLE = re.compile("^[^\x00\ud800-\udfff]*$")  # what PostgreSQL's text (and UTF-8) can hold


def check_envelope(envelope):
    assert len(envelope.items) >= 1
    for item in envelope.items:
        # Whatever was sent, every column value can be stored...
        for text in (item.psp_reference, item.original_reference, item.merchant_account, item.merchant_reference):
            assert isinstance(text, str) and STORABLE.match(text)
        for text in (item.event_code, item.reason or "", item.event_date or ""):
            assert isinstance(text, str) and STORABLE.match(text)
        assert item.success in (True, False, None)
        assert item.amount_value is None or (type(item.amount_value) is int and -(2**63) <= item.amount_value < 2**63)
        assert item.currency is None or (len(item.currency) == 3 and item.currency.isalpha())
        assert re.fullmatch("[0-9a-f]{64}", item.event_key)
        # ... and an item without problems is one the shop can act on, exactly as sent.
        if not item.problems and item.webhook_type is None:
            raw = item.raw
            assert item.psp_reference == raw["pspReference"] and item.psp_reference
            assert item.event_code == raw["eventCode"] and item.event_code
            assert item.success is (raw["success"] == "true")
            assert item.amount_value == raw["amount"]["value"] and item.currency == raw["amount"]["currency"]
            assert item.merchant_reference == raw["merchantReference"]


@fuzz_settings(200)
@given(body=st.one_of(st.binary(max_size=600), near_valid_bodies()))
def test_webhook_parser_accepts_or_says_malformed(body):
    try:
        envelope = parsing.parse(body)
    except parsing.Malformed as error:
        assert str(error)  # a sentence of ours, never the input
        return
    check_envelope(envelope)


# Webhook endpoint ------------------------------------------------------------------------------------------


def post_webhook(client, app, body):
    return client.post(
        "/webhooks/adyen",
        data=body,
        content_type="application/json",
        auth=(app.config["WEBHOOK_USERNAME"], app.config["WEBHOOK_PASSWORD"]),
    )


@fuzz_settings(100)
@given(body=st.one_of(st.binary(max_size=600), near_valid_bodies()))
def test_webhook_endpoint_refuses_bad_input_and_stores_nothing(fuzz_app, body):
    before = (rows(fuzz_app, Notification), rows(fuzz_app, OrderEvent))
    response = post_webhook(fuzz_app.test_client(), fuzz_app, body)
    # Nothing in these bodies is signed with our key: refused, whatever its shape.
    assert response.status_code in (400, 401), (response.status_code, body[:200])
    assert response.get_data(as_text=True) != "[accepted]"
    assert (rows(fuzz_app, Notification), rows(fuzz_app, OrderEvent)) == before


signed_text = st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=90), awkward)


@fuzz_settings(100)
@given(
    psp=st.one_of(signed_text, json_values),
    reference=st.one_of(st.just(""), signed_text, json_values),
    event_code=st.one_of(st.sampled_from(["AUTHORISATION", "OFFER_CLOSED", "REFUND", "REPORT_AVAILABLE"]), signed_text),
    success=st.one_of(st.sampled_from(["true", "false"]), json_values),
    value=st.one_of(st.integers(0, 2**40), st.integers(-(2**70), 2**70), json_values),
    currency=st.one_of(st.just("KWD"), json_values),
    reason=st.one_of(st.none(), signed_text, json_values),
    account=st.sampled_from([None, "SomeoneElseECOM"]),
    live=st.sampled_from(["false", "false", "true", None]),
)
def test_every_signed_webhook_is_acknowledged_and_stored_once_never_500(
    fuzz_app, psp, reference, event_code, success, value, currency, reason, account, live
):
    """Adyen's rule: acknowledge every notification you can authenticate. Whatever the values of
    a signed item, the answer is [accepted], the item is stored once (a repeat only counts up), and
    it is queued to be applied only if the shop can use every field and it is for this shop."""
    config = fuzz_app.config
    item = dict(
        VALID_ITEM,
        pspReference=psp,
        merchantReference=reference,
        eventCode=event_code,
        success=success,
        amount={"currency": currency, "value": value},
        reason=reason,
        merchantAccountCode=account or config["ADYEN_MERCHANT_ACCOUNT"],
    )
    try:
        item["additionalData"] = {"hmacSignature": sign(item, config["ADYEN_HMAC_KEY"])}
    except UnicodeEncodeError:  # a lone surrogate in a signed field: Adyen could not have signed it either
        return
    body = json.dumps({"live": live, "notificationItems": [{"NotificationRequestItem": item}]}).encode()

    def stored():
        with fuzz_app.app_context():
            try:
                return db.session.execute(
                    select(Notification.status, Notification.duplicates).where(
                        Notification.event_key == parsing.event_key(item)
                    )
                ).all()
            finally:
                db.session.rollback()

    before = stored()
    response = post_webhook(fuzz_app.test_client(), fuzz_app, body)
    assert (response.status_code, response.get_data(as_text=True)) == (200, "[accepted]")
    (status, duplicates) = stored()[0]
    assert len(stored()) == 1 and duplicates == (before[0][1] + 1 if before else 0)
    usable = not parsing.parse_item(item).problems
    ours = account is None and live == "false"
    if before:
        return
    if not ours:
        assert status == "flagged"
    elif not usable or str(psp).startswith("test_") or event_code not in ("AUTHORISATION", "OFFER_CLOSED"):
        assert status == "ignored"
    else:
        assert status == "pending"  # no background worker in this app: it waits to be applied
