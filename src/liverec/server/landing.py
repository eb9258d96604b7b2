"""GET /: the page a newcomer lands on, linking what this server offers.

Owns: the landing page — the demo store (when `demo` is on), the operator's live
feed, the widget script, health, readiness and metrics, and where the documentation
is — rendered from the settings; no template file, no data from the store.
"""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from .. import __version__

_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;"
    "color:#1d2330}h1{font-size:1.6rem}li{margin:.4rem 0}code{background:#f0f2f5;"
    "padding:0 .25rem;border-radius:3px}.muted{color:#5b6475}"
)


def _link(href: str, title: str, what: str) -> str:
    return f'<li><a href="{html.escape(href)}">{html.escape(title)}</a> — {what}</li>'


async def landing(request: Request) -> Response:
    settings = request.app.state.manager.settings
    links = []
    if settings.demo:
        links.append(_link("/demo", "Demo store", "a shop with live recommendations"))
    operator = "needs the admin token" if settings.admin_token else "open from this machine only"
    links += [
        _link("/feed", "Live feed", f"every event and the recommendations sent ({operator})"),
        _link("/widget/liverec.js", "Widget", "the script a store page loads"),
        _link(
            "/metrics", "Metrics", "Prometheus text: <code>process_*</code>, <code>liverec_*</code>"
        ),
        _link("/readyz", "Readiness", "store reachable, model loaded"),
        _link("/healthz", "Health", "the process is up"),
    ]
    body = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>liverec</title>"
        f'<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<style>{_STYLE}</style></head><body><h1>liverec {html.escape(__version__)}</h1>"
        "<p>Real-time recommendations over WebSocket (<code>/v1/ws</code>) and HTTP "
        "(<code>/v1/events</code>, <code>/v1/recommendations</code>).</p>"
        f"<ul>{''.join(links)}</ul>"
        '<p class="muted">Documentation: the <code>docs/</code> folder of the liverec '
        "source — <code>operations.md</code> (deploying, metrics, logs), "
        "<code>protocol.md</code> (the API), <code>widget.md</code>, "
        "<code>configuration.md</code>.</p></body></html>"
    )
    return HTMLResponse(body, headers={"cache-control": "no-store"})
