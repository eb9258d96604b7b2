"""The catalog: what each item is (title, price, image, category, stock) and whether
it may be recommended.

Owns: the `CatalogItem` type and its validation, reading items from JSONL and CSV
files, and `Catalog`, the in-process cache that implements the session manager's
`CatalogView` (`is_available`, `describe`). Items live in the profile store
(`Store.upsert_items`), so every server process sharing a store shares one catalog.

Freshness: a write through `Catalog.upsert` / `Catalog.remove` updates this process's
cache at once. Other processes see it within `poll_s`: they read the store's catalog
version (one small read) and reload the whole catalog only when it changed.

Availability: while the catalog is empty every item is available, so a store that
has not imported a catalog still gets recommendations. Once it holds items, only
catalog items that are in stock are recommended; removed and out-of-stock items never.

Why ~480 lines in one module: validating an item, reading item files and the cache
all serve the one `CatalogItem` type; each file reader is a few short functions over
`parse_item`.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import io
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Final
from urllib.parse import urlsplit

from .errors import ProtocolError, StoreError
from .protocol import Limits, check_id
from .store.base import Store

log = logging.getLogger("liverec.catalog")

MAX_TITLE: Final = 200
MAX_CATEGORY: Final = 100
MAX_DESCRIPTION: Final = 5000
MAX_BRAND: Final = 100
MAX_ATTRIBUTES: Final = 50  # attribute names per item
MAX_ATTRIBUTE_VALUES: Final = 20  # values per attribute name (a list)
MAX_ATTRIBUTE_TEXT: Final = 100  # characters per attribute name or value
MAX_URL: Final = 2048
MAX_PRICE: Final = 1e9
IMPORT_BATCH: Final = 1000  # items per store write when importing a file
# Alternative column names accepted on input (feeds exported from shop systems).
ALIASES: Final = {"id": "item_id", "image_url": "image", "link": "url", "available": "in_stock"}
_CURRENCY_RE: Final = re.compile(r"[A-Z]{3}")
_URL_BAD_RE: Final = re.compile(r"[\s\"'<>`\\\x00-\x1f\x7f]")
_TRUE: Final = frozenset({"1", "true", "yes", "y", "in stock", "in_stock", ""})
_FALSE: Final = frozenset({"0", "false", "no", "n", "out of stock", "out_of_stock"})


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One item of the catalog. Prices are in `currency` units (not cents)."""

    item_id: str
    title: str
    price: float | None = None
    currency: str = "USD"
    image: str | None = None  # URL: absolute http(s), or relative to the page showing it
    url: str | None = None  # the product page, same rules as `image`
    category: str | None = None
    in_stock: bool = True
    description: str | None = None
    brand: str | None = None
    # (name, value) pairs, names in input order; a multi-valued name repeats
    attributes: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The stored and served form: every field, None for the unset ones;
        `attributes` as {name: value or [values]}."""
        out = asdict(self)
        attrs: dict[str, Any] = {}
        for name, value in self.attributes:
            have = attrs.get(name)
            if have is None:
                attrs[name] = value
            elif isinstance(have, list):
                have.append(value)
            else:
                attrs[name] = [have, value]
        out["attributes"] = attrs
        return out

    def card(self) -> dict[str, Any]:
        """What the widget needs to render a card (added to each recs item)."""
        out: dict[str, Any] = {"title": self.title, "currency": self.currency}
        for name in ("price", "image", "url", "category"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out["in_stock"] = self.in_stock
        return out


def parse_item(raw: Mapping[str, Any], limits: Limits) -> CatalogItem:
    """Validate one item from JSON or a CSV row (strings); raises ProtocolError."""
    obj = {ALIASES.get(k, k): v for k, v in raw.items()}
    item_id = check_id(obj.get("item_id"), "item_id", limits)
    try:
        return CatalogItem(
            item_id=item_id,
            title=_text(obj.get("title"), "title", MAX_TITLE, required=True) or "",
            price=_price(obj.get("price")),
            currency=_currency(obj.get("currency")),
            image=_url(obj.get("image"), "image"),
            url=_url(obj.get("url"), "url"),
            category=_text(obj.get("category"), "category", MAX_CATEGORY),
            in_stock=_flag(obj.get("in_stock")),
            description=_text(obj.get("description"), "description", MAX_DESCRIPTION),
            brand=_text(obj.get("brand"), "brand", MAX_BRAND),
            attributes=_attributes(obj.get("attributes")),
        )
    except ProtocolError as exc:
        exc.ref = item_id
        raise


def _text(value: Any, name: str, limit: int, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise ProtocolError("missing_field", f"missing {name!r}")
        return None
    if not isinstance(value, str):
        raise ProtocolError("bad_field", f"{name!r} must be a string")
    value = value.strip()
    if len(value) > limit:
        raise ProtocolError("bad_field", f"{name!r} is longer than {limit} characters")
    if not value.isascii() and not _encodable(value):  # every reader would fail on it
        raise ProtocolError("bad_text", f"{name!r} holds a lone surrogate (not text)")
    if required and not value:
        raise ProtocolError("missing_field", f"{name!r} is blank")
    return value or None


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _price(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ProtocolError("bad_field", "'price' must be a number")
    try:
        price = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ProtocolError("bad_field", "'price' must be a number") from None
    if not math.isfinite(price) or not 0 <= price <= MAX_PRICE:
        raise ProtocolError("bad_field", f"'price' must be in 0..{MAX_PRICE:g}")
    return price


def _currency(value: Any) -> str:
    if value is None or value == "":
        return "USD"
    if not isinstance(value, str) or not _CURRENCY_RE.fullmatch(value.strip().upper()):
        raise ProtocolError("bad_field", "'currency' must be a 3-letter ISO 4217 code")
    return value.strip().upper()


def _url(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_URL:
        raise ProtocolError("bad_field", f"{name!r} must be a URL of at most {MAX_URL} chars")
    text: str = value.strip()
    if not text.isascii() and not _encodable(text):
        raise ProtocolError("bad_text", f"{name!r} holds a lone surrogate (not text)")
    try:
        scheme = urlsplit(text).scheme.lower()
    except ValueError:
        raise ProtocolError("bad_field", f"{name!r} is not a URL") from None
    # No javascript:, data: or other schemes: the widget puts these into href and src.
    if scheme not in ("", "http", "https") or _URL_BAD_RE.search(text):
        raise ProtocolError("bad_field", f"{name!r} must be an http(s) or relative URL")
    return text


def _attributes(value: Any) -> tuple[tuple[str, str], ...]:
    """{name: value or [values]} (strings, numbers, booleans) as (name, value) pairs."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):  # a CSV cell: JSON text
        try:
            value = json.loads(value)
        except ValueError:
            raise ProtocolError("bad_field", "'attributes' must be a JSON object") from None
    if not isinstance(value, dict):
        raise ProtocolError("bad_field", "'attributes' must be an object of name: value")
    if len(value) > MAX_ATTRIBUTES:
        raise ProtocolError("bad_field", f"'attributes' has more than {MAX_ATTRIBUTES} names")
    pairs: list[tuple[str, str]] = []
    for name, raw in value.items():
        name = name.strip()
        values = raw if isinstance(raw, list) else [raw]
        if not name or len(name) > MAX_ATTRIBUTE_TEXT or len(values) > MAX_ATTRIBUTE_VALUES:
            raise ProtocolError(
                "bad_field",
                f"attribute names must be 1..{MAX_ATTRIBUTE_TEXT} characters with at most "
                f"{MAX_ATTRIBUTE_VALUES} values",
            )
        for v in values:
            if isinstance(v, bool):
                text = "true" if v else "false"
            elif isinstance(v, str | int | float) and not (
                isinstance(v, float) and not math.isfinite(v)
            ):
                text = str(v).strip()
            else:
                raise ProtocolError(
                    "bad_field", f"attribute {name!r}: values are strings, numbers or booleans"
                )
            if len(text) > MAX_ATTRIBUTE_TEXT:
                limit = MAX_ATTRIBUTE_TEXT
                raise ProtocolError("bad_field", f"attribute {name!r}: values over {limit} chars")
            if text:
                pairs.append((name, text))
    return tuple(pairs)


