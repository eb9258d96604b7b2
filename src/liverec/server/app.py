"""The Starlette application: lifespan, routes, static web assets.

Owns: building the app from Settings, opening the store and the recommender in the
lifespan (passed explicitly, no module globals), and closing them in order on
shutdown: stop accepting, let uvicorn close sockets with 1012, flush the store.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from ..catalog import Catalog
from ..config import Settings
from ..demo import start_demo
from ..demo_model import demo_serving_settings
from ..metrics import Metrics
from ..notify import CatalogNotices, ModelNotices
from ..recommend import attach_catalog, build_recommender, warm_from_log
from ..recommend.ab import ABRecommender
from ..recommend.base import MODEL_FIGURES, Recommender
from ..recommend.blend import BlendedRecommender
from ..recommend.follower import LogFollower
from ..sessions import SessionManager
from ..store import limits_from, open_store
from ..store.base import Store
from . import apidocs, catalog_api, http, pages
from .assets import default_web_dir
from .feed import FeedHub
from .feed_relay import FeedRelay
from .gate import Gate
from .gc_policy import GcPolicy
from .landing import landing
from .origins import OriginPolicy
from .ws import quiet_denial_logs, websocket_endpoint

log = logging.getLogger("liverec.server")


def create_app(
    settings: Settings,
    store: Store | None = None,
    recommender: Recommender | None = None,
) -> Starlette:
    """The liverec ASGI app. `store`/`recommender` override what settings would open."""
    metrics = Metrics()
    quiet_denial_logs()
    origins = OriginPolicy(settings.allowed_origins, settings.log_repeat_s)  # checked at start

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Each part is closed by the stack, in reverse order, as soon as it is open: a
        # start that fails half-way closes what it had opened (the store included).
        async with contextlib.AsyncExitStack() as stack:
            the_store = store or open_store(settings.store_url, limits_from(settings))
            await the_store.open()
            stack.push_async_callback(the_store.close)
            the_recommender = recommender or build_recommender(demo_serving_settings(settings))
            stack.push_async_callback(the_recommender.close)
            await the_recommender.start()
            warmed = await warm_from_log(the_recommender, the_store, settings.warm_events)
            follower: LogFollower | None = None
            if settings.follow_log and the_store.shared_log:  # other processes' events too
                follower = LogFollower(
                    the_store, the_recommender, settings.follow_block_s, settings.follow_batch
                )
                stack.push_async_callback(follower.close)
                await follower.start()
            metrics.add_gauge(
                "liverec_followed_events_total",
                "events of other processes applied from the shared log",
                functools.partial(_followed, follower),
                "counter",
            )
            # The catalog is read from the store here and polled for other processes' writes.
            catalog = Catalog(the_store, settings.catalog_poll_s)
            stack.push_async_callback(catalog.close)
            await catalog.load()
            attach_catalog(the_recommender, catalog)  # the content model follows the catalog
            if settings.demo:
                await start_demo(catalog, the_recommender, settings.demo_warmup_sessions)
            await catalog.start()
            if the_store.shared_log:  # other processes hear of catalog writes at once
                notices = CatalogNotices(the_store, catalog)
                stack.push_async_callback(notices.close)
                await notices.start()
                promotions = ModelNotices(the_store, the_recommender)  # and of promotions
                stack.push_async_callback(promotions.close)
                await promotions.start()
            manager = SessionManager(settings, the_store, the_recommender, metrics, catalog=catalog)
            metrics.set_models(functools.partial(_arm_versions, the_recommender))
            for name, help in MODEL_FIGURES.items():
                kind = "counter" if name.endswith("_total") else "gauge"
                read = functools.partial(_figure, the_recommender, name)
                metrics.add_gauge(name, help, read, kind)
            feed = FeedHub(settings, catalog)
            manager.listeners.append(feed.on_entry)
            stack.push_async_callback(feed.close)
            await feed.start()
            if the_store.shared_log and settings.feed_watch_s is not None:  # every process
                relay = FeedRelay(the_store, feed, settings.feed_watch_s, settings.feed_queue)
                stack.push_async_callback(relay.close)
                await relay.start()
            if settings.learn_in_serve:  # single machine: the continuous learner in this process
                from ..learn.learner import LearnConfig, Learner  # torch only when learning

                learner = Learner(the_store, LearnConfig.from_settings(settings))
                stack.push_async_callback(learner.close)  # a round stops after its epoch
                await learner.start()
            app.state.manager = manager
            app.state.catalog = catalog
            app.state.feed = feed
            gc_policy = GcPolicy(settings.gc_full_interval_s, metrics)
            stack.push_async_callback(gc_policy.close)
            gc_policy.start()  # last: what start-up built is frozen
            stack.callback(setattr, manager, "accepting", False)  # first thing at shutdown
            log.info(
                "liverec ready: store=%s model=%s (%d logged events replayed)",
                the_store.url,
                the_recommender.version,
                warmed,
            )
            yield
        log.info("liverec stopped; store flushed")

    routes: list[BaseRoute] = [
        WebSocketRoute("/v1/ws", websocket_endpoint),
        Route("/healthz", http.healthz),
        Route("/readyz", http.readyz),
        Route("/metrics", http.metrics),
        Route("/v1/events", http.post_events, methods=["POST"]),
        Route("/v1/recommendations", http.get_recommendations),
        Route("/v1/sessions/{session_id}", http.get_session),
    ]
    web_dir = Path(settings.web_dir) if settings.web_dir else default_web_dir()
    if web_dir is not None and not web_dir.is_dir():
        web_dir = None
    routes.extend(catalog_api.routes())
    routes.extend(apidocs.routes(settings))
    routes.extend(pages.routes(settings, web_dir))
    routes.append(Route("/", landing))
    if web_dir is not None:
        routes.append(Mount("/web", StaticFiles(directory=web_dir, html=True), name="web"))
    # CORS for the HTTP API follows the WebSocket origin allowlist (one normalisation);
    # the server's own origin needs no CORS. Bearer tokens travel in a header, never in
    # cookies. The gate (Host allowlist, forwarded headers, GET rates) comes first.
    middleware = [
        Middleware(Gate, settings=settings),
        Middleware(
            _OriginCORS,
            policy=origins,
            allow_origins=list(settings.allowed_origins),
            allow_methods=["GET", "POST", "PUT"],
            allow_headers=["authorization", "content-type"],
            allow_credentials=False,
            max_age=600,
        ),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers={ClientDisconnect: _client_gone},
    )
    app.state.origins = origins
    return app


class _OriginCORS(CORSMiddleware):
    """Starlette's CORS with origins compared in the origin policy's normal form."""

    def __init__(self, app: ASGIApp, /, policy: OriginPolicy, **options: Any) -> None:
        super().__init__(app, **options)
        self.policy = policy

    def is_allowed_origin(self, origin: str) -> bool:
        return self.policy.listed(origin)


async def _client_gone(request: Request, exc: Exception) -> Response:
    """A body cut off (body_timeout_s, or the client left): nobody reads the answer."""
    return Response(status_code=400)


def _arm_versions(recommender: Recommender) -> dict[str, str]:
    """The version each A/B arm serves (for /metrics' liverec_model_info)."""
    if isinstance(recommender, BlendedRecommender):  # content blended into the arms' lists
        recommender = recommender.inner
    if isinstance(recommender, ABRecommender):
        return {"a": recommender.a.version, "b": recommender.b.version}
    return {"a": recommender.version}


def _followed(follower: LogFollower | None) -> float:
    return float(follower.applied) if follower is not None else 0.0


def _figure(recommender: Recommender, name: str) -> float:
    return recommender.figures().get(name, 0.0)
