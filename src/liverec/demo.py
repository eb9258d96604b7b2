"""The demo store's catalog and shoppers: deterministic, generated, no external hosts.

Owns: a believable small catalog (about 270 products in 8 categories) built from
product *families* — a phone with its cases, chargers and cables; a camera with its
lenses, cards and bag — which define what "related" means in the demo and in its
tests; product images drawn locally as SVG (shapes in web/demo/shapes.svg, coloured
per product); and synthetic shopper sessions (browse a family, compare within a
category, add to cart, sometimes buy) used to warm the online model at demo start
and by `liverec simulate`.

Why ~440 lines in one module: about half of it is the catalog's data (product
families written out as tables), and the shoppers walk exactly those families.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from .catalog import Catalog, CatalogItem
from .recommend.base import Recommender
from .types import Event

log = logging.getLogger("liverec.demo")

# (slug, name, image background tint)
CATEGORIES: Final = (
    ("phones", "Phones", "#e6ecf6"),
    ("laptops", "Laptops", "#e9edf1"),
    ("audio", "Audio", "#f3ebe4"),
    ("cameras", "Cameras", "#ebe8f3"),
    ("coffee", "Coffee", "#f3ebe2"),
    ("running", "Running", "#e4f1ea"),
    ("kitchen", "Kitchen", "#f1ede4"),
    ("outdoor", "Outdoor", "#e7efe2"),
)
PALETTE: Final = {
    "graphite": "#3b4252", "silver": "#c3c8d0", "sage": "#86a893", "coral": "#e07a5f",
    "midnight": "#25324d", "sand": "#d9c4a3", "sky": "#7fa7d9", "plum": "#8e6c8a",
    "white": "#f4f4f2", "black": "#24262b", "olive": "#7d8a4e", "rust": "#b5653b",
    "teal": "#3f8f8c", "amber": "#e0a43a", "clear": "#dfe8ee", "walnut": "#7a5236",
    "steel": "#8d96a3", "red": "#c9463d", "forest": "#3f6b4b", "orange": "#e8833a",
}  # fmt: skip

# An accessory: (id suffix, title pattern with {f} = family name, shape, price, colour)
Acc = tuple[str, str, str, float, str]
# A family: (id, name, shape of the main product, price, colour, accessories)
Family = tuple[str, str, str, float, str, tuple[Acc, ...]]

_PHONE_ACC: Final[tuple[Acc, ...]] = (
    ("case-sage", "{f} Silicone Case, Sage", "case", 29, "sage"),
    ("case-midnight", "{f} Silicone Case, Midnight", "case", 29, "midnight"),
    ("case-coral", "{f} Silicone Case, Coral", "case", 29, "coral"),
    ("case-clear", "{f} Clear Case", "case", 25, "clear"),
    ("glass", "{f} Tempered Glass Screen Protector (2-pack)", "glass", 15, "clear"),
    ("charger-30w", "30 W Fast Charger for {f}", "charger", 29, "white"),
    ("wireless", "{f} MagSnap Wireless Charger", "puck", 39, "white"),
    ("cable", "{f} USB-C Cable, 1 m", "cable", 15, "white"),
)
_LAPTOP_ACC: Final[tuple[Acc, ...]] = (
    ("sleeve-grey", "{f} Felt Sleeve, Grey", "sleeve", 39, "steel"),
    ("sleeve-sand", "{f} Felt Sleeve, Sand", "sleeve", 39, "sand"),
    ("charger-65w", "65 W USB-C Charger for {f}", "charger", 59, "white"),
    ("hub", "7-in-1 USB-C Hub for {f}", "hub", 49, "graphite"),
    ("mouse", "{f} Wireless Mouse", "mouse", 35, "silver"),
    ("stand", "Aluminium Stand for {f}", "stand", 45, "silver"),
)
_HEADPHONE_ACC: Final[tuple[Acc, ...]] = (
    ("cushions", "{f} Replacement Ear Cushions", "cushions", 29, "black"),
    ("case", "{f} Hard Carry Case", "pouch", 35, "graphite"),
    ("cable", "{f} 3.5 mm Audio Cable", "cable", 15, "black"),
    ("stand", "Walnut Headphone Stand for {f}", "hstand", 29, "walnut"),
    ("adapter", "{f} Flight Adapter", "cable", 9, "silver"),
)
_EARBUD_ACC: Final[tuple[Acc, ...]] = (
    ("tips", "{f} Memory-Foam Ear Tips (3 pairs)", "tips", 19, "graphite"),
    ("cover", "{f} Silicone Case Cover", "pouch", 15, "coral"),
    ("pad", "{f} Wireless Charging Pad", "puck", 29, "white"),
    ("hooks", "{f} Sport Ear Hooks", "tips", 12, "teal"),
    ("cable", "{f} USB-C Charging Cable", "cable", 12, "white"),
)
_CAMERA_ACC: Final[tuple[Acc, ...]] = (
    ("lens-35", "{f} 35 mm f/1.8 Lens", "lens", 349, "black"),
    ("lens-50", "{f} 50 mm f/1.4 Lens", "lens", 449, "black"),
    ("lens-zoom", "{f} 24–70 mm f/4 Zoom Lens", "lens", 899, "black"),
    ("card", "128 GB SD Card for {f}", "card", 39, "red"),
    ("battery", "{f} Spare Battery", "battery", 59, "graphite"),
    ("bag", "{f} Canvas Camera Bag", "bag", 89, "olive"),
    ("strap", "{f} Leather Strap", "strap", 35, "rust"),
    ("tripod", "Travel Tripod for {f}", "tripod", 129, "graphite"),
)
_ESPRESSO_ACC: Final[tuple[Acc, ...]] = (
    ("grinder", "Burr Grinder for {f}", "grinder", 199, "steel"),
    ("jug", "{f} Milk Jug, 600 ml", "jug", 25, "silver"),
    ("tamper", "{f} 58 mm Tamper", "tamper", 29, "walnut"),
    ("cups", "{f} Espresso Cups (set of 4)", "cups", 32, "white"),
    ("descaler", "{f} Descaler (3-pack)", "bottle", 15, "sky"),
    ("beans-house", "{f} House Blend Beans, 1 kg", "beans", 24, "rust"),
    ("beans-ethiopia", "{f} Ethiopia Guji Beans, 1 kg", "beans", 29, "amber"),
    ("beans-colombia", "{f} Colombia Huila Beans, 1 kg", "beans", 27, "forest"),
)
_POUR_ACC: Final[tuple[Acc, ...]] = (
    ("filters", "{f} Paper Filters (100)", "box", 8, "white"),
    ("kettle", "{f} Gooseneck Kettle", "kettle", 79, "black"),
    ("grinder", "{f} Hand Grinder", "grinder", 69, "steel"),
    ("beans", "{f} Light Roast Beans, 500 g", "beans", 16, "amber"),
    ("cups", "{f} Glass Cups (set of 2)", "cups", 22, "clear"),
)
_SHOE_ACC: Final[tuple[Acc, ...]] = (
    ("socks", "{f} Running Socks (3-pack)", "socks", 18, "white"),
    ("cap", "{f} Running Cap", "cap", 25, "black"),
    ("belt", "{f} Hydration Belt", "strap", 35, "black"),
    ("flask", "{f} Soft Flask, 500 ml", "bottle", 19, "sky"),
)
_KNIFE_ACC: Final[tuple[Acc, ...]] = (
    ("paring", "{f} Paring Knife, 9 cm", "knife", 39, "steel"),
    ("stone", "Whetstone 1000/6000 for {f}", "stone", 45, "teal"),
    ("board", "{f} Walnut Cutting Board", "board", 69, "walnut"),
    ("roll", "{f} Canvas Knife Roll", "pouch", 59, "olive"),
    ("strip", "{f} Magnetic Knife Strip", "board", 35, "walnut"),
)
_PAN_ACC: Final[tuple[Acc, ...]] = (
    ("small", "{f}, 20 cm", "pan", 49, "black"),
    ("lid", "Glass Lid for {f}", "lid", 29, "clear"),
    ("spatula", "{f} Oak Spatula", "spatula", 12, "walnut"),
    ("wax", "{f} Seasoning Wax", "canister", 14, "amber"),
)
_TENT_ACC: Final[tuple[Acc, ...]] = (
    ("footprint", "{f} Footprint", "pad", 49, "olive"),
    ("bag", "Down Sleeping Bag −5 °C for {f}", "sleepingbag", 189, "orange"),
    ("pad", "Insulated Sleeping Pad for {f}", "pad", 99, "teal"),
    ("headlamp", "{f} Headlamp, 400 lm", "headlamp", 39, "black"),
    ("stove", "{f} Camp Stove", "stove", 59, "steel"),
    ("gas", "Gas Canister 230 g for {f}", "canister", 7, "red"),
)
_PACK_ACC: Final[tuple[Acc, ...]] = (
    ("raincover", "{f} Rain Cover", "pouch", 25, "amber"),
    ("bladder", "{f} Hydration Bladder, 2 L", "bottle", 35, "sky"),
    ("poles", "Trekking Poles for {f}", "poles", 89, "graphite"),
)

FAMILIES: Final[dict[str, tuple[Family, ...]]] = {
    "phones": (
        ("aurora-15", "Aurora 15", "phone", 799, "midnight", _PHONE_ACC),
        ("aurora-15-pro", "Aurora 15 Pro", "phone", 1099, "graphite", _PHONE_ACC),
        ("nimbus-x", "Nimbus X", "phone", 699, "sage", _PHONE_ACC),
        ("nimbus-x-mini", "Nimbus X Mini", "phone", 599, "coral", _PHONE_ACC),
        ("pulse-8", "Pulse 8", "phone", 449, "sky", _PHONE_ACC),
        ("pulse-8-lite", "Pulse 8 Lite", "phone", 349, "silver", _PHONE_ACC),
    ),
    "laptops": (
        ("vega-14", "Vega 14", "laptop", 1299, "silver", _LAPTOP_ACC),
        ("vega-16", "Vega 16", "laptop", 1799, "graphite", _LAPTOP_ACC),
        ("atlas-13-air", "Atlas 13 Air", "laptop", 999, "sand", _LAPTOP_ACC),
        ("atlas-15", "Atlas 15", "laptop", 1149, "steel", _LAPTOP_ACC),
        ("orion-book-14", "Orion Book 14", "laptop", 849, "midnight", _LAPTOP_ACC),
    ),
    "audio": (
        ("echo-anc-700", "Echo ANC 700", "headphones", 349, "black", _HEADPHONE_ACC),
        ("echo-studio", "Echo Studio", "headphones", 249, "sand", _HEADPHONE_ACC),
        ("drift-buds-pro", "Drift Buds Pro", "earbuds", 199, "white", _EARBUD_ACC),
        ("drift-buds", "Drift Buds", "earbuds", 129, "graphite", _EARBUD_ACC),
        ("tempo-sport", "Tempo Sport", "earbuds", 149, "teal", _EARBUD_ACC),
    ),
    "cameras": (
        ("kite-m50", "Kite M50", "camera", 899, "black", _CAMERA_ACC),
        ("kite-m50-ii", "Kite M50 II", "camera", 1199, "silver", _CAMERA_ACC),
        ("falcon-z6", "Falcon Z6", "camera", 1799, "graphite", _CAMERA_ACC),
        ("falcon-z8", "Falcon Z8", "camera", 2699, "black", _CAMERA_ACC),
    ),
    "coffee": (
        ("barista-pro", "Barista Pro", "espresso", 699, "steel", _ESPRESSO_ACC),
        ("barista-mini", "Barista Mini", "espresso", 399, "red", _ESPRESSO_ACC),
        ("classico-lever", "Classico Lever", "espresso", 899, "silver", _ESPRESSO_ACC),
        ("pour-over-kit", "Pour-Over Dripper", "dripper", 39, "white", _POUR_ACC),
    ),
    "running": (
        ("stride-3", "Stride 3", "shoe", 129, "coral", _SHOE_ACC),
        ("stride-trail", "Stride Trail", "shoe", 149, "olive", _SHOE_ACC),
        ("glide-9", "Glide 9", "shoe", 139, "sky", _SHOE_ACC),
        ("tempo-racer", "Tempo Racer", "shoe", 179, "orange", _SHOE_ACC),
        ("cloudfoot", "Cloudfoot", "shoe", 159, "white", _SHOE_ACC),
    ),
    "kitchen": (
        ("kaze-chef", "Kaze Chef's Knife, 20 cm", "knife", 89, "steel", _KNIFE_ACC),
        ("hinoki-santoku", "Hinoki Santoku, 18 cm", "knife", 119, "steel", _KNIFE_ACC),
        ("forge-chef", "Forge Chef's Knife, 21 cm", "knife", 149, "steel", _KNIFE_ACC),
        ("carbon-pan-28", "Carbon Steel Pan, 28 cm", "pan", 79, "black", _PAN_ACC),
        ("cast-skillet-26", "Cast Iron Skillet, 26 cm", "pan", 69, "graphite", _PAN_ACC),
    ),
    "outdoor": (
        ("ridge-2", "Ridge 2 Tent", "tent", 299, "forest", _TENT_ACC),
        ("ridge-3", "Ridge 3 Tent", "tent", 379, "orange", _TENT_ACC),
        ("summit-ul-1", "Summit UL 1 Tent", "tent", 449, "amber", _TENT_ACC),
        ("trail-28", "Trail 28 Backpack", "backpack", 129, "teal", _PACK_ACC),
        ("trail-40", "Trail 40 Backpack", "backpack", 169, "rust", _PACK_ACC),
    ),
}

_DESCRIPTIONS: Final = {
    "phone": "A 6.3-inch OLED display, an all-day battery and a 48 MP main camera.",
    "laptop": "A quiet, fanless design with a bright display and a battery for a working day.",
    "headphones": "Over-ear headphones with active noise cancelling and 30 hours of playback.",
    "earbuds": "True wireless earbuds with a pocket-size charging case.",
    "camera": "A mirrorless body with a 26 MP sensor, in-body stabilisation and 4K video.",
    "espresso": "A 58 mm portafilter, PID temperature control and a steam wand for microfoam.",
    "dripper": "A ceramic cone dripper for one to two cups of clean, bright coffee.",
    "shoe": "A cushioned daily trainer with a breathable knit upper.",
    "knife": "Hand-sharpened stainless steel with a comfortable pakka-wood handle.",
    "pan": "Heats evenly, gets better with every use, works on induction.",
    "tent": "Freestanding, quick to pitch, with two doors and a full-coverage fly.",
    "backpack": "A ventilated back panel, hip-belt pockets and a lid with a key clip.",
}
IMAGE_PATH: Final = "/demo/img/{}.svg"
PRODUCT_PATH: Final = "/demo/p/{}"


@dataclass(frozen=True, slots=True)
class DemoProduct:
    item: CatalogItem
    family: str
    shape: str
    color: str  # a PALETTE name
    main: bool  # the family's main product (phone, camera, ...)


@dataclass(slots=True)
class DemoCatalog:
    """The generated catalog and the relations between its products."""

    products: dict[str, DemoProduct] = field(default_factory=dict)
    families: dict[str, list[str]] = field(default_factory=dict)  # family -> item ids

    @property
    def items(self) -> list[CatalogItem]:
        return [p.item for p in self.products.values()]

    def related(self, item_id: str) -> set[str]:
        """The other products of the item's family (its accessories, or its main product)."""
        family = self.products[item_id].family
        return {i for i in self.families[family] if i != item_id}

    def mains(self, category: str | None = None) -> list[str]:
        return [
            i
            for i, p in self.products.items()
            if p.main and (category is None or p.item.category == category)
        ]


