"""The catalog and the cart: over real HTTP with CSRF on (live_server), through the test client
with CSRF off, and the Cart class on its own."""

import html
import re

import pytest
import requests

from shop.money import format_amount
from shop.storefront.cart import MAX_QUANTITY, Cart, CartError, CartLine
from shop.storefront.catalog import all_products, get_product

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
FLASH = re.compile(r'class="flash flash-(\w+)"[^>]*>(.*?)</p>', re.S)
LINE = re.compile(r'<tr id="line-([\w-]+)"[^>]*>.*?value="(\d+)".*?class="num line-total"[^>]*>([^<]+)</td>', re.S)
TOTAL = re.compile(r'class="num cart-total"><strong>([^<]+)</strong>')


def flashes(page):
    return [(category, html.unescape(text.strip())) for category, text in FLASH.findall(page)]


def cart_lines(page):
    """{product_id: (quantity, line total text)} as the cart page shows them."""
    return {pid: (int(qty), total) for pid, qty, total in LINE.findall(page)}


def cart_total(page):
    match = TOTAL.search(page)
    return match.group(1) if match else None


# ---------------------------------------------------------------- the catalog


def test_catalog_has_products_with_non_trivial_fils():
    products = all_products()
    assert 5 <= len(products) <= 6
    assert len({p.id for p in products}) == len(products)
    for product in products:
        assert isinstance(product.price, int) and product.price > 0
        assert product.name and product.name_ar and product.description
        assert str(product.swatch).startswith("<svg") and "http" not in str(product.swatch).replace(
            "http://www.w3.org/2000/svg", ""
        )
    assert any(p.price % 1000 for p in products)
    assert get_product("dallah-mug").price == 3750
    assert get_product("no-such-thing") is None
    assert get_product(None) is None
    assert get_product(["dallah-mug"]) is None


def test_catalog_page_lists_products_with_kwd_prices(client):
    page = client.get("/").text
    for product in all_products():
        assert html.escape(product.name) in page
        assert format_amount(product.price) in page
    assert "12.500 KWD" in page
    assert "3.750 KWD" in page
    assert "24.125 KWD" in page
    assert "0.899 KWD" in page
    assert page.count("Add to cart") == len(all_products())
    # Every quantity input has its own label.
    for product in all_products():
        assert f'<label for="quantity-{product.id}">' in page
        assert f'id="quantity-{product.id}"' in page


# ---------------------------------------------------------------- the Cart class


def test_cart_adds_totals_and_snapshots(app):
    with app.test_request_context():
        cart = Cart.from_session()
        assert cart.is_empty and cart.total == 0 and cart.count == 0 and cart.lines == []
        cart.add("medjool-dates", 2)
        cart.add("cardamom-pods", 3)
        cart.add("sadu-cushion")
        cart.add("cardamom-pods")

        again = Cart.from_session()  # saved to the session on every change
        assert again.count == 7
        assert again.total == 2 * 12500 + 4 * 899 + 24125 == 52721
        assert isinstance(again.total, int)
        assert again.lines[0] == CartLine("medjool-dates", "Medjool dates, 1 kg", 12500, 2)
        assert again.lines[0].line_total == 25000
        assert again.snapshot() == [
            {
                "product_id": "medjool-dates",
                "name": "Medjool dates, 1 kg",
                "unit_price": 12500,
                "quantity": 2,
                "line_total": 25000,
            },
            {
                "product_id": "sadu-cushion",
                "name": "Sadu weave cushion",
                "unit_price": 24125,
                "quantity": 1,
                "line_total": 24125,
            },
            {
                "product_id": "cardamom-pods",
                "name": "Green cardamom, 100 g",
                "unit_price": 899,
                "quantity": 4,
                "line_total": 3596,
            },
        ]


