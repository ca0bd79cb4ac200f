"""Catalog and cart pages, and the three cart actions.

Every action is a POST (CSRF-checked by the app's CSRFProtect) answered with a 303 redirect to a
page, so a reload never repeats it. A refused change leaves the cart as it was and says why in a flash.
"""

import logging

from flask import flash, has_request_context, redirect, render_template, url_for
from flask_babel import gettext

from shop.storefront import bp
from shop.storefront.cart import MAX_QUANTITY, Cart, CartError
from shop.storefront.catalog import all_products, get_product
from shop.storefront.forms import AddToCartForm, RemoveFromCartForm, UpdateQuantityForm, first_error

log = logging.getLogger(__name__)


@bp.app_context_processor
def inject_cart_count():
    """The item count for the header on every page. Emails rendered by the worker have no session."""
    if not has_request_context():
        return {"cart_count": 0}
    return {"cart_count": Cart.from_session().count}


def _see_other(endpoint, anchor=None):
    return redirect(url_for(endpoint, _anchor=anchor), code=303)


@bp.get("/")
def catalog():
    return render_template(
        "storefront/catalog.html",
        products=all_products(),
        cart=Cart.from_session(),
        max_quantity=MAX_QUANTITY,
    )


@bp.get("/cart")
def cart():
    return render_template(
        "storefront/cart.html",
        cart=Cart.from_session(),
        max_quantity=MAX_QUANTITY,
        checkout_url=url_for("checkout.checkout"),
    )


@bp.post("/cart/add")
def add():
    form = AddToCartForm()
    product = get_product(form.product_id.data)
    anchor = f"product-{product.id}" if product else None
    if not form.validate():
        log.info("Refused an add to cart: %s", first_error(form))
        flash(first_error(form), "error")
        return _see_other("storefront.catalog", anchor)
    try:
        Cart.from_session().add(product.id, form.quantity.data)
    except CartError as error:
        log.info("Refused an add to cart: %s", error)
        flash(str(error), "error")
        return _see_other("storefront.catalog", anchor)
    flash(
        gettext("Added %(quantity)d × %(name)s to your cart.", quantity=form.quantity.data, name=product.display_name),
        "success",
    )
    return _see_other("storefront.cart")


@bp.post("/cart/update")
def update():
    form = UpdateQuantityForm()
    if not form.validate():
        log.info("Refused a cart update: %s", first_error(form))
        flash(first_error(form), "error")
        return _see_other("storefront.cart")
    product = get_product(form.product_id.data)
    try:
        Cart.from_session().set_quantity(product.id, form.quantity.data)
    except CartError as error:
        log.info("Refused a cart update: %s", error)
        flash(str(error), "error")
        return _see_other("storefront.cart")
    if form.quantity.data == 0:
        flash(gettext("Removed %(name)s from your cart.", name=product.display_name), "success")
    else:
        flash(
            gettext("%(name)s: quantity is now %(quantity)d.", name=product.display_name, quantity=form.quantity.data),
            "success",
        )
    return _see_other("storefront.cart")


@bp.post("/cart/remove")
def remove():
    form = RemoveFromCartForm()
    if not form.validate():
        log.info("Refused a cart removal: %s", first_error(form))
        flash(first_error(form), "error")
        return _see_other("storefront.cart")
    product = get_product(form.product_id.data)
    Cart.from_session().remove(product.id)
    flash(gettext("Removed %(name)s from your cart.", name=product.display_name), "success")
    return _see_other("storefront.cart")
