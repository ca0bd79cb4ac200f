"""The shop's catalog: a few products defined in code.

The catalog is the only source of prices. The browser sends a product id and a quantity,
never a price, so what the shopper pays is always what this module says.
Prices are integers in fils (1 KWD = 1000 fils): 12500 is 12.500 KWD.
"""

from dataclasses import dataclass

from markupsafe import Markup

from shop.i18n import current_language


@dataclass(frozen=True)
class Product:
    id: str  # slug, used in forms and in the session cart
    name: str
    name_ar: str  # the name on Arabic pages
    description: str
    description_ar: str
    price: int  # fils
    swatch: Markup  # small inline SVG drawn for this project, decorative only

    @property
    def display_name(self):
        """The name in the page's language."""
        return self.name_ar if current_language() == "ar" else self.name

    @property
    def display_description(self):
        return self.description_ar if current_language() == "ar" else self.description


def _swatch(body, background):
    """Wrap shapes in a decorative 120x80 SVG. It is hidden from screen readers: the name says it all."""
    return Markup(
        '<svg class="swatch" viewBox="0 0 120 80" width="120" height="80" aria-hidden="true" '
        f'focusable="false" xmlns="http://www.w3.org/2000/svg"><rect width="120" height="80" rx="8" '
        f'fill="{background}"/>{body}</svg>'
    )


_PRODUCTS = (
    Product(
        id="medjool-dates",
        name="Medjool dates, 1 kg",
        name_ar="تمر مجدول، 1 كغ",
        description="Soft, caramel-sweet dates in a gift box.",
        description_ar="تمر طري بحلاوة الكراميل، في علبة هدايا.",
        price=12500,
        swatch=_swatch(
            '<ellipse cx="42" cy="42" rx="12" ry="20" fill="#6b3a1e" transform="rotate(-20 42 42)"/>'
            '<ellipse cx="64" cy="40" rx="12" ry="20" fill="#7d4525"/>'
            '<ellipse cx="86" cy="42" rx="12" ry="20" fill="#5a2f17" transform="rotate(20 86 42)"/>'
            '<path d="M60 22 q4 -6 8 0" stroke="#c89b5e" stroke-width="3" fill="none" stroke-linecap="round"/>',
            "#f3e3c8",
        ),
    ),
    Product(
        id="dallah-mug",
        name="Dallah mug",
        name_ar="كوب الدلة",
        description="A stoneware mug with the coffee-pot motif, 300 ml.",
        description_ar="كوب من الخزف الحجري بنقش الدلة، سعته 300 مل.",
        price=3750,
        swatch=_swatch(
            '<rect x="38" y="24" width="36" height="40" rx="6" fill="#1f6f8b"/>'
            '<path d="M74 32 h6 a8 8 0 0 1 0 16 h-6" stroke="#1f6f8b" stroke-width="5" fill="none"/>'
            '<path d="M48 40 l8 -8 l8 8 l-8 8 z" fill="#f2c14e"/>'
            '<path d="M48 14 q4 5 0 8 M58 12 q4 5 0 8" stroke="#8aa9b4" stroke-width="2" fill="none"/>',
            "#e3eef2",
        ),
    ),
    Product(
        id="sadu-cushion",
        name="Sadu weave cushion",
        name_ar="وسادة السدو",
        description="Hand-woven in the Bedouin Sadu pattern, 45 × 45 cm.",
        description_ar="منسوجة يدويًا بنقش السدو البدوي، مقاسها 45 × 45 سم.",
        price=24125,
        swatch=_swatch(
            '<rect x="20" y="14" width="80" height="52" rx="6" fill="#9b1c1c"/>'
            '<path d="M20 30 h80 M20 50 h80" stroke="#1b1b1b" stroke-width="6"/>'
            '<path d="M26 40 l6 -6 l6 6 l-6 6 z M44 40 l6 -6 l6 6 l-6 6 z M62 40 l6 -6 l6 6 l-6 6 z '
            'M80 40 l6 -6 l6 6 l-6 6 z" fill="#f4ead5"/>',
            "#f4ead5",
        ),
    ),
    Product(
        id="cardamom-pods",
        name="Green cardamom, 100 g",
        name_ar="هيل أخضر، 100 غ",
        description="Whole pods for gahwa, tea and baking.",
        description_ar="حبات كاملة للقهوة العربية والشاي والمخبوزات.",
        price=899,
        swatch=_swatch(
            '<ellipse cx="44" cy="44" rx="9" ry="15" fill="#6e9b3a" transform="rotate(-30 44 44)"/>'
            '<ellipse cx="62" cy="38" rx="9" ry="15" fill="#86b24a" transform="rotate(10 62 38)"/>'
            '<ellipse cx="80" cy="46" rx="9" ry="15" fill="#5d8631" transform="rotate(40 80 46)"/>',
            "#eef4e2",
        ),
    ),
    Product(
        id="oud-candle",
        name="Oud candle",
        name_ar="شمعة العود",
        description="Smoky oud and amber, about 40 hours of burning.",
        description_ar="عبير العود المدخّن والعنبر، تدوم نحو 40 ساعة من الاشتعال.",
        price=7275,
        swatch=_swatch(
            '<rect x="44" y="34" width="32" height="34" rx="4" fill="#3b2a4a"/>'
            '<path d="M60 34 v-6" stroke="#1b1b1b" stroke-width="2"/>'
            '<path d="M60 12 q8 10 0 16 q-8 -6 0 -16 z" fill="#f29f05"/>',
            "#efe7f4",
        ),
    ),
    Product(
        id="dhow-print",
        name="Dhow print, A3",
        name_ar="لوحة البوم، A3",
        description="A two-colour print of a Kuwaiti dhow under sail.",
        description_ar="طبعة بلونين لسفينة بوم كويتية منشورة الأشرعة.",
        price=15040,
        swatch=_swatch(
            '<path d="M22 56 h76 l-10 10 h-56 z" fill="#7a4b26"/>'
            '<path d="M58 54 v-40 M58 16 l-26 36 h26 z" stroke="#7a4b26" stroke-width="2" fill="#fbf6ea"/>'
            '<path d="M10 70 q10 -4 20 0 t20 0 t20 0 t20 0 t20 0" stroke="#1f6f8b" stroke-width="3" fill="none"/>',
            "#dcecf5",
        ),
    ),
)

PRODUCTS = {product.id: product for product in _PRODUCTS}


def all_products():
    """Every product, in display order."""
    return list(_PRODUCTS)


def get_product(product_id):
    """The product with this id, or None (also for ids that are not strings)."""
    if not isinstance(product_id, str):
        return None
    return PRODUCTS.get(product_id)