def _flag(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return value is not False
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ProtocolError("bad_field", "'in_stock' must be true or false")


# --- files ------------------------------------------------------------------------------


def read_items(path: str | Path, limits: Limits | None = None) -> list[CatalogItem]:
    """Every item of a JSONL (.jsonl, .ndjson) or CSV (.csv) file, optionally .gz.

    All or nothing: the first invalid line raises ProtocolError naming its line.
    A later line with the same item_id replaces an earlier one.
    """
    limits = limits or Limits()
    path = Path(path)
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        kind = "jsonl"
    elif name.endswith(".csv"):
        kind = "csv"
    else:
        raise ProtocolError("bad_file", f"{path}: expected a .jsonl, .ndjson or .csv file")
    opener: Any = gzip.open if path.name.lower().endswith(".gz") else open
    items: dict[str, CatalogItem] = {}
    with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
        rows = _jsonl_rows(fh) if kind == "jsonl" else _csv_rows(fh)
        for line, row in rows:
            try:
                item = parse_item(row, limits)
            except ProtocolError as exc:
                raise ProtocolError(exc.code, f"{path}:{line}: {exc.message}", exc.ref) from None
            items[item.item_id] = item
    return list(items.values())


def _jsonl_rows(fh: IO[str]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    for line, text in enumerate(fh, 1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise ProtocolError("bad_json", f"line {line}: not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ProtocolError("bad_frame", f"line {line}: each line must be a JSON object")
        yield line, obj


def _csv_rows(fh: IO[str]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    reader = csv.DictReader(fh)
    if reader.fieldnames is None:
        return
    for row in reader:
        extra = row.pop(None, None)  # type: ignore[call-overload]
        if extra:
            raise ProtocolError("bad_field", f"line {reader.line_num}: more cells than columns")
        yield reader.line_num, {k.strip(): v for k, v in row.items() if k is not None}


def write_jsonl(items: Iterable[CatalogItem]) -> str:
    """Items as JSONL text (what `read_items` reads)."""
    out = io.StringIO()
    for item in items:
        out.write(json.dumps(item.to_dict(), ensure_ascii=False, separators=(",", ":")))
        out.write("\n")
    return out.getvalue()


async def import_items(
    store: Store, items: Sequence[CatalogItem], on_batch: Callable[[int], None] | None = None
) -> int:
    """Upsert items into the store in batches; returns the catalog version after.
    `on_batch(n)` is told the size of each batch written (progress)."""
    version = await store.catalog_version()
    for start in range(0, len(items), IMPORT_BATCH):
        batch = items[start : start + IMPORT_BATCH]
        version = await store.upsert_items({i.item_id: i.to_dict() for i in batch})
        if on_batch is not None:
            on_batch(len(batch))
    return version


# --- the cache ----------------------------------------------------------------------------


class Catalog:
    """The catalog of one server process: a cache of the store's items.

    Reads (`is_available`, `describe`, `get`) are plain dict lookups on the event
    loop; writes go to the store first, then to the cache.
    """

    def __init__(self, store: Store, poll_s: float | None = 2.0) -> None:
        if poll_s is not None and poll_s <= 0:
            raise ValueError("poll_s must be > 0 (or None: never poll)")
        self.store = store
        self.poll_s = poll_s
        self.version = -1  # nothing loaded yet
        self._items: dict[str, CatalogItem] = {}
        self._cards: dict[str, dict[str, Any]] = {}
        self._categories: dict[str, list[CatalogItem]] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._poll_failed = False
        # Called with (items upserted or changed, ids removed) after every change of
        # this cache, from the event loop; a listener must be cheap per item.
        self.listeners: list[Callable[[Sequence[CatalogItem], Sequence[str]], None]] = []
        # Called with the new version after each write (liverec.notify tells the other
        # processes, so they need not wait for their next poll).
        self.on_write: Callable[[int], Awaitable[None]] | None = None

    # --- CatalogView (what the session manager asks) ---------------------------------

    def is_available(self, item_id: str) -> bool:
        if not self._items:
            return True
        item = self._items.get(item_id)
        return item is not None and item.in_stock

    def describe(self, item_ids: list[str]) -> list[dict[str, Any]] | None:
        if not self._items:
            return None
        cards = self._cards
        return [cards.get(i, {}) for i in item_ids]

    # --- reading ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._items)

    def get(self, item_id: str) -> CatalogItem | None:
        return self._items.get(item_id)

    def items(self) -> list[CatalogItem]:
        return list(self._items.values())

    def categories(self) -> dict[str, list[CatalogItem]]:
        """Items by category, in catalog order (items without one are left out)."""
        if self._categories is None:
            groups: dict[str, list[CatalogItem]] = {}
            for item in self._items.values():
                if item.category is not None:
                    groups.setdefault(item.category, []).append(item)
            self._categories = groups
        return self._categories

    # --- writing ------------------------------------------------------------------------

    async def upsert(self, items: Sequence[CatalogItem]) -> int:
        """Write items to the store, then to this cache; returns the catalog version."""
        version = await self.store.upsert_items({i.item_id: i.to_dict() for i in items})
        self._apply(version, items, ())
        if self.on_write is not None:
            await self.on_write(version)
        return version

    async def remove(self, item_ids: Sequence[str]) -> int:
        version = await self.store.remove_items(item_ids)
        self._apply(version, (), item_ids)
        if self.on_write is not None:
            await self.on_write(version)
        return version

    def _apply(self, version: int, items: Sequence[CatalogItem], gone: Sequence[str]) -> None:
        if version <= self.version:
            return  # a reload already brought this write (or a newer one)
        for item in items:
            self._items[item.item_id] = item
            self._cards[item.item_id] = item.card()
        for item_id in gone:
            self._items.pop(item_id, None)
            self._cards.pop(item_id, None)
        self._categories = None
        self._notify(items, gone)
        if version == self.version + 1:
            self.version = version
        # else: another process wrote in between; the next poll reloads everything.

    # --- loading and polling ----------------------------------------------------------

    async def load(self) -> None:
        """Read the whole catalog from the store (raises StoreError when unreachable)."""
        version, raw = await self.store.all_items()
        items: dict[str, CatalogItem] = {}
        limits = Limits(max_id_chars=10_000)  # stored ids were checked when written
        for item_id, data in raw.items():
            try:
                items[item_id] = parse_item({**data, "item_id": item_id}, limits)
            except ProtocolError as exc:  # written by a newer or older liverec
                log.warning("catalog item %r skipped: %s", item_id, exc.message)
        old, self._items = self._items, items
        self._cards = {i: item.card() for i, item in items.items()}
        self._categories = None
        self.version = version
        if self.listeners:
            changed = [item for i, item in items.items() if old.get(i) != item]
            self._notify(changed, [i for i in old if i not in items])

    def _notify(self, items: Sequence[CatalogItem], gone: Sequence[str]) -> None:
        for listener in self.listeners:
            try:
                listener(items, gone)
            except Exception:  # a listener's bug must not stop the catalog
                log.exception("catalog listener failed")

    async def refresh(self) -> bool:
        """Reload when the store's catalog version moved; True when it did."""
        if await self.store.catalog_version() == self.version:
            return False
        await self.load()
        return True

    async def start(self) -> None:
        """Poll the store for changes made by other processes (when poll_s is set)."""
        if self.poll_s is not None and self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(
                self._poll(self.poll_s), name="liverec-catalog-poll"
            )

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None

    async def _poll(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                if await self.refresh():
                    log.info("catalog reloaded: %d items (version %d)", len(self), self.version)
                self._poll_failed = False
            except StoreError as exc:
                if not self._poll_failed:  # once per outage
                    log.warning("catalog poll failed: %s", exc)
                self._poll_failed = True
            except Exception:
                log.exception("catalog poll failed")
