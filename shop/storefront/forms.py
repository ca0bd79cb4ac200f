"""Forms for changing the cart. Each carries a product id (hidden) and, where needed, a quantity.

The hidden product id can be tampered with, so it is checked against the catalog here,
and the Cart checks it again. No form has a price field: prices come from the catalog.
"""

from flask_wtf import FlaskForm
from wtforms import HiddenField, IntegerField
from wtforms.validators import InputRequired, NumberRange, ValidationError

from shop.storefront.cart import MAX_QUANTITY
from shop.storefront.catalog import get_product

UNKNOWN_PRODUCT = "That product is not in our catalog."
ADD_QUANTITY = f"Choose a quantity from 1 to {MAX_QUANTITY}."
UPDATE_QUANTITY = f"Choose a quantity from 0 to {MAX_QUANTITY} (0 removes the item)."


def known_product(form, field):
    if get_product(field.data) is None:
        raise ValidationError(UNKNOWN_PRODUCT)


def _product_id():
    return HiddenField(validators=[InputRequired(UNKNOWN_PRODUCT), known_product])


def _quantity(minimum, message, default=None):
    # One message for every way a quantity can be wrong (empty, "abc", "1e9", -1, 11):
    # the shopper needs to know the allowed range, not which check failed.
    return IntegerField(
        "Quantity",
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
    """The first error message, for a flash. Product errors come first: without a product a quantity means nothing."""
    for name in ("csrf_token", "product_id", "quantity"):
        field = getattr(form, name, None)
        if field is not None and field.errors:
            return field.errors[0]
    return "Something in that form was not right; please try again."