def test_cart_refuses_bad_changes_and_stays_unchanged(app):
    with app.test_request_context():
        from flask import session

        cart = Cart.from_session()
        cart.add("dallah-mug", 8)
        before = dict(session["cart"])
        with pytest.raises(CartError, match="at most 10 of Dallah mug .*already have 8"):
            cart.add("dallah-mug", 3)
        with pytest.raises(CartError, match="not in our catalog"):
            cart.add("gold-bar", 1)
        for bad in (0, -1, True, 1.0, "2", None):
            with pytest.raises(CartError):
                cart.add("dallah-mug", bad)
        for bad in (-1, MAX_QUANTITY + 1, 10**9, True, 2.0, "3", None):
            with pytest.raises(CartError):
                cart.set_quantity("dallah-mug", bad)
        with pytest.raises(CartError):
            cart.set_quantity("gold-bar", 1)
        assert session["cart"] == before
        assert Cart.from_session().quantity_of("dallah-mug") == 8

        cart.add("dallah-mug", 2)  # exactly MAX_QUANTITY is fine
        assert Cart.from_session().quantity_of("dallah-mug") == MAX_QUANTITY


def test_cart_set_quantity_remove_and_clear(app):
    with app.test_request_context():
        cart = Cart.from_session()
        cart.add("oud-candle", 1)
        cart.add("dhow-print", 1)
        cart.set_quantity("oud-candle", 5)
        assert Cart.from_session().quantity_of("oud-candle") == 5
        cart.set_quantity("oud-candle", 0)
        assert Cart.from_session().quantity_of("oud-candle") == 0
        cart.remove("dhow-print")
        cart.remove("dhow-print")  # twice is harmless
        cart.remove("gold-bar")
        assert Cart.from_session().is_empty
        cart.add("dhow-print", 2)
        cart.clear()
        assert Cart.from_session().is_empty


@pytest.mark.parametrize(
    "stored",
    [
        {
            "gone-product": 2,
            "dallah-mug": "3",
            "oud-candle": 99,
            "dhow-print": True,
            "sadu-cushion": 0,
            "cardamom-pods": -4,
            "medjool-dates": 2,
        },
        "not a dict",
        ["medjool-dates", 2],
        {"medjool-dates": 2, "dallah-mug": None},
    ],
)
def test_stale_session_cart_never_breaks_a_page(app, client, stored):
    with client.session_transaction() as session:
        session["cart"] = stored
    for url in ("/", "/cart"):
        assert client.get(url).status_code == 200
    with app.test_request_context():
        from flask import session

        session["cart"] = stored
        cart = Cart.from_session()
        assert all(line.product_id == "medjool-dates" for line in cart.lines)
    page = client.get("/cart").text
    if isinstance(stored, dict):
        assert cart_lines(page) == {"medjool-dates": (2, "25.000 KWD")}


# ---------------------------------------------------------------- cart pages through the test client


def add(client, product_id, quantity, **extra):
    return client.post("/cart/add", data=dict(product_id=product_id, quantity=quantity, **extra))


def test_add_update_remove_with_exact_totals(client):
    response = add(client, "medjool-dates", "2")
    assert response.status_code == 303 and response.location.endswith("/cart")
    add(client, "cardamom-pods", "3")
    add(client, "sadu-cushion", "1")
    page = client.get("/cart").text
    assert ("success", "Added 1 × Sadu weave cushion to your cart.") in flashes(page)
    assert cart_lines(page) == {
        "medjool-dates": (2, "25.000 KWD"),
        "sadu-cushion": (1, "24.125 KWD"),
        "cardamom-pods": (3, "2.697 KWD"),
    }
    assert cart_total(page) == "51.822 KWD"  # 25000 + 24125 + 2697 fils
    assert "Cart (6)" in page

    response = client.post("/cart/update", data={"product_id": "cardamom-pods", "quantity": "10"})
    assert response.status_code == 303 and response.location.endswith("/cart")
    page = client.get("/cart").text
    assert cart_lines(page)["cardamom-pods"] == (10, "8.990 KWD")
    assert cart_total(page) == "58.115 KWD"

    response = client.post("/cart/update", data={"product_id": "medjool-dates", "quantity": "0"})
    assert response.status_code == 303
    page = client.get("/cart").text
    assert ("success", "Removed Medjool dates, 1 kg from your cart.") in flashes(page)
    assert set(cart_lines(page)) == {"sadu-cushion", "cardamom-pods"}

    response = client.post("/cart/remove", data={"product_id": "sadu-cushion"})
    assert response.status_code == 303 and response.location.endswith("/cart")
    page = client.get("/cart").text
    assert cart_lines(page) == {"cardamom-pods": (10, "8.990 KWD")}
    assert cart_total(page) == "8.990 KWD"


