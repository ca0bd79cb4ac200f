"""Forms for changing the cart. Each carries a product id (hidden) and, where needed, a quantity.

The hidden product id can be tampered with, so it is checked against the catalog here,
and the Cart checks it again. No form has a price field: prices come from the catalog.
"""

from flask_babel import gettext, lazy_gettext
from flask_wtf import FlaskForm
from wtforms import HiddenField, IntegerField
from wtforms.validators import InputRequired, NumberRange, ValidationError

from shop.storefront.cart import MAX_QUANTITY
from shop.storefront.catalog import get_product

# Lazy: each is translated when shown, into the language of that page.
UNKNOWN_PRODUCT = lazy_gettext("That product is not in our catalog.")
ADD_QUANTITY = lazy_gettext("Choose a quantity from %(min)d to %(max)d.", min=1, max=MAX_QUANTITY)
UPDATE_QUANTITY = lazy_gettext("Choose a quantity from 0 to %(max)d (0 removes the item).", max=MAX_QUANTITY)


def known_product(form, field):
    if get_product(field.data) is None:
        raise ValidationError(UNKNOWN_PRODUCT)


def _product_id():
    return HiddenField(validators=[InputRequired(UNKNOWN_PRODUCT), known_product])


def _quantity(minimum, message, default=None):
    # One message for every way a quantity can be wrong (empty, "abc", "1e9", -1, 11):
    # the shopper needs to know the allowed range, not which check failed.
    return IntegerField(
        lazy_gettext("Quantity"),
        default=default,
        invalid_value_message=message,
        validators=[InputRequired(message), NumberRange(min=minimum, max=MAX_QUANTITY, message=message)],
    )


class AddToCartForm(FlaskForm):
    product_id = _product_id()
    quantity = _quantity(1, ADD_QUANTITY, default=1)


class UpdateQuantityForm(FlaskForm):
    product_id = _product_id()
    quantity = _quantity(0, UPDATE_QUANTITY)


class RemoveFromCartForm(FlaskForm):
    product_id = _product_id()


def first_error(form):
    """The first error message, as a str for a flash.

    Product errors come first: without a product a quantity means nothing."""
    for name in ("csrf_token", "product_id", "quantity"):
        field = getattr(form, name, None)
        if field is not None and field.errors:
            return str(field.errors[0])
    return gettext("Something in that form was not right; please try again.")
