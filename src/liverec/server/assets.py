"""The widget's static files: compressed, content-hashed, cached, open to every origin.

Owns: finding web/ (in the installed package or the source tree), serving
web/widget/, and gzip for the other static files of web/ (the demo
store's and the feed's). Each widget file is read once at start and kept with its
gzip form and a content hash. Two URLs per file:

- `/widget/liverec.js`: the stable name stores put in their pages; cached briefly
  (`widget_max_age_s`) and revalidated with its ETag, so a new release reaches
  every page within minutes;
- `/widget/liverec.<hash>.js`: the same bytes under a name that changes with them;
  `immutable`, cached for a year. `/widget/manifest.json` maps each stable name to
  its hashed one.

The body is gzipped when the request accepts gzip (`Vary: Accept-Encoding`). Every
response carries `Access-Control-Allow-Origin: *`: the widget is an ES module, which a
store on another origin loads under CORS.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

HASH_CHARS = 12
IMMUTABLE = "public, max-age=31536000, immutable"
GZIP_MIN_BYTES = 500  # smaller bodies gain nothing from compression


def compressed(app: ASGIApp) -> ASGIApp:
    """Other static files (the demo store's and the feed's): gzipped on the fly when
    accepted; they are small and few, so nothing is kept."""
    return GZipMiddleware(app, minimum_size=GZIP_MIN_BYTES)


def default_web_dir() -> Path | None:
    """The web assets (widget, demo store, feed page): liverec/web in an installed
    wheel (pyproject.toml ships the repository's web/ as the package liverec.web); in
    a source checkout, the repository's web/ beside src/."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "web", package.parents[1] / "web"):
        if (candidate / "widget").is_dir():
            return candidate
    return None


@dataclass(frozen=True)
class Asset:
    name: str  # liverec.js
    hashed: str  # liverec.<hash>.js
    body: bytes
    gzipped: bytes
    media_type: str
    etag: str


def load(path: Path) -> Asset:
    body = path.read_bytes()
    digest = hashlib.sha256(body).hexdigest()[:HASH_CHARS]
    stem, dot, suffix = path.name.rpartition(".")
    hashed = f"{stem}.{digest}.{suffix}" if dot else f"{path.name}.{digest}"
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if media_type.startswith("text/") or media_type.endswith("javascript"):
        media_type += "; charset=utf-8"
    return Asset(
        name=path.name,
        hashed=hashed,
        body=body,
        gzipped=gzip.compress(body, compresslevel=9, mtime=0),
        media_type=media_type,
        etag=f'W/"{digest}"',  # weak: the gzipped and the plain body share it
    )


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding value allows gzip (`gzip;q=0` does not)."""
    for part in header.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and _q(q[2:]) == 0.0)
    return False


def _q(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        return 1.0


class WidgetAssets:
    """ASGI app mounted at /widget."""

    def __init__(self, directory: Path, max_age_s: int) -> None:
        self.max_age_s = max_age_s
        self.by_name: dict[str, Asset] = {}
        self.by_hash: dict[str, Asset] = {}
        for path in sorted(directory.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                asset = load(path)
                self.by_name[asset.name] = asset
                self.by_hash[asset.hashed] = asset
        manifest = {a.name: a.hashed for a in self.by_name.values()}
        self.manifest = json.dumps(manifest, sort_keys=True).encode()

    def hashed_url(self, name: str) -> str | None:
        asset = self.by_name.get(name)
        return None if asset is None else f"/widget/{asset.hashed}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = self.respond(request)
        await response(scope, receive, send)

    def respond(self, request: Request) -> Response:
        open_cors = {"access-control-allow-origin": "*"}
        if request.method not in ("GET", "HEAD"):
            return Response(
                "method not allowed", 405, {**open_cors, "allow": "GET, HEAD"}, "text/plain"
            )
        name = request.url.path.rsplit("/", 1)[-1]
        if name == "manifest.json":
            headers = {**open_cors, "cache-control": f"public, max-age={self.max_age_s}"}
            return Response(self.manifest, 200, headers, "application/json")
        asset = self.by_hash.get(name)
        cache = IMMUTABLE
        if asset is None:
            asset = self.by_name.get(name)
            cache = f"public, max-age={self.max_age_s}"
        if asset is None:
            return Response("not found", 404, open_cors, "text/plain")
        headers = {
            **open_cors,
            "cache-control": cache,
            "etag": asset.etag,
            "vary": "Accept-Encoding",
            "link": f'</widget/{asset.hashed}>; rel="canonical"',
        }
        if asset.etag in request.headers.get("if-none-match", ""):
            return Response(None, 304, headers)
        body = asset.body
        if accepts_gzip(request.headers.get("accept-encoding", "")):
            body = asset.gzipped
            headers["content-encoding"] = "gzip"
        if request.method == "HEAD":
            headers["content-length"] = str(len(body))
            return Response(None, 200, headers, asset.media_type)
        return Response(body, 200, headers, asset.media_type)