def test_adding_twice_adds_up(client):
    add(client, "dallah-mug", "4")
    add(client, "dallah-mug", "5")
    assert cart_lines(client.get("/cart").text) == {"dallah-mug": (9, "33.750 KWD")}


@pytest.mark.parametrize("quantity", ["0", "11", "-1", "abc", "1e9", "1000000000", "2.5", "", " ", "9" * 5000])
def test_add_refuses_bad_quantities(client, quantity):
    add(client, "oud-candle", "2")
    response = add(client, "oud-candle", quantity)
    assert response.status_code == 303
    assert response.location.endswith("/#product-oud-candle")
    page = client.get("/").text
    assert ("error", "Choose a quantity from 1 to 10.") in flashes(page)
    assert cart_lines(client.get("/cart").text) == {"oud-candle": (2, "14.550 KWD")}


def test_quantities_typed_with_arabic_digits_are_understood(client):
    # int() reads Arabic-Indic digits; a shopper on an Arabic keyboard may type them.
    add(client, "dallah-mug", "٣")
    assert cart_lines(client.get("/cart").text) == {"dallah-mug": (3, "11.250 KWD")}


def test_add_refuses_going_over_the_limit(client):
    add(client, "dhow-print", "8")
    add(client, "dhow-print", "3")
    page = client.get("/").text
    assert ("error", "You can have at most 10 of Dhow print, A3 in your cart; you already have 8.") in flashes(page)
    assert cart_lines(client.get("/cart").text) == {"dhow-print": (8, "120.320 KWD")}


@pytest.mark.parametrize("quantity", ["11", "-1", "abc", "1e9", "1000000000", "3.0", ""])
def test_update_refuses_bad_quantities(client, quantity):
    add(client, "dallah-mug", "3")
    response = client.post("/cart/update", data={"product_id": "dallah-mug", "quantity": quantity})
    assert response.status_code == 303 and response.location.endswith("/cart")
    page = client.get("/cart").text
    assert ("error", "Choose a quantity from 0 to 10 (0 removes the item).") in flashes(page)
    assert cart_lines(page) == {"dallah-mug": (3, "11.250 KWD")}


@pytest.mark.parametrize(
    "url, data",
    [
        ("/cart/add", {"product_id": "gold-bar", "quantity": "1"}),
        ("/cart/add", {"quantity": "1"}),
        ("/cart/update", {"product_id": "gold-bar", "quantity": "1"}),
        ("/cart/update", {"product_id": "dallah-mug'; drop table", "quantity": "1"}),
        ("/cart/remove", {"product_id": "gold-bar"}),
        ("/cart/remove", {}),
    ],
)
def test_unknown_products_are_refused(client, url, data):
    add(client, "dallah-mug", "1")
    response = client.post(url, data=data)
    assert response.status_code == 303
    page = client.get(response.location).text
    assert ("error", "That product is not in our catalog.") in flashes(page)
    assert cart_lines(client.get("/cart").text) == {"dallah-mug": (1, "3.750 KWD")}


def test_prices_posted_by_the_browser_are_ignored(client):
    add(client, "sadu-cushion", "2", price="1", unit_price="1", line_total="1", total="1", name="Free")
    client.post("/cart/update", data={"product_id": "sadu-cushion", "quantity": "3", "price": "0"})
    page = client.get("/cart").text
    assert cart_lines(page) == {"sadu-cushion": (3, "72.375 KWD")}
    assert cart_total(page) == "72.375 KWD"
    with client.session_transaction() as session:
        assert session["cart"] == {"sadu-cushion": 3}  # only ids and quantities are stored


