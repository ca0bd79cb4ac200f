"""What a shopper does in the browser, step by step, found by visible text, roles and labels."""

import re

from playwright.sync_api import expect

GOOD_CARD = {"card": "8888880000000001", "month": "09", "year": "2030", "pin": "1234"}


class BrowserShopper:
    def __init__(self, page, base_url):
        self.page = page
        self.base_url = base_url

    def fill_cart(self, product="Medjool dates", quantity=1):
        page = self.page
        page.goto(self.base_url + "/")
        card = page.locator("li.product").filter(has=page.get_by_role("heading", name=product))
        card.get_by_label("Quantity").fill(str(quantity))
        card.get_by_role("button", name=re.compile("Add to cart")).click()
        expect(page.get_by_role("heading", name="Your cart")).to_be_visible()

    def check_out(self, first_name="Fatima", last_name="Al-Sabah", email="fatima@example.com", phone="5000 0000"):
        page = self.page
        page.get_by_role("link", name="Checkout").click()
        expect(page.get_by_role("heading", name="Checkout", exact=True)).to_be_visible()
        page.get_by_label("First name").fill(first_name)
        page.get_by_label("Last name").fill(last_name)
        page.get_by_label("Email").fill(email)
        page.get_by_label("Phone").fill(phone)

    def press_pay(self):
        self.page.get_by_role("button", name=re.compile(r"^Pay .* with KNET$")).click()

    def pay_on_knet(self, cancel=False, card=None, month=None, year=None, pin=None):
        page = self.page
        expect(page.get_by_label("Card Number")).to_be_visible()
        if cancel:
            page.get_by_role("button", name="Cancel").click()
            return
        page.get_by_label("Select Your Bank").select_option(label="KNET Test Card [KNET1]")
        page.get_by_label("Card Number").fill(card or GOOD_CARD["card"])
        page.get_by_label("Expiry Month").select_option(month or GOOD_CARD["month"])
        page.get_by_label("Expiry Year").select_option(year or GOOD_CARD["year"])
        page.get_by_label("PIN").fill(pin or GOOD_CARD["pin"])
        page.get_by_role("button", name="Submit").click()

    def buy(self, **knet):
        self.fill_cart()
        self.check_out()
        self.press_pay()
        self.pay_on_knet(**knet)

    def expect_result(self, title, message):
        page = self.page
        expect(page.get_by_role("heading", name=title)).to_be_visible(timeout=20_000)
        expect(page.get_by_text(message)).to_be_visible()
        expect(page.get_by_text("12.500 KWD")).to_be_visible()
