"""What a shopper does in the browser, step by step, found by visible text, roles and labels."""

import re

from playwright.sync_api import expect

GOOD_CARD = {"card": "8888880000000001", "month": "09", "year": "2030", "pin": "1234"}

# The simulated KNET page's own labels, in the language the shop asked for (shopperLocale).
KNET_LABELS = {
    "en": {
        "bank": "Select Your Bank",
        "card": "Card Number",
        "month": "Expiry Month",
        "year": "Expiry Year",
        "pin": "PIN",
        "submit": "Submit",
        "cancel": "Cancel",
    },
    "ar": {
        "bank": "اختر البنك",
        "card": "رقم البطاقة",
        "month": "شهر الانتهاء",
        "year": "سنة الانتهاء",
        "pin": "الرقم السري",
        "submit": "تنفيذ",
        "cancel": "إلغاء",
    },
}


class BrowserShopper:
    """`translate` gives the shop's text in the page language (the app's own catalog for Arabic)."""

    def __init__(self, page, base_url, translate=None, language="en"):
        self.page = page
        self.base_url = base_url
        self._ = translate or (lambda text: text)
        self.knet = KNET_LABELS[language]

    def fill_cart(self, product="Medjool dates", quantity=1):
        page = self.page
        page.goto(self.base_url + "/")
        card = page.locator("li.product").filter(has=page.get_by_role("heading", name=product))
        card.get_by_label(self._("Quantity")).fill(str(quantity))
        card.get_by_role("button", name=re.compile(self._("Add to cart"))).click()
        expect(page.get_by_role("heading", name=self._("Your cart"))).to_be_visible()

    def check_out(self, first_name="Fatima", last_name="Al-Sabah", email="fatima@example.com", phone="5000 0000"):
        page = self.page
        page.get_by_role("link", name=self._("Checkout")).click()
        expect(page.get_by_role("heading", name=self._("Checkout"), exact=True)).to_be_visible()
        page.get_by_label(self._("First name")).fill(first_name)
        page.get_by_label(self._("Last name")).fill(last_name)
        page.get_by_label(self._("Email"), exact=True).fill(email)
        page.get_by_label(self._("Phone"), exact=True).fill(phone)

    def press_pay(self):
        pay = re.escape(self._("Pay %(amount)s with KNET")).replace(re.escape("%(amount)s"), ".*")
        self.page.get_by_role("button", name=re.compile(f"^{pay}$")).click()

    def pay_on_knet(self, cancel=False, card=None, month=None, year=None, pin=None):
        page = self.page
        labels = self.knet
        expect(page.get_by_label(labels["card"])).to_be_visible()
        if cancel:
            page.get_by_role("button", name=labels["cancel"]).click()
            return
        page.get_by_label(labels["bank"]).select_option(value="KNET1")  # "KNET Test Card [KNET1]"
        page.get_by_label(labels["card"]).fill(card or GOOD_CARD["card"])
        page.get_by_label(labels["month"]).select_option(month or GOOD_CARD["month"])
        page.get_by_label(labels["year"]).select_option(year or GOOD_CARD["year"])
        page.get_by_label(labels["pin"], exact=True).fill(pin or GOOD_CARD["pin"])
        page.get_by_role("button", name=labels["submit"]).click()

    def buy(self, **knet):
        self.fill_cart()
        self.check_out()
        self.press_pay()
        self.pay_on_knet(**knet)

    def expect_result(self, title, message):
        page = self.page
        expect(page.get_by_role("heading", name=self._(title))).to_be_visible(timeout=20_000)
        expect(page.get_by_text(self._(message))).to_be_visible()