def test_empty_cart_is_friendly(client):
    page = client.get("/cart").text
    assert "Your cart is empty." in page
    assert '<a class="button" href="/">Browse the products</a>' in page
    assert 'href="/checkout"' not in page
    assert "Cart (" not in page


def test_cart_page_links_to_checkout_and_has_labelled_inputs(client):
    add(client, "dallah-mug", "1")
    page = client.get("/cart").text
    assert re.search(r'<a class="button" href="/checkout">Checkout</a>', page)
    assert '<label for="quantity-dallah-mug" class="visually-hidden">Quantity of Dallah mug</label>' in page
    assert ">Update<" in page and ">Remove<" in page


def test_actions_need_post(client):
    for url in ("/cart/add", "/cart/update", "/cart/remove"):
        assert client.get(url).status_code == 405


# ---------------------------------------------------------------- over real HTTP, CSRF on


def token(http, url):
    match = CSRF_INPUT.search(http.get(url, timeout=5).text)
    assert match, f"no csrf_token on {url}"
    return match.group(1)


def test_cart_over_http_with_csrf(live_server):
    base = live_server.url
    http = requests.Session()
    csrf = token(http, base + "/")

    response = http.post(
        base + "/cart/add",
        data={"csrf_token": csrf, "product_id": "medjool-dates", "quantity": "3"},
        allow_redirects=False,
        timeout=5,
    )
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/cart")
    http.post(
        base + "/cart/add",
        data={"csrf_token": csrf, "product_id": "cardamom-pods", "quantity": "1", "price": "0"},
        timeout=5,
    )

    page = http.get(base + "/cart", timeout=5).text
    assert cart_lines(page) == {"medjool-dates": (3, "37.500 KWD"), "cardamom-pods": (1, "0.899 KWD")}
    assert cart_total(page) == "38.399 KWD"

    # The cart is in the session cookie: it is still there on later requests.
    assert "Cart (4)" in http.get(base + "/", timeout=5).text
    assert "In your cart: 3" in http.get(base + "/", timeout=5).text

    csrf = token(http, base + "/cart")
    response = http.post(
        base + "/cart/update", data={"csrf_token": csrf, "product_id": "medjool-dates", "quantity": "11"}, timeout=5
    )
    assert response.status_code == 200 and response.history[0].status_code == 303
    assert ("error", "Choose a quantity from 0 to 10 (0 removes the item).") in flashes(response.text)
    assert cart_total(response.text) == "38.399 KWD"

    response = http.post(
        base + "/cart/update", data={"csrf_token": csrf, "product_id": "medjool-dates", "quantity": "1"}, timeout=5
    )
    assert cart_total(response.text) == "13.399 KWD"

    response = http.post(base + "/cart/remove", data={"csrf_token": csrf, "product_id": "medjool-dates"}, timeout=5)
    assert cart_lines(response.text) == {"cardamom-pods": (1, "0.899 KWD")}

    # Another browser has its own cart.
    assert "Your cart is empty." in requests.get(base + "/cart", timeout=5).text


@pytest.mark.parametrize("url", ["/cart/add", "/cart/update", "/cart/remove"])
def test_posts_without_a_valid_csrf_token_are_refused(live_server, url):
    base = live_server.url
    http = requests.Session()
    real = token(http, base + "/")
    http.post(base + "/cart/add", data={"csrf_token": real, "product_id": "dallah-mug", "quantity": "2"}, timeout=5)

    data = {"product_id": "dallah-mug", "quantity": "5"}
    assert http.post(base + url, data=data, allow_redirects=False, timeout=5).status_code == 400
    assert (
        http.post(base + url, data=dict(data, csrf_token="forged"), allow_redirects=False, timeout=5).status_code == 400
    )
    # A token from another session is no good either.
    other = token(requests.Session(), base + "/")
    assert http.post(base + url, data=dict(data, csrf_token=other), allow_redirects=False, timeout=5).status_code == 400

    assert cart_lines(http.get(base + "/cart", timeout=5).text) == {"dallah-mug": (2, "7.500 KWD")}
