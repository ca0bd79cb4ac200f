"""The shopping cart, kept in the Flask session.

The session holds only {product_id: quantity}. Names and prices are looked up in the catalog
every time, so a tampered cookie or form can change what is in the cart but never what it costs.
Every mutation is saved to the session at once.
"""

import logging
import secrets
from dataclasses import dataclass, field

from flask import session
from flask_babel import gettext

from shop.i18n import current_language
from shop.storefront.catalog import all_products, get_product

log = logging.getLogger(__name__)

SESSION_KEY = "cart"
# Names this cart in its orders (Order.cart_ref), so that two of them both paid are seen as one
# cart paid twice. A new cart, after one was bought, gets a new one.
REF_KEY = "cart_ref"
MAX_QUANTITY = 10  # per line


class CartError(ValueError):
    """A cart change was refused; the message is written for the shopper, in the page's language."""


@dataclass(frozen=True)
class CartLine:
    product_id: str
    name: str  # English: what the order record keeps
    unit_price: int  # fils
    quantity: int
    name_ar: str = field(default="", compare=False)  # shown on Arabic pages

    @property
    def display_name(self):
        """The name in the page's language."""
        return self.name_ar if self.name_ar and current_language() == "ar" else self.name

    @property
    def line_total(self) -> int:
        return self.unit_price * self.quantity


def _is_quantity(value):
    # bool is an int subclass; True must not mean "1 item".
    return isinstance(value, int) and not isinstance(value, bool)


class Cart:
    def __init__(self, items=None):
        self._items = dict(items or {})

    @classmethod
    def from_session(cls) -> "Cart":
        """The cart in the session, without unknown products or bad quantities.

        A stale cookie (a product since removed from the catalog, an old format) must never
        break a page, so anything that does not fit is dropped silently.
        """
        raw = session.get(SESSION_KEY)
        items = {}
        if isinstance(raw, dict):
            for product_id, quantity in raw.items():
                if get_product(product_id) and _is_quantity(quantity) and 1 <= quantity <= MAX_QUANTITY:
                    items[product_id] = quantity
            if len(items) != len(raw):
                log.info("Dropped %d unusable line(s) from a session cart", len(raw) - len(items))
        elif raw is not None:
            log.info("Ignored a session cart of type %s", type(raw).__name__)
        return cls(items)

    # Reading

    @property
    def lines(self) -> list[CartLine]:
        """The lines in catalog order (the session's JSON does not keep insertion order)."""
        return [
            CartLine(product.id, product.name, product.price, self._items[product.id], product.name_ar)
            for product in all_products()
            if product.id in self._items
        ]

    @property
    def total(self) -> int:
        return sum(line.line_total for line in self.lines)

    @property
    def count(self) -> int:
        return sum(self._items.values())

    @property
    def is_empty(self) -> bool:
        return not self._items

    @property
    def ref(self):
        """The cart's reference, or None before an order was made from it."""
        return session.get(REF_KEY)

    def new_ref(self):
        """The cart's reference, made the first time an order is made from it."""
        if not session.get(REF_KEY):
            session[REF_KEY] = secrets.token_urlsafe(16)
        return session[REF_KEY]

    def quantity_of(self, product_id) -> int:
        return self._items.get(product_id, 0)

    def snapshot(self) -> list[dict]:
        """The lines as plain data, for the order record (Order.lines)."""
        return [
            {
                "product_id": line.product_id,
                "name": line.name,
                "unit_price": line.unit_price,
                "quantity": line.quantity,
                "line_total": line.line_total,
            }
            for line in self.lines
        ]

    # Changing

    def add(self, product_id, quantity=1):
        """Add `quantity` of a product. Refuses, rather than caps, a line that would exceed MAX_QUANTITY,
        so the shopper is never charged for a quantity other than the one they asked for."""
        product = self._product(product_id)
        if not _is_quantity(quantity) or quantity < 1:
            raise CartError(gettext("Choose a quantity from %(min)d to %(max)d.", min=1, max=MAX_QUANTITY))
        current = self._items.get(product.id, 0)
        if current + quantity > MAX_QUANTITY:
            if current:
                raise CartError(
                    gettext(
                        "You can have at most %(max)d of %(name)s in your cart; you already have %(current)d.",
                        max=MAX_QUANTITY,
                        name=product.display_name,
                        current=current,
                    )
                )
            raise CartError(
                gettext(
                    "You can have at most %(max)d of %(name)s in your cart.",
                    max=MAX_QUANTITY,
                    name=product.display_name,
                )
            )
        self._items[product.id] = current + quantity
        self._save()

    def set_quantity(self, product_id, quantity):
        """Set a line's quantity; 0 removes the line."""
        product = self._product(product_id)
        if not _is_quantity(quantity) or not 0 <= quantity <= MAX_QUANTITY:
            raise CartError(gettext("Choose a quantity from 0 to %(max)d (0 removes the item).", max=MAX_QUANTITY))
        if quantity == 0:
            self._items.pop(product.id, None)
        else:
            self._items[product.id] = quantity
        self._save()

    def remove(self, product_id):
        """Remove a line; removing what is not there is not an error (a second click, another tab)."""
        if isinstance(product_id, str):
            self._items.pop(product_id, None)
        self._save()

    def restore(self, lines):
        """Put an order's lines (Order.lines) back in the cart: only their product ids and quantities,
        checked as any cart is; names and prices come from the catalog. Returns how many were put back."""
        restored = 0
        for line in lines or ():
            product = get_product(line.get("product_id")) if isinstance(line, dict) else None
            quantity = line.get("quantity") if product else None
            if product and _is_quantity(quantity) and 1 <= quantity <= MAX_QUANTITY:
                self._items[product.id] = quantity
                restored += 1
        self._save()
        return restored

    def clear(self):
        """Empty the cart; what is added next is a new cart, with a reference of its own."""
        self._items.clear()
        session.pop(REF_KEY, None)
        self._save()

    def _product(self, product_id):
        product = get_product(product_id)
        if product is None:
            raise CartError(gettext("That product is not in our catalog."))
        return product

    def _save(self):
        # A new dict each time, so the session notices the change.
        session[SESSION_KEY] = dict(self._items)
