"""Every shopper page and every console page, at phone, tablet and desktop widths, in English and
Arabic, light and dark: nothing wider than the screen, nothing cut off, and no axe-core violation
(axe-playwright-python, which ships its own axe.min.js: no network) but the explained ones below.

One server and one browser page per tour: the pages are reached by real purchases through the
simulator (tests/e2e/tour.py), and each is looked at in place, at every width and in both colour
schemes, by resizing the window and switching prefers-color-scheme, without loading it again.
"""

import re

import pytest
from axe_playwright_python.sync_playwright import Axe

from tests.e2e.tour import SERVER_ENV, SERVER_SETTINGS, ConsoleTour, ShopperTour
from tests.shopper import Shopper
from tests.test_console import FULL_TEST_ENV

WIDTHS = (320, 390, 768, 1280)
SCHEMES = ("light", "dark")
AXE_WIDTH = 390  # axe looks at each page once per scheme, at a phone's width
# axe rules that fail on purpose, with the reason. None so far: add one only with a reason a reviewer accepts.
EXPLAINED = {}

# What a person sees as broken: the page scrolls sideways, or an element sticks out of the window or of
# a box that clips it, or content spills out of its box (an element inside a box that scrolls
# sideways, a wide console table in its .table-wrap, is reachable: not counted); a form control in
# another typeface than the text; buttons side by side of different heights.
LAYOUT_PROBLEMS = """() => {
  const width = document.documentElement.clientWidth;
  const problems = [];
  const name = (el) => {
    let text = el.tagName.toLowerCase() + (el.id ? "#" + el.id : "");
    if (!el.id && typeof el.className === "string" && el.className.trim()) {
      text += "." + el.className.trim().split(/\\s+/).join(".");
    }
    const words = (el.innerText || "").trim().replace(/\\s+/g, " ").slice(0, 40);
    return words ? `${text} "${words}"` : text;
  };
  if (document.documentElement.scrollWidth > width) {
    // Name what sticks out furthest, also inside boxes that scroll: a positioned element can widen the page from there.
    const out = [...document.body.querySelectorAll("*")]
      .map((el) => [el, el.getBoundingClientRect()])
      .filter(([, box]) => box.right > width + 1 || box.left < -1)
      .sort((a, b) => Math.max(b[1].right - width, -b[1].left) - Math.max(a[1].right - width, -a[1].left))
      .slice(0, 3).map(([el]) => name(el));
    problems.push(`the page is ${document.documentElement.scrollWidth} px wide (furthest out: ${out.join("; ")})`);
  }
  elements: for (const el of document.body.querySelectorAll("*")) {
    const style = getComputedStyle(el);
    if (style.display === "none" || style.display === "contents" || style.visibility === "hidden") continue;
    const box = el.getBoundingClientRect();
    if (box.width <= 1 || box.height <= 1) continue;  // empty, or visually hidden on purpose
    let clip = null;
    for (let up = el.parentElement; up && up !== document.body; up = up.parentElement) {
      const overflow = getComputedStyle(up).overflowX;
      if (overflow === "auto" || overflow === "scroll") continue elements;  // scrolls in its box
      if (overflow === "hidden" || overflow === "clip") {
        const upBox = up.getBoundingClientRect();
        if (upBox.width <= 1 || upBox.height <= 1) continue elements;  // inside a visually hidden part
        clip = clip || up;
      }
    }
    if (box.left < -1 || box.right > width + 1) {
      problems.push(`${name(el)} is off the screen (${Math.round(box.left)} to ${Math.round(box.right)} px)`);
    } else if (clip) {
      const c = clip.getBoundingClientRect();
      if (box.left < c.left - 1 || box.right > c.right + 1) problems.push(`${name(el)} is cut off by ${name(clip)}`);
    }
    if (style.overflowX === "visible" && !style.display.startsWith("inline") && el.clientWidth > 0
        && el.scrollWidth > el.clientWidth + 1) {
      problems.push(`${name(el)}: its content is ${el.scrollWidth} px wide in ${el.clientWidth} px`);
    }
  }
  // Form controls in the page's typeface; buttons side by side in a row, one height.
  const typeface = getComputedStyle(document.body).fontFamily;
  const rows = new Map();
  for (const control of document.body.querySelectorAll("button, input, select, textarea, .button")) {
    const box = control.getBoundingClientRect();
    if (box.width <= 1 || box.height <= 1) continue;
    if (control.matches("button, input, select, textarea") && getComputedStyle(control).fontFamily !== typeface) {
      problems.push(`${name(control)} is not in the page's typeface`);
    }
    if (!control.matches("button, .button")) continue;
    let row = control.parentElement;
    while (row && !(getComputedStyle(row).display.endsWith("flex") && getComputedStyle(row).flexDirection === "row")) {
      row = row.parentElement;
    }
    if (!row || row === document.body) continue;
    const same = (rows.get(row) || []).filter((other) => other.bottom > box.top && other.top < box.bottom);
    for (const other of same) {
      if (Math.abs(other.height - box.height) > 1) {
        const heights = `${Math.round(box.height)} px tall beside a ${Math.round(other.height)} px button`;
        problems.push(`${name(control)} is ${heights}`);
      }
    }
    rows.set(row, [...(rows.get(row) || []), box]);
  }
  return [...new Set(problems)];
}"""

AXE_SCRIPT = Axe().axe_script  # axe-playwright-python's own axe.min.js


