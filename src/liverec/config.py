"""One settings object for the whole server.

Owns: every tunable limit and timeout, its unit, its default, its documentation,
and how it is read from `LIVEREC_*` environment variables and `liverec serve` flags.
No I/O beyond reading the environment mapping it is given.

Each field's metadata carries `help` (shown in `--help` and docs/configuration.md).
A value of `None` on an optional limit means "off".

Why one module of ~650 lines: most of it is the Settings class, one field per
setting with its help text, and the bounds table (`BOUNDS`), choices and parsing
belong with those fields: flags, variables and docs/configuration.md are all
generated from this one place.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints

from .errors import ConfigError

MIN_SECRET = 32  # bytes: HS256 keys and the admin token (RFC 7518 3.2: at least the hash size)


def _s(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, slots=True)
class Settings:
    # --- network
    host: str = _s("127.0.0.1", "address to bind")
    port: int = _s(8000, "TCP port to bind")
    workers: int = _s(
        1,
        "server processes on this machine sharing the listening socket (more than 1 needs "
        "a Redis or Redis Cluster store); a worker that dies is started again",
    )
    # --- storage and model
    store_url: str = _s(
        "embedded://./data/liverec.db",
        "profile store: embedded://PATH (SQLite file), memory:// (tests only), "
        "redis://HOST:PORT/DB, redis+cluster://HOST:PORT (any node of a Redis Cluster)",
    )
    model_path: str | None = _s(
        None, "GRU4Rec checkpoint directory (or a models/ registry); none = online recommender"
    )
    model_poll_s: float = _s(2.0, "seconds between checks of model_path for a new checkpoint")
    model_threads: int = _s(1, "torch threads for serving the session model")
    ab_model_path: str | None = _s(
        None, "A/B test: a second checkpoint (or registry) serving ab_share of the sessions"
    )
    ab_share: float = _s(0.0, "A/B test: share of sessions (0..1, stable per session) on B")
    model_max_batch: int = _s(256, "most events scored in one micro-batch")
    model_pipeline: int = _s(
        2, "micro-batches sent to the scorer before the first answer is back (1: one at a time)"
    )
    model_max_sessions: int = _s(50_000, "session hidden states kept in memory (LRU beyond)")
    model_rescore: int = _s(
        128, "candidates re-scored exactly beyond k after the cheap (int8 or low-rank) scoring"
    )
    model_quantize: bool = _s(True, "score items with int8 weights, then re-score exactly")
    model_process: bool = _s(
        True,
        "score in a worker process (no GIL shared with the event loop) instead of a thread "
        "(loads the model a second time)",
    )
    model_quantize_gru: bool = _s(
        True, "run the GRU layers with int8 weights too (reads a quarter of the bytes per step)"
    )
    model_rank: int = _s(
        64,
        "score items first with a rank-r factorisation of the item matrix (SVD, int8), then "
        "re-score the best k + model_rescore exactly; 0 (or >= hidden size): full rank",
    )
    model_replay_max: int = _s(50, "items replayed to rebuild a session's hidden state")
    model_score_timeout_s: float = _s(
        10.0,
        "seconds a scoring worker may take to answer a micro-batch; then it is killed and "
        "replaced, and its batch is scored on the server's thread",
    )
    model_refeed_events: int = _s(
        100_000,
        "newest events kept in memory and fed to a model directory loaded while serving "
        "(a vsknn or hybrid session index then knows the live sessions; ~200 B each; 0 = off)",
    )
    # --- continuous learning (liverec learn, docs/learning.md)
    learn_in_serve: bool = _s(
        False,
        "run the continuous learner inside `liverec serve` (one machine; model_path must be "
        "a models/ registry)",
    )
    learn_mode: str = _s(
        "finetune",
        "how a candidate is made: finetune (from the served model, new items added) or "
        "retrain (from scratch on the window)",
    )
    learn_family: str = _s(
        "gru4rec",
        "the model families a round chooses between on its held-out sessions: gru4rec, "
        "vsknn, hybrid (weight chosen there) or auto (the best of the three)",
    )
    learn_interval_s: float | None = _s(
        600.0, "seconds after a round when the next starts if any event arrived (none = off)"
    )
    learn_min_events: int | None = _s(
        10_000, "new events that start a round without waiting for learn_interval_s (none = off)"
    )
    learn_window_events: int = _s(200_000, "latest events a candidate is trained and judged on")
    learn_holdout_fraction: float = _s(
        0.1, "latest share of the window's sessions held out to judge candidate and served model"
    )
    learn_min_holdout_cases: int = _s(
        200, "fewest held-out next-item cases a round needs (fewer: wait for more events)"
    )
    learn_margin: float = _s(
        0.005,
        "promote when the candidate's Recall@20 and MRR@20 are each at least the served "
        "model's minus this",
    )
    learn_epochs: int = _s(2, "training epochs per candidate")
    learn_preset: str = _s("diginetica", "training parameters of a candidate (as train --preset)")
    learn_set: tuple[str, ...] = _s(
        (), "training parameter overrides KEY=VALUE, comma list (as train --set)"
    )
    learn_threads: int = _s(1, "torch threads for training a candidate")
    learn_poll_s: float = _s(1.0, "seconds between reads of an event log that had nothing new")
    learn_keep_versions: int = _s(
        20, "model directories kept: the served one, and this many served and others each"
    )
    learn_group: str = _s("liverec-learn", "the learner's consumer group on the event log")
    # --- protocol limits
    max_frame_bytes: int = _s(16384, "largest client frame accepted, bytes (close 1009 above)")
    max_id_chars: int = _s(128, "longest session, event or item id, characters")
    default_k: int = _s(10, "recommendations per list when hello gives no k")
    max_k: int = _s(100, "largest k a client may ask for")
    hello_timeout_s: float = _s(10.0, "time allowed between connect and hello, seconds (1008)")
    rating_min: float = _s(1.0, "lowest rating a 'rate' event may carry (bad_field below)")
    rating_max: float = _s(5.0, "highest rating a 'rate' event may carry (bad_field above)")
    # --- flow control
    events_per_s: float = _s(
        50.0, "sustained frames per second per connection, every kind counted (token bucket)"
    )
    events_burst: int = _s(100, "token bucket size: frames a connection may send at once")
    outbound_queue: int = _s(32, "frames queued per connection before the slow-client policy")
    max_connections: int = _s(10000, "open WebSocket connections in total (1013 above)")
    max_connections_per_address: int = _s(
        256, "open WebSocket connections from one client address (1013 above)"
    )
    address_events_per_s: float = _s(
        500.0,
        "sustained frames (and HTTP events) per second from one client address, all its "
        "connections",
    )
    address_events_burst: int = _s(1000, "token bucket size per client address")
    flood_penalty_s: float = _s(
        10.0,
        "after a connection is cut for flooding, refuse new sockets from its address for this "
        "long, before the WebSocket handshake (HTTP 429; 0: off)",
    )
    max_tracked_addresses: int = _s(100_000, "client addresses whose rates are tracked (LRU)")
    trusted_proxies: tuple[str, ...] = _s(
        (),
        "proxy addresses or networks (CIDR) whose X-Forwarded-For, Forwarded or X-Real-IP "
        "name the client and scheme (comma list); from other peers these headers are ignored",
    )
    # --- liveness
    ping_interval_s: float | None = _s(20.0, "server heartbeat ping interval, seconds")
    ping_timeout_s: float | None = _s(20.0, "close a connection whose ping is unanswered, seconds")
    idle_timeout_s: float | None = _s(1800.0, "close a connection with no client frame, seconds")
    shutdown_grace_s: float = _s(5.0, "time to drain sockets and flush the store on SIGTERM")
    gc_full_interval_s: float | None = _s(
        60.0,
        "Python's automatic garbage collector is off while serving (its pauses made the p99); "
        "a full collection runs every this many seconds instead (none: Python's default)",
    )
    # --- store contents
    session_max_items: int = _s(200, "items kept per session sequence")
    profile_seed_items: int = _s(
        20, "a returning user's recent items that seed a new session's model state (0: off)"
    )
    recent_max_items: int = _s(100, "recent interactions kept per user profile")
    profile_max_items: int = _s(
        1000, "purchases and ratings kept per user profile (each); the oldest are dropped"
    )
    session_ttl_s: float | None = _s(7 * 86400.0, "expire a session this long after last use")
    profile_ttl_s: float | None = _s(180 * 86400.0, "expire a profile this long after last use")
    dedup_ttl_s: float = _s(86400.0, "remember event ids for duplicate detection this long")
    event_log_max: int | None = _s(None, "approximate cap on event log entries (none = keep all)")
    event_log_partitions: int = _s(
        8, "Redis Cluster: streams the event log is split over, by session (fixed per log)"
    )
    # --- online recommender
    popularity_half_life_s: float = _s(3600.0, "half-life of the time-decayed popularity")
    warm_events: int = _s(
        100_000, "newest logged events replayed into the online model at start (0: none)"
    )
    follow_log: bool = _s(
        True,
        "learn from the events other processes record: follow the shared event log "
        "(Redis, Redis Cluster; the embedded store has one process)",
    )
    follow_block_s: float = _s(
        1.0,
        "longest wait of one blocking read of the shared log (kept under half the "
        "store's socket timeout)",
    )
    follow_batch: int = _s(500, "most log events read and applied per partition in one read")
    cooc_window: int = _s(5, "co-occurrence: link each item to this many previous ones")
    cooc_max_neighbours: int = _s(100, "co-occurrence: neighbours kept per item (~54 B each)")
    max_items: int = _s(
        200_000, "items the online recommender tracks, least recently seen dropped (~250 B each)"
    )
    cooc_shrink: float = _s(
        5.0,
        "co-occurrence: weight added to each item's occurrence when normalising, so items "
        "only a few sessions saw cannot top a related list",
    )
    cooc_refresh_s: float = _s(
        10.0,
        "co-occurrence: seconds a context item's cached strongest neighbours keep the "
        "neighbours' occurrence weights they were scored with (its own counts are always "
        "current; processes may differ by that drift); 0: rescored at every list",
    )
    cooc_cache_items: int = _s(
        20_000,
        "co-occurrence: items whose strongest neighbours are cached (cooc_list_neighbours "
        "each, ~3.3 KB per item at 64); the least recently computed dropped",
    )
    cooc_list_neighbours: int = _s(
        64,
        "co-occurrence: strongest neighbours of each context item that a list scores "
        "(its cost per event is about proportional)",
    )
    popular_candidates: int = _s(
        512, "most popular items kept ranked (up to twice this) for cold-start lists and fills"
    )
    popular_refresh_s: float = _s(
        1.0,
        "seconds between re-sorts of the popular items (at most; a new member is placed "
        "at once); until the next one, processes may order the popular fill differently",
    )
    influence_item_cap: float = _s(
        3.0,
        "most weight one session or signed-in user adds to an item's popularity and to a "
        "co-occurrence edge into it (a purchase: 3); repeats add nothing",
    )
    influence_session_items: int = _s(
        50, "distinct items one session or signed-in user adds weight to; later ones add none"
    )
    influence_contributors: int = _s(
        100_000,
        "sessions and signed-in users whose credited weight is remembered (least recent "
        "dropped: a dropped one may add weight again)",
    )
    # --- session-kNN (V-SkNN), served with recommender = vsknn
    recommender: str = _s(
        "online",
        "online = popularity + co-occurrence; vsknn = session-kNN over an index of recent "
        "sessions (online as its fallback); a model_path serves GRU4Rec over either",
    )
    vsknn_data: str | None = _s(
        None, "vsknn: a session file (any `liverec train` format) indexed at start"
    )
    vsknn_live: bool = _s(True, "vsknn: index every accepted event at once (off: the file only)")
    vsknn_max_sessions: int = _s(
        1_000_000, "vsknn: sessions indexed, least recently active dropped (~250 B each + items)"
    )
    vsknn_per_item: int = _s(100, "vsknn: most recent sessions kept per item (M)")
    vsknn_sample: int = _s(250, "vsknn: most recent candidate sessions compared per event (S)")
    vsknn_neighbours: int = _s(50, "vsknn: most similar candidates whose items are scored (k)")
    vsknn_window: int = _s(10, "vsknn: latest events of the session that find neighbours")
    vsknn_session_items: int = _s(50, "vsknn: distinct items indexed per session")
    # --- content model (cold start from the catalog)
    content_model: bool = _s(
        True, "blend a content model over catalog fields into every list (cold start)"
    )
    content_item_evidence: float = _s(
        3.0,
        "co-view events of an item at which content and behaviour each get half of its "
        "list (content share N / (N + events)); 0: content only fills short lists",
    )
    content_home_evidence: float = _s(
        200.0, "events seen at which a list with no item (home) is half catalog, half popular"
    )
    content_max_postings: int = _s(1000, "content model: items kept per catalog token")
    content_scan: int = _s(2000, "content model: postings read per related-items lookup")
    content_cache_items: int = _s(10_000, "content model: items whose related lists are cached")
    content_refresh_s: float = _s(
        1.0,
        "content model: seconds a cached list may outlive a change to an item's title, "
        "category, brand, attributes, description or price band (stock changes keep it)",
    )
    content_max_sessions: int = _s(
        100_000, "sessions whose last item is kept to count co-view evidence (LRU beyond)"
    )
    # --- security
    allowed_origins: tuple[str, ...] = _s((), "extra origins allowed to open sockets (comma list)")
    jwt_secret: str | None = _s(None, "HS256 secret for user tokens; none = anonymous only")
    # --- the HTTP/WebSocket edge (docs/security.md, "Attacks and defences")
    allowed_hosts: tuple[str, ...] = _s(
        (),
        "Host header values served (comma list; '*.example.com' matches its subdomains, '*' "
        "any host: not for production); empty: localhost, 127.0.0.1, ::1 and the bound host. "
        "The server's own origin is the Host once it passed this list (HTTP 400 otherwise)",
    )
    header_timeout_s: float | None = _s(
        10.0,
        "time for a request's line and headers to arrive, and on a kept-alive connection for "
        "the next request to complete its head, seconds (HTTP 408, connection closed)",
    )
    body_timeout_s: float | None = _s(
        30.0, "time for a request body to arrive once its headers are in, seconds (closed)"
    )
    handshake_timeout_s: float | None = _s(
        10.0, "time from a WebSocket upgrade request to the completed handshake, seconds"
    )
    max_pending_connections: int = _s(
        2000,
        "connections that are not (yet) WebSockets, in total: HTTP requests, kept-alive and "
        "half-sent ones (HTTP 503 at accept above)",
    )
    max_pending_per_address: int = _s(
        64,
        "connections that are not (yet) WebSockets from one peer address (HTTP 503 at accept "
        "above; trusted_proxies are exempt)",
    )
    accept_backlog: int = _s(
        128,
        "connections the kernel queues for accept, and the most refused at accept in one "
        "event-loop iteration",
    )
    accepts_per_iteration: int = _s(
        16,
        "connections taken in per event-loop iteration, the rest waiting in the accept "
        "queue, so that a burst of new sockets cannot hold the loop from open ones",
    )
    fd_reserve: int = _s(
        256,
        "file descriptors kept free for the store, model and logs: a socket accepted while "
        "the process's open-file limit minus this are open is answered 503 and closed (at "
        "least 2 x accept_backlog)",
    )
    get_requests_per_s: float = _s(
        20.0,
        "sustained GET/HEAD requests per second from one client address (HTTP 429 above; "
        "/healthz and /readyz exempt)",
    )
    get_requests_burst: int = _s(200, "token bucket size for GET/HEAD requests per address")
    log_repeat_s: float = _s(
        10.0,
        "a repeated warning (a refused origin, descriptor exhaustion, a cut slow client) is "
        "logged at most once per this many seconds, with a count of those not logged",
    )
    # --- catalog
    catalog_poll_s: float | None = _s(
        2.0, "seconds between checks for catalog changes made by other processes (none = never)"
    )
    catalog_max_items_per_put: int = _s(1000, "most items in one PUT /v1/catalog/items request")
    catalog_max_put_bytes: int = _s(
        4 * 1024 * 1024, "bytes: largest body of a PUT /v1/catalog/items request"
    )
    catalog_list_limit: int = _s(
        500, "most items one GET /v1/catalog/items request lists (its `limit` is capped here)"
    )
    # --- web: demo store, live feed, operator access
    demo: bool = _s(
        False,
        "serve the demo store at /demo: seed its generated catalog when the store has none "
        "and warm the online model with simulated shoppers (in memory); not for production",
    )
    demo_warmup_sessions: int = _s(
        2000, "simulated shopper sessions taught to the online model at demo start"
    )
    demo_model: str | None = _s(
        "bundled",
        "with demo on and no model_path: the GRU4Rec checkpoint the demo serves; bundled = "
        "models/demo of the source tree (`liverec demo-model` makes it); none = online only",
    )
    admin_token: str | None = _s(
        None,
        "token for the /feed operator page and catalog writes; none = loopback clients only",
    )
    feed_queue: int = _s(
        2000,
        "feed entries queued per operator page, and per process sharing its feed with "
        "pages on other processes, before dropping",
    )
    feed_max_subscribers: int = _s(16, "operator pages connected to /v1/feed at once")
    feed_window_s: int = _s(300, "seconds of history in the feed's charts")
    feed_watch_s: float | None = _s(
        3.0,
        "with a shared store: seconds a process keeps sending its feed entries and "
        "figures to the store's pub/sub after the last sign that an operator page on "
        "another process watches (pages there announce themselves every second); "
        "none = each /feed shows its own process only",
    )
    web_dir: str | None = _s(None, "directory with the web/ assets (default: the bundled one)")
    widget_max_age_s: int = _s(
        300,
        "seconds browsers may cache /widget/liverec.js before revalidating "
        "(the content-hashed /widget/liverec.<hash>.js is cached for a year)",
    )
    # --- logs
    log_level: str = _s("info", "log level: debug, info, warning, error, critical")
    log_format: str = _s("text", "log line format: text, or json (one object per line)")

    def __post_init__(self) -> None:
        problems = [message for name, bound, message in BOUNDS if not bound.holds(self, name)]
        if self.default_k > self.max_k:
            problems.append("default_k must be in 1..max_k")
        if not self.rating_min < self.rating_max:
            problems.append("rating_min must be below rating_max")
        if self.fd_reserve < 2 * self.accept_backlog:
            problems.append("accept_backlog must be >= 1 and fd_reserve >= 2 x accept_backlog")
        problems += _choice_problems(self)
        for name in ("jwt_secret", "admin_token"):
            secret = getattr(self, name)
            if secret is not None and len(secret.encode("utf-8", "surrogatepass")) < MIN_SECRET:
                problems.append(
                    f"{name} must be at least {MIN_SECRET} bytes (make one with: python -c "
                    '"import secrets; print(secrets.token_urlsafe(48))")'
                )
        if problems:
            raise ConfigError("; ".join(dict.fromkeys(problems)))  # each message once

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then `LIVEREC_<NAME>` variables, then explicit overrides (None: not given).

        Raises ConfigError naming the variable for a value that does not parse and for a
        `LIVEREC_*` variable that names no setting (a typo would otherwise be ignored)."""
        return cls.from_sources(env, {k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def from_sources(
        cls, env: Mapping[str, str] | None = None, flags: Mapping[str, Any] | None = None
    ) -> Settings:
        """Defaults, then `LIVEREC_<NAME>` variables, then `flags` (values already parsed;
        None in `flags` is an explicit "off", e.g. `--learn-interval-s none`)."""
        env = os.environ if env is None else env
        check_variables(env)
        values: dict[str, Any] = {}
        hints = get_type_hints(cls)
        for f in fields(cls):
            var = ENV_PREFIX + f.name.upper()
            raw = env.get(var)
            if raw is not None:
                values[f.name] = parse_value(var, hints[f.name], raw, CHOICES.get(f.name, ()))
        values.update(flags or {})
        return cls(**values)


ENV_PREFIX = "LIVEREC_"
# `LIVEREC_*` variables read by the development tools (.ci/dev, the tests), not settings.
TOOL_VARIABLES = frozenset(
    {"LIVEREC_SKIP_BROWSER", "LIVEREC_CHROMIUM", "LIVEREC_HYPOTHESIS_PROFILE"}
)
CHOICES: dict[str, tuple[str, ...]] = {
    "log_level": ("debug", "info", "warning", "error", "critical"),
    "log_format": ("text", "json"),
    "learn_mode": ("finetune", "retrain"),
    "learn_family": ("gru4rec", "vsknn", "hybrid", "auto"),
    "recommender": ("online", "vsknn"),
}
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


@dataclass(frozen=True, slots=True)
class Bound:
    """The range of a numeric setting: at least `low` (above it with `strict`), at most
    `high`; None (an optional limit that is off) is always in range, NaN never."""

    low: float | None = None
    high: float | None = None
    strict: bool = False

    def holds(self, settings: Settings, name: str) -> bool:
        value = getattr(settings, name)
        if value is None:
            return True
        if value != value:  # NaN is in no range
            return False
        if self.low is not None and (value <= self.low if self.strict else value < self.low):
            return False
        return self.high is None or value <= self.high


AT_LEAST_1 = Bound(1)
AT_LEAST_0 = Bound(0)
ABOVE_0 = Bound(0, strict=True)
_EVENTS = "events_per_s must be > 0 and events_burst >= 1"
_ADDRESS = "address_events_per_s must be > 0 and address_events_burst >= 1"
_CONNECTIONS = "max_connections and max_connections_per_address must be >= 1"
_MODEL = "model_rank and model_rescore must be >= 0"
_BATCH = "model_max_batch and model_pipeline must be >= 1"
_FOLLOW = "follow_block_s must be > 0 and follow_batch >= 1"
_FEED = "feed_queue, feed_max_subscribers must be >= 1, feed_window_s >= 10"
_VSKNN = "vsknn_* sizes must be >= 1"
_EVIDENCE = "content_item_evidence and content_home_evidence must be >= 0"
_CONTENT = "content_max_postings, content_scan, content_cache_items >= 1"
_SESSIONS = "content_max_sessions must be >= 1 and content_refresh_s >= 0"
_PENDING = "max_pending_connections and max_pending_per_address must be >= 1"
_BACKLOG = "accept_backlog must be >= 1 and fd_reserve >= 2 x accept_backlog"
_GETS = "get_requests_per_s must be > 0 and get_requests_burst >= 1"

# Per setting: its range and the message when it is out of it (settings checked
# together share one message, given once). Cross-setting rules are __post_init__'s.
BOUNDS: tuple[tuple[str, Bound, str], ...] = (
    ("max_k", Bound(1, 1000), "max_k must be in 1..1000"),
    ("default_k", AT_LEAST_1, "default_k must be in 1..max_k"),
    ("max_frame_bytes", Bound(256), "max_frame_bytes must be at least 256"),
    ("ab_share", Bound(0.0, 1.0), "ab_share must be in 0..1"),
    ("outbound_queue", Bound(2), "outbound_queue must be at least 2"),
    ("events_per_s", ABOVE_0, _EVENTS),
    ("events_burst", AT_LEAST_1, _EVENTS),
    ("address_events_per_s", ABOVE_0, _ADDRESS),
    ("address_events_burst", AT_LEAST_1, _ADDRESS),
    ("max_connections", AT_LEAST_1, _CONNECTIONS),
    ("max_connections_per_address", AT_LEAST_1, _CONNECTIONS),
    ("max_tracked_addresses", AT_LEAST_1, "max_tracked_addresses must be >= 1"),
    ("model_rank", AT_LEAST_0, _MODEL),
    ("model_rescore", AT_LEAST_0, _MODEL),
    ("model_max_batch", AT_LEAST_1, _BATCH),
    ("model_pipeline", AT_LEAST_1, _BATCH),
    ("model_score_timeout_s", ABOVE_0, "model_score_timeout_s must be > 0"),
    ("model_refeed_events", AT_LEAST_0, "model_refeed_events must be >= 0"),
    (
        "gc_full_interval_s",
        ABOVE_0,
        "gc_full_interval_s must be > 0 (or none for Python's default)",
    ),
    ("flood_penalty_s", AT_LEAST_0, "flood_penalty_s must be >= 0"),
    ("follow_block_s", ABOVE_0, _FOLLOW),
    ("popular_refresh_s", AT_LEAST_0, "popular_refresh_s must be >= 0"),
    ("cooc_refresh_s", AT_LEAST_0, "cooc_refresh_s must be >= 0"),
    ("cooc_cache_items", AT_LEAST_1, "cooc_cache_items must be >= 1"),
    ("cooc_list_neighbours", AT_LEAST_1, "cooc_list_neighbours must be >= 1"),
    (
        "feed_watch_s",
        Bound(1.5),
        "feed_watch_s must be >= 1.5 (pages announce themselves each second)",
    ),
    ("follow_batch", AT_LEAST_1, _FOLLOW),
    ("catalog_poll_s", ABOVE_0, "catalog_poll_s must be > 0 (or none)"),
    ("catalog_max_items_per_put", AT_LEAST_1, "catalog_max_items_per_put must be >= 1"),
    ("catalog_max_put_bytes", Bound(256), "catalog_max_put_bytes must be at least 256"),
    ("catalog_list_limit", AT_LEAST_1, "catalog_list_limit must be >= 1"),
    ("feed_queue", AT_LEAST_1, _FEED),
    ("feed_max_subscribers", AT_LEAST_1, _FEED),
    ("feed_window_s", Bound(10), _FEED),
    ("vsknn_max_sessions", AT_LEAST_1, _VSKNN),
    ("vsknn_per_item", AT_LEAST_1, _VSKNN),
    ("vsknn_sample", AT_LEAST_1, _VSKNN),
    ("vsknn_neighbours", AT_LEAST_1, _VSKNN),
    ("vsknn_window", AT_LEAST_1, _VSKNN),
    ("vsknn_session_items", AT_LEAST_1, _VSKNN),
    ("influence_contributors", AT_LEAST_1, "influence_contributors must be >= 1"),
    ("content_item_evidence", AT_LEAST_0, _EVIDENCE),
    ("content_home_evidence", AT_LEAST_0, _EVIDENCE),
    ("content_max_postings", AT_LEAST_1, _CONTENT),
    ("content_scan", AT_LEAST_1, _CONTENT),
    ("content_cache_items", AT_LEAST_1, _CONTENT),
    ("content_max_sessions", AT_LEAST_1, _SESSIONS),
    ("content_refresh_s", AT_LEAST_0, _SESSIONS),
    ("demo_warmup_sessions", AT_LEAST_0, "demo_warmup_sessions must be >= 0"),
    ("widget_max_age_s", AT_LEAST_0, "widget_max_age_s must be >= 0"),
    ("workers", Bound(1, 256), "workers must be in 1..256"),
    ("port", Bound(0, 65535), "port must be in 0..65535"),
    ("header_timeout_s", ABOVE_0, "header_timeout_s must be > 0 (or none)"),
    ("body_timeout_s", ABOVE_0, "body_timeout_s must be > 0 (or none)"),
    ("handshake_timeout_s", ABOVE_0, "handshake_timeout_s must be > 0 (or none)"),
    ("max_pending_connections", AT_LEAST_1, _PENDING),
    ("max_pending_per_address", AT_LEAST_1, _PENDING),
    ("accept_backlog", AT_LEAST_1, _BACKLOG),
    ("accepts_per_iteration", AT_LEAST_1, "accepts_per_iteration must be >= 1"),
    ("get_requests_per_s", ABOVE_0, _GETS),
    ("get_requests_burst", AT_LEAST_1, _GETS),
    ("log_repeat_s", AT_LEAST_0, "log_repeat_s must be >= 0"),
)


def _choice_problems(settings: Settings) -> list[str]:
    return [
        f"{name} must be one of {', '.join(allowed)} (got {getattr(settings, name)!r})"
        for name, allowed in CHOICES.items()
        if getattr(settings, name) not in allowed
    ]


def check_variables(env: Mapping[str, str]) -> None:
    """Raise ConfigError for a `LIVEREC_*` variable that names no setting."""
    known = {ENV_PREFIX + f.name.upper() for f in fields(Settings)} | TOOL_VARIABLES
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
        raise ConfigError(f"{name}: no such setting{hint}{more}")


def is_optional(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


def base_type(hint: Any) -> Any:
    """int for `int | None`, tuple for `tuple[str, ...]`, the hint itself otherwise."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return tuple
    if is_optional(hint) and len(args) == 1:
        return base_type(args[0])
    return hint


def parse_value(name: str, hint: Any, raw: str, choices: tuple[str, ...] = ()) -> Any:
    """Parse one setting from its string form (environment or CLI); `name` is what the
    error message calls it (the variable or the flag). Raises ConfigError."""
    text = raw.strip()
    if choices and text.lower() not in choices:
        raise ConfigError(f"{name}: {raw!r} is not one of {', '.join(choices)}")
    if is_optional(hint) and text.lower() in ("", "none", "off"):
        return None
    kind = base_type(hint)
    if kind is bool:
        if text.lower() in TRUE_WORDS:
            return True
        if text.lower() in FALSE_WORDS:
            return False
        raise ConfigError(f"{name}: {raw!r} is not a boolean (on/off, true/false, yes/no, 1/0)")
    if kind is tuple:
        return tuple(p.strip() for p in text.split(",") if p.strip())
    try:
        if kind is float:
            value = float(text.replace("_", ""))
            if math.isnan(value):
                raise ValueError("nan")
            return value
        if kind is int:
            return int(text.replace("_", ""))
    except ValueError:
        what = "an integer" if kind is int else "a number"
        off = " (or none)" if is_optional(hint) else ""
        raise ConfigError(f"{name}: {raw!r} is not {what}{off}") from None
    return text.lower() if choices else text


def shown_default(default: Any) -> str:
    """A default as one would type it on the command line."""
    if default is None:
        return "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, tuple):
        return ",".join(default) or "(empty)"
    return str(default)


def setting_docs() -> list[tuple[str, str, str, str]]:
    """(name, env var, default, help) for every setting, for --help and docs."""
    return [
        (f.name, ENV_PREFIX + f.name.upper(), shown_default(f.default), f.metadata.get("help", ""))
        for f in fields(Settings)
    ]


def setting_groups() -> list[tuple[str, list[str]]]:
    """The settings by the `# --- title` comments of the Settings class, in order."""
    names = [f.name for f in fields(Settings)]
    try:
        source = inspect.getsource(Settings)
    except (OSError, TypeError):  # no source (e.g. a zipped install): one group
        return [("settings", names)]
    groups: list[tuple[str, list[str]]] = []
    title = "settings"
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("# ---"):
            title = stripped.lstrip("#- ").strip()
            continue
        match = re.match(r"(\w+)\s*:", stripped)
        if match and match.group(1) in names:
            if not groups or groups[-1][0] != title:
                groups.append((title, []))
            groups[-1][1].append(match.group(1))
    seen = {n for _, group in groups for n in group}
    missing = [n for n in names if n not in seen]
    return groups + ([("other", missing)] if missing else [])


def markdown_table() -> str:
    """The settings tables of docs/configuration.md (regenerate with `python -m liverec.config`),
    one per group of the Settings class."""
    docs = {name: (env, default, doc) for name, env, default, doc in setting_docs()}
    out: list[str] = []
    for title, names in setting_groups():
        out += [f"### {title[:1].upper()}{title[1:]}", ""]
        out += ["| setting | environment variable | default | meaning |", "|---|---|---|---|"]
        for name in names:
            env, default, doc = docs[name]
            out.append(f"| `{name}` | `{env}` | `{default}` | {doc} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown_table(), end="")
