"""Catalog and cart pages (placeholder until the storefront is built)."""

from flask import render_template

from shop.storefront import bp


@bp.get("/")
def catalog():
    return render_template("base.html")


@bp.get("/cart")
def cart():
    return render_template("base.html")