def axe_violations(page, rules=None):
    """[(rule, impact, first selectors, help)] that are not explained above. axe is put in the page
    once (what Axe().run does on every call), then run once per colour scheme."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE_SCRIPT)
    options = {"resultTypes": ["violations"]}
    if rules:
        options["runOnly"] = {"type": "rule", "values": rules}
    found = page.evaluate("options => axe.run(document, options).then(results => results.violations)", options)
    found = [v for v in found if v["id"] not in EXPLAINED]
    return [(v["id"], v["impact"], [node["target"] for node in v["nodes"][:3]], v["help"]) for v in found]


class Inspector:
    """Looks at each page of a tour at every width and in both schemes; keeps what is wrong."""

    def __init__(self, page):
        self.page, self.problems, self.pages = page, [], []

    def look(self, name):
        page = self.page
        self.pages.append(name)
        page.wait_for_load_state()  # its style sheets and fonts too, on a busy machine
        # Each width once, both schemes in it: a resize lays the page out again, a scheme only repaints it.
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 800})
            for scheme in SCHEMES:
                page.emulate_media(color_scheme=scheme)
                for problem in page.evaluate(LAYOUT_PROBLEMS):
                    self.problems.append(f"{name} at {width} px, {scheme}: {problem}")
                if width == AXE_WIDTH:
                    # Colour contrast is all that changes with the scheme.
                    for violation in axe_violations(page, None if scheme == "light" else ["color-contrast"]):
                        self.problems.append(f"{name} at {width} px, {scheme}: axe {violation}")
        page.emulate_media(color_scheme="light")
        page.set_viewport_size({"width": AXE_WIDTH, "height": 800})

    def walk(self, tour):
        for name in tour:
            self.look(name)
        return self


@pytest.fixture
def server(live_server_factory):
    """A server of its own for each tour, so that the tours can run side by side (pytest-xdist)."""
    return live_server_factory(ENV=SERVER_ENV, **SERVER_SETTINGS)


# What the console's lists show: a purchase of every outcome in each language, made over HTTP.
SEED_PAYMENTS = (
    {},
    {"pin": "9999"},  # refused
    {"action": "cancel"},
    {"card_number": "8888880000000003"},  # error
    {"card_number": "8888880000000004"},  # pending
    {"card_number": "8888880000000005"},  # received, then failed by its webhook
)


@pytest.fixture
def console_server(live_server_factory):
    """The console tour's own server (so that it can run beside the shopper tours, pytest-xdist), with
    orders, webhooks, deliveries and emails of every outcome in English and Arabic."""
    live = live_server_factory(ENV=SERVER_ENV, **SERVER_SETTINGS)
    for language in ("en", "ar"):
        shopper = Shopper(live.url)
        shopper.get(f"/language/{language}?next=/")
        for card in SEED_PAYMENTS:
            shopper.add_to_cart()
            back = shopper.pay_on_knet(shopper.place_order(), **card)
            assert back.status_code == 200 and "/orders/" in back.url, back.url
    return live


@pytest.fixture
def tab(browser):
    context = browser.new_context(viewport={"width": AXE_WIDTH, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    # A script error, something the CSP refused, a file that failed to load (a favicon…), or a request
    # that leaves the machine: every page works offline (axe too: its script comes with the package).
    errors = []
    context.route(
        re.compile(r"^(?!https?://127\.0\.0\.1[:/]|about:|data:)"),
        lambda route: (errors.append(f"left the machine: {route.request.url}"), route.abort()),
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: "Content Security Policy" in m.text and errors.append(m.text))
    page.on(
        "response",
        lambda r: r.status >= 400 and r.request.resource_type != "document" and errors.append(f"{r.status} {r.url}"),
    )
    yield page, errors
    context.close()


def assert_clean(inspector, errors, at_least):
    assert len(inspector.pages) >= at_least, inspector.pages
    assert inspector.problems == [], "\n".join(inspector.problems)
    assert errors == []


@pytest.mark.parametrize("language", ["en", "ar"])
def test_every_shopper_page_fits_a_phone_and_passes_axe(server, tab, language):
    page, errors = tab
    inspector = Inspector(page).walk(ShopperTour(page, server, language))
    assert_clean(inspector, errors, at_least=24)


def test_every_console_page_fits_a_phone_and_passes_axe(console_server, tab):
    page, errors = tab
    inspector = Inspector(page).walk(ConsoleTour(page, console_server))
    assert_clean(inspector, errors, at_least=12)


def test_console_login_and_locked_pages_fit_a_phone(live_server_factory, tab):
    page, errors = tab
    settings = dict(FULL_TEST_ENV, TRUSTED_HOSTS="localhost,127.0.0.1")
    locked = live_server_factory(ENV=settings)
    guarded = live_server_factory(ENV=dict(settings, CONSOLE_PASSWORD="a console password"))

    def tour():
        page.goto(locked.url + "/console/orders")
        yield "console-locked"
        page.goto(guarded.url + "/console/orders")
        yield "console-login"
        page.get_by_label("Password").fill("not it")
        # Look at the answer only once it has loaded, not at the page it replaces.
        with page.expect_navigation():
            page.get_by_role("button", name="Log in").click()
        yield "console-login-refused"

    inspector = Inspector(page).walk(tour())
    assert_clean(inspector, errors, at_least=3)
