"""Named places in the shop's pages where a plug-in adds a template of its own.

    hooks.add(app, "checkout.aside", "simulator/_test_cards.html")   # in the plug-in's init_app
    {% for template in hooked("checkout.aside") %}{% include template %}{% endfor %}   # in a page

The shop's pages name their places; they never name a plug-in.
"""


def init_app(app):
    app.extensions["template_hooks"] = {}
    app.jinja_env.globals["hooked"] = lambda name: tuple(app.extensions["template_hooks"].get(name, ()))


def add(app, name, template):
    """Render `template` at the place `name` of the shop's pages."""
    app.extensions["template_hooks"].setdefault(name, []).append(template)
