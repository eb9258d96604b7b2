"""Web pages: the demo store, the live feed page, the widget files.

Owns: the routes of /demo (pages rendered on the server from the catalog, templates
and styles in web/demo), /feed (the operator page) and its socket /v1/feed
(server/feed.py), and /widget (server/assets.py: compressed, content-hashed, open to
every origin). The catalog API is server/catalog_api.py.
"""

from __future__ import annotations

import html
from pathlib import Path
from string import Template

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from .. import demo as demo_data
from ..catalog import Catalog, CatalogItem
from ..config import Settings
from .assets import WidgetAssets, compressed
from .feed import feed_endpoint


def routes(settings: Settings, web_dir: Path | None) -> list[BaseRoute]:
    """The routes this module serves; pages only when the web assets are there."""
    out: list[BaseRoute] = [
        WebSocketRoute("/v1/feed", feed_endpoint),
    ]
    if web_dir is None:
        return out
    feed_page = web_dir / "feed" / "index.html"
    out += [
        Route("/feed", FeedPage(feed_page)),
        Mount("/feed/static", compressed(StaticFiles(directory=web_dir / "feed"))),
        Mount("/widget", WidgetAssets(web_dir / "widget", settings.widget_max_age_s)),
    ]
    if settings.demo:
        pages = DemoPages(web_dir)
        out += [
            Route("/demo", pages.home),
            Route("/demo/c/{category}", pages.category),
            Route("/demo/p/{item_id:path}", pages.product),
            Route("/demo/cart", pages.cart),
            Route("/demo/checkout", pages.checkout),
            Route("/demo/img/{item_id}.svg", pages.image),
            Mount("/demo/static", compressed(StaticFiles(directory=web_dir / "demo"))),
        ]
    return out


NO_STORE = {"cache-control": "no-store"}
CATEGORY_NAMES = {slug: name for slug, name, _ in demo_data.CATEGORIES}


