"""The storefront: catalog and cart."""

from flask import Blueprint

bp = Blueprint("storefront", __name__)

from shop.storefront import views  # noqa: E402,F401