def _unit(*parts: str) -> float:
    """A deterministic number in [0, 1) from strings (stable across runs and Pythons)."""
    digest = hashlib.blake2b("/".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def build_catalog() -> DemoCatalog:
    """The demo catalog: the same products, prices and stock on every call."""
    demo = DemoCatalog()
    for category, families in FAMILIES.items():
        for fam_id, name, shape, price, color, accessories in families:
            members = [(fam_id, name, shape, float(price), color, True)]
            for suffix, title, acc_shape, acc_price, acc_color in accessories:
                members.append(
                    (
                        f"{fam_id}-{suffix}",
                        title.format(f=name),
                        acc_shape,
                        acc_price,
                        acc_color,
                        False,
                    )
                )
            for item_id, title, item_shape, item_price, item_color, main in members:
                # Accessories of pricier families cost a little more; some sell out.
                factor = 1.0 if main else 1.0 + 0.2 * (price > 1000) - 0.1 * (price < 200)
                cents = 0.99 if item_price >= 10 else 0.49
                final = max(1.0, round(item_price * factor)) - 1 + cents
                in_stock = main or _unit("stock", item_id) >= 0.05
                description = _DESCRIPTIONS.get(item_shape) if main else None
                if description is None:
                    description = f"Made for the {name}. Free returns within 30 days."
                item = CatalogItem(
                    item_id=item_id,
                    title=title,
                    price=round(final, 2),
                    currency="USD",
                    image=IMAGE_PATH.format(item_id),
                    url=PRODUCT_PATH.format(item_id),
                    category=category,
                    in_stock=in_stock,
                    description=description,
                )
                demo.products[item_id] = DemoProduct(item, fam_id, item_shape, item_color, main)
                demo.families.setdefault(fam_id, []).append(item_id)
    return demo


def rating(item_id: str) -> tuple[float, int]:
    """A made-up star rating (3.9..4.9) and review count for the demo pages."""
    return round(3.9 + _unit("stars", item_id), 1), int(12 + 900 * _unit("reviews", item_id) ** 2)


# --- images -------------------------------------------------------------------------------

_SYMBOL_RE: Final = re.compile(r'<symbol id="([a-z]+)">(.*?)</symbol>', re.S)


def load_shapes(path: Path) -> dict[str, str]:
    """The product shapes of web/demo/shapes.svg: id -> SVG body (200 x 200 box)."""
    return dict(_SYMBOL_RE.findall(path.read_text(encoding="utf-8")))


def _mix(color: str, other: str, t: float) -> str:
    a = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    b = [int(other[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(a, b, strict=True))


def image_svg(product: DemoProduct, shapes: dict[str, str]) -> str:
    """A square product photo, drawn: tinted backdrop, soft shadow, the product shape.

    In a shape, {c} is the product colour, {d} a darker and {l} a lighter shade of it,
    {k} near-black details and {m} metal.
    """
    base = PALETTE[product.color]
    tint = next(t for s, _, t in CATEGORIES if s == product.item.category)
    body = shapes.get(product.shape, shapes.get("box", ""))
    colours = {
        "c": base,
        "d": _mix(base, "#000000", 0.28),
        "l": _mix(base, "#ffffff", 0.45),
        "k": "#23262d",
        "m": "#b9c0ca",
    }
    for key, value in colours.items():
        body = body.replace("{" + key + "}", value)
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 400 400" width="400" height="400">'
        '<defs><radialGradient id="bg" cx="50%" cy="38%" r="75%">'
        f'<stop offset="0" stop-color="{_mix(tint, "#ffffff", 0.55)}"/>'
        f'<stop offset="1" stop-color="{tint}"/></radialGradient></defs>'
        '<rect width="400" height="400" fill="url(#bg)"/>'
        '<ellipse cx="200" cy="324" rx="150" ry="15" fill="#1c2230" opacity=".10"/>'
        f'<g transform="translate(56 42) scale(1.44)">{body}</g></svg>'
    )


# --- shoppers -----------------------------------------------------------------------------


def shopper_session(rng: random.Random, demo: DemoCatalog) -> list[tuple[str, str]]:
    """One synthetic shopping session: (action, item_id) pairs, oldest first.

    A shopper picks a category and a family (some are more popular), looks at the
    main product and several of its accessories, sometimes compares with another
    family of the same category, may add to cart and buy, and rarely wanders off.
    """
    category = rng.choices([c for c, _, _ in CATEGORIES], weights=[5, 3, 4, 3, 4, 3, 3, 3])[0]
    families = [f[0] for f in FAMILIES[category]]
    family = rng.choices(families, weights=[1 / (r + 1) for r in range(len(families))])[0]
    members = demo.families[family]
    out: list[tuple[str, str]] = []
    current = members[0] if rng.random() < 0.75 else rng.choice(members[1:])
    cart: list[str] = []
    for _ in range(rng.randint(3, 8)):
        out.append(("view", current))
        roll = rng.random()
        if roll < 0.12 and demo.products[current].item.in_stock:
            out.append(("add_to_cart", current))
            cart.append(current)
        elif roll < 0.16:
            out.append(("click", current))
        move = rng.random()
        if move < 0.72:  # another product of the same family
            current = rng.choice([m for m in members if m != current])
        elif move < 0.90:  # compare with another family of the category
            family = rng.choice(families)
            members = demo.families[family]
            current = members[0]
        else:  # wander to any main product
            current = rng.choice(demo.mains())
            members = demo.families[demo.products[current].family]
    if cart and rng.random() < 0.4:
        out.extend(("purchase", item) for item in dict.fromkeys(cart))
    return out


def shopper_sessions(seed: int, demo: DemoCatalog) -> Iterator[list[tuple[str, str]]]:
    rng = random.Random(seed)
    while True:
        yield shopper_session(rng, demo)


def warm_up(
    recommender: Recommender,
    demo: DemoCatalog,
    sessions: int,
    seed: int = 7,
    now: float | None = None,
    spacing_s: float = 0.5,
) -> int:
    """Teach the recommender `sessions` synthetic sessions, in memory only (nothing is
    recorded in the store); returns the number of events observed."""
    now = time.time() if now is None else now
    count = 0
    source = shopper_sessions(seed, demo)
    for n in range(sessions):
        session_id = f"demo-warmup-{n}"
        start = now - (sessions - n) * spacing_s
        for step, (action, item_id) in enumerate(next(source)):
            event = Event(f"w{n}-{step}", session_id, action, item_id, start + step * 0.01)
            recommender.observe(event)
            count += 1
        recommender.forget(session_id)
    return count


async def start_demo(catalog: Catalog, recommender: Recommender, sessions: int) -> None:
    """At server start with `demo` on: write the demo catalog when the store has no
    catalog at all (never over a real one), then warm the model in memory."""
    demo = build_catalog()
    if len(catalog) == 0:
        await catalog.upsert(demo.items)
        log.info("demo catalog written to the store: %d products", len(demo.products))
    if any(catalog.get(item_id) is None for item_id in demo.products):
        log.warning("the store holds another catalog: the online model is not warmed up")
        return
    started = time.perf_counter()
    events = warm_up(recommender, demo, sessions)
    log.info(
        "online model warmed up: %d demo sessions, %d events in %.2f s",
        sessions,
        events,
        time.perf_counter() - started,
    )