class FeedPage:
    """GET /feed: the page holds no data; its socket checks the operator."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await FileResponse(self.path, headers=NO_STORE)(scope, receive, send)


# --- the demo store ------------------------------------------------------------------------


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def money(price: float | None, currency: str) -> str:
    if price is None:
        return ""
    symbols = {"USD": "$", "EUR": "€", "GBP": "£"}
    if currency in symbols:
        return f"{symbols[currency]}{price:,.2f}"
    return f"{price:,.2f} {currency}"


def stars(item_id: str) -> str:
    value, reviews = demo_data.rating(item_id)
    full = round(value)
    glyphs = "★" * full + "☆" * (5 - full)
    return (
        f'<p class="stars" aria-label="Rated {value} out of 5, {reviews} reviews">'
        f'<span aria-hidden="true">{glyphs}</span> {value} <span class="muted">({reviews})</span>'
        "</p>"
    )


class DemoPages:
    """The Kestrel demo store, rendered from the live catalog."""

    def __init__(self, web_dir: Path) -> None:
        self.layout = Template((web_dir / "demo" / "layout.html").read_text(encoding="utf-8"))
        self.shapes = demo_data.load_shapes(web_dir / "demo" / "shapes.svg")
        self.demo = demo_data.build_catalog()

    def _page(
        self,
        title: str,
        page: str,
        main: str,
        *,
        placement: str,
        recs_title: str = "Recommended for you",
        main_attrs: str = "",
        status: int = 200,
        active: str | None = None,
    ) -> HTMLResponse:
        nav = "".join(
            f'<a href="/demo/c/{slug}"{" aria-current=page" if slug == active else ""}>'
            f"{_e(name)}</a>"
            for slug, name, _ in demo_data.CATEGORIES
        )
        body = self.layout.substitute(
            title=_e(title),
            page=page,
            nav=nav,
            main=main,
            main_attrs=main_attrs,
            placement=placement,
            k=8,
            recs_title=_e(recs_title),
        )
        return HTMLResponse(body, status_code=status, headers=NO_STORE)

    @staticmethod
    def _card(item: CatalogItem, eager: bool = False) -> str:
        loading = "eager" if eager else "lazy"
        stock = "" if item.in_stock else '<span class="badge">Sold out</span>'
        return (
            f'<li class="card"><a href="/demo/p/{_e(item.item_id)}" '
            f'data-liverec-item="{_e(item.item_id)}">'
            f'<span class="card-img"><img src="{_e(item.image or "")}" alt="" width="400" '
            f'height="400" loading="{loading}" decoding="async">{stock}</span>'
            f'<span class="card-title">{_e(item.title)}</span>'
            f'<span class="card-price">{money(item.price, item.currency)}</span></a></li>'
        )

    @staticmethod
    def _recs() -> str:
        """Where the widget draws its row (it brings its own heading and section)."""
        return '<div id="recs" class="recs-slot"></div>'

    def _catalog(self, request: Request) -> Catalog:
        catalog: Catalog = request.app.state.catalog
        return catalog

    def _mains(self, catalog: Catalog, category: str | None = None) -> list[CatalogItem]:
        found = (catalog.get(i) for i in self.demo.mains(category))
        return [i for i in found if i is not None]

    async def home(self, request: Request) -> Response:
        catalog = self._catalog(request)
        tiles = []
        for slug, name, _ in demo_data.CATEGORIES:
            mains = self._mains(catalog, slug)
            image = mains[0].image if mains else ""
            tiles.append(
                f'<li><a class="tile" href="/demo/c/{slug}"><img src="{_e(image or "")}" alt="" '
                f'width="400" height="400" loading="lazy"><span>{_e(name)}</span></a></li>'
            )
        popular = [m[0] for m in (self._mains(catalog, s) for s, _, _ in demo_data.CATEGORIES) if m]
        hero_items = [catalog.get(i) for i in ("aurora-15-pro", "echo-anc-700", "kite-m50-ii")]
        hero_imgs = "".join(
            f'<img src="{_e(i.image or "")}" alt="" width="400" height="400">'
            for i in hero_items
            if i is not None
        )
        main = (
            '<section class="hero"><div class="hero-text"><p class="eyebrow">New season</p>'
            "<h1>Gear that works together</h1>"
            "<p>Phones, cameras, coffee and trail kit, with the accessories that fit them. "
            "The more you browse, the better the picks below get.</p>"
            '<a class="btn" href="/demo/c/phones">Shop phones</a></div>'
            f'<div class="hero-art" aria-hidden="true">{hero_imgs}</div></section>'
            + self._recs()
            + '<section aria-labelledby="cat-h"><h2 id="cat-h">Shop by category</h2>'
            f'<ul class="tiles" role="list">{"".join(tiles)}</ul></section>'
            '<section aria-labelledby="pop-h"><h2 id="pop-h">Popular this week</h2>'
            f'<ul class="grid" role="list">{"".join(self._card(i) for i in popular)}</ul>'
            "</section>"
        )
        return self._page("Home", "home", main, placement="home")

    async def category(self, request: Request) -> Response:
        catalog = self._catalog(request)
        slug = request.path_params["category"]
        items = catalog.categories().get(slug)
        if not items:
            return self._not_found()
        name = CATEGORY_NAMES.get(slug, slug)
        cards = "".join(self._card(i, eager=n < 8) for n, i in enumerate(items))
        main = (
            f'<nav class="crumbs" aria-label="Breadcrumb"><a href="/demo">Home</a> / '
            f"<span>{_e(name)}</span></nav>"
            f'<h1 class="page-title">{_e(name)} <span class="muted">{len(items)} products'
            f'</span></h1><ul class="grid" role="list">{cards}</ul>' + self._recs()
        )
        return self._page(name, "category", main, placement="category", active=slug)

    async def product(self, request: Request) -> Response:
        catalog = self._catalog(request)
        item = catalog.get(request.path_params["item_id"])
        if item is None:
            return self._not_found()
        category = item.category or ""
        cat_name = CATEGORY_NAMES.get(category, category)
        if item.in_stock:
            stock = '<p class="stock ok">In stock · ships in 1–2 days</p>'
            button = (
                f'<button class="btn btn-wide" type="button" data-add-to-cart="{_e(item.item_id)}" '
                f'data-title="{_e(item.title)}" data-price="{item.price or 0}" '
                f'data-currency="{_e(item.currency)}" data-image="{_e(item.image or "")}">'
                "Add to cart</button>"
            )
        else:
            stock = '<p class="stock out">Sold out · back soon</p>'
            button = '<button class="btn btn-wide" type="button" disabled>Sold out</button>'
        main = (
            f'<nav class="crumbs" aria-label="Breadcrumb"><a href="/demo">Home</a> / '
            f'<a href="/demo/c/{_e(category)}">{_e(cat_name)}</a> / '
            f'<span aria-current="page">{_e(item.title)}</span></nav>'
            '<article class="product">'
            f'<div class="product-img"><img src="{_e(item.image or "")}" alt="{_e(item.title)}" '
            'width="400" height="400"></div>'
            f'<div class="product-info"><h1>{_e(item.title)}</h1>{stars(item.item_id)}'
            f'<p class="price">{money(item.price, item.currency)}</p>{stock}{button}'
            '<p class="added" role="status" aria-live="polite"></p>'
            f'<p class="desc">{_e(item.description or "")}</p>'
            '<ul class="perks"><li>Free shipping over $50</li><li>30-day returns</li>'
            "<li>2-year warranty</li></ul></div></article>" + self._recs()
        )
        return self._page(
            item.title,
            "product",
            main,
            placement="product",
            recs_title="Customers also viewed",
            main_attrs=f' data-liverec-item="{_e(item.item_id)}"',
            active=category,
        )

    async def cart(self, request: Request) -> Response:
        main = (
            '<h1 class="page-title">Your cart</h1><div class="cart" data-cart>'
            '<p class="muted">Loading your cart…</p></div>' + self._recs()
        )
        return self._page("Cart", "cart", main, placement="cart", recs_title="You might also like")

    async def checkout(self, request: Request) -> Response:
        main = (
            '<h1 class="page-title">Checkout</h1><div class="checkout" data-checkout>'
            '<form class="form" data-checkout-form><fieldset><legend>Shipping</legend>'
            '<label>Full name <input name="name" autocomplete="name" value="Alex Doe" required>'
            '</label><label>Email <input name="email" type="email" autocomplete="email" '
            'value="alex@example.com" required></label><label>Address <input name="address" '
            'autocomplete="street-address" value="12 Harbour Road" required></label>'
            '<label>City <input name="city" autocomplete="address-level2" value="Portsmouth" '
            'required></label></fieldset><div class="summary" data-summary></div>'
            '<button class="btn btn-wide" type="submit">Place order</button></form>'
            '<div class="done" data-done hidden tabindex="-1"><h2>Thank you!</h2>'
            "<p>Your order <strong data-order></strong> is confirmed. A receipt is on its way."
            '</p><a class="btn" href="/demo">Keep shopping</a></div></div>'
        )
        return self._page("Checkout", "checkout", main, placement="checkout")

    async def image(self, request: Request) -> Response:
        product = self.demo.products.get(request.path_params["item_id"])
        if product is None:
            return Response("no such image", status_code=404, media_type="text/plain")
        svg = demo_data.image_svg(product, self.shapes)
        return Response(
            svg,
            media_type="image/svg+xml",
            headers={"cache-control": "public, max-age=86400"},
        )

    def _not_found(self) -> HTMLResponse:
        main = (
            '<div class="empty"><h1>We could not find that page</h1>'
            '<p>It may have sold out for good.</p><a class="btn" href="/demo">Back to the store'
            "</a></div>"
        )
        return self._page("Not found", "missing", main, placement="missing", status=404)
