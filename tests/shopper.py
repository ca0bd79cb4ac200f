"""A shopper without JavaScript: a `requests` session that reads forms from the HTML it gets and
submits them as a browser would. Used by the end-to-end tests of the payment flow."""

import html as html_lib
import re
import time
from urllib.parse import urljoin, urlsplit

import requests

from shop.simulator.scenarios import forms_of

GOOD_CARD = {"card_number": "8888880000000001", "expiry_month": "09", "expiry_year": "2030", "pin": "1234"}


def text_of(html):
    """The visible text of a page, whitespace collapsed."""
    html = re.sub(r"(?s)<(script|style|head)\b.*?</\1>", " ", html)
    return re.sub(r"\s+", " ", html_lib.unescape(re.sub(r"<[^>]+>", " ", html))).strip()


class Shopper:
    def __init__(self, base_url):
        self.base_url = base_url
        self.http = requests.Session()

    def get(self, path, **kwargs):
        return self.http.get(urljoin(self.base_url, path), timeout=20, **kwargs)

    def submit(self, response, form_index=-1, allow_redirects=True, **values):
        """Submit a form of the page in `response` with some fields changed, as a browser does."""
        form = forms_of(response.text)[form_index]
        url = urljoin(response.url, form["action"] or response.url)
        data = dict(form["fields"], **values)
        if form["method"] == "POST":
            return self.http.post(url, data=data, timeout=20, allow_redirects=allow_redirects)
        return self.http.get(url, params=data, timeout=20, allow_redirects=allow_redirects)

    def add_to_cart(self, product_id="medjool-dates", quantity=1):
        page = self.get("/")
        csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text).group(1)
        response = self.http.post(
            urljoin(self.base_url, "/cart/add"),
            data={"csrf_token": csrf, "product_id": product_id, "quantity": str(quantity)},
            timeout=20,
        )
        assert response.status_code == 200, response.text
        return response

    def checkout_page(self):
        return self.get("/checkout")

    def new_checkout_form(self):
        """The checkout form; if an order of this cart is being paid, press "Start a new payment" first."""
        page = self.checkout_page()
        if any(f["action"].endswith("/checkout/new") for f in forms_of(page.text)):
            index = next(i for i, f in enumerate(forms_of(page.text)) if f["action"].endswith("/checkout/new"))
            page = self.submit(page, index)
        return page

    def place_order(
        self, first_name="Fatima", last_name="Al-Sabah", email="fatima@example.com", phone="5000 0000", **kw
    ):
        """Fill the checkout form and press Pay; returns the response where the redirects end."""
        page = self.checkout_page()
        assert page.status_code == 200, page.text
        form_index = next(i for i, f in enumerate(forms_of(page.text)) if "first_name" in f["fields"])
        return self.submit(page, form_index, first_name=first_name, last_name=last_name, email=email, phone=phone, **kw)

    def pay_on_knet(self, knet_page, action="submit", bank="KNET1", **card):
        """Fill the KNET page and press Submit (or Cancel); follows the way back to the shop.

        A POST return arrives as a page with an auto-submitting form: press its button, as a
        shopper without JavaScript would.
        """
        values = dict(GOOD_CARD, bank=bank, action=action, **card)
        response = self.submit(knet_page, **values)
        if "data-autosubmit" in response.text and "redirectResult" in response.text:
            response = self.submit(response)
        return response

    def wait_for_text(self, path, text, timeout=15):
        """Reload a page (as its Check again does) until it shows `text`."""
        deadline = time.monotonic() + timeout
        while True:
            page = self.get(path)
            if text in text_of(page.text):
                return page
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} never showed {text!r}; last text: {text_of(page.text)[:500]}")
            time.sleep(0.1)


def link(page, label):
    """The address of the link on `page` that reads `label` (a shopper clicks it)."""
    for href, text in re.findall(r'<a [^>]*href="([^"]+)"[^>]*>(.*?)</a>', page.text, re.S):
        if text_of(text) == label:
            return urljoin(page.url, html_lib.unescape(href))
    raise AssertionError(f"no link {label!r} on the page: {text_of(page.text)[:400]}")


def order_token(page):
    """The order's token, from the way to the page it was sent to pay on (/orders/<token>/pay)."""
    return next(urlsplit(r.url).path.split("/")[2] for r in page.history if r.url.endswith("/pay"))
