// liverec widget: live recommendations over one WebSocket. Plain ES module, no build.
//
//   <div id="recs" style="min-height:320px"></div>
//   <script type="module" src="https://recs.example.com/widget/liverec.js"
//           data-target="#recs" data-placement="product" data-k="8"></script>
//
// Sends a view for the product the page shows (an element, not a link, carrying
// data-liverec-item), a click for every link carrying data-liverec-item, what the
// page reports with liverec.track(action, items) (liverec or GA4 names and shapes),
// and, with data-datalayer, the GA4 e-commerce events the store pushes to
// window.dataLayer. Sends data-user-token (or liverec.setUserToken) in hello.
// Renders the recs pushed back in its own Shadow DOM (a store's CSS cannot reach
// it), in place, in space reserved up front; reports each list once as an
// impression when at least half of the row is in view, and a click on one of its
// cards, both tied to the recs frame that drew it. Reconnects with backoff and
// jitter, resumes its session, sends again what the server has not acked; stops
// after a few refusals by a reachable server (an origin not allowed).
// Documentation: docs/widget.md.

const SESSION_KEY = "liverec:session"; // localStorage: {id, t}, shared by the tabs
const OUTBOX_KEY = "liverec:outbox"; // sessionStorage: this tab's unacked events
const QUEUE_KEY = "liverec:queue"; // sessionStorage: calls the stub snippet queued
const RECS_KEY = "liverec:recs:"; // sessionStorage + placement: the last list shown
const SESSION_IDLE_MS = 30 * 60 * 1000; // a new session after 30 minutes without events
const OUTBOX_MAX = 200;
const BACKOFF_BASE_MS = 250;
const REFUSALS_MAX = 4; // a reachable server refusing the socket this often: stop
const PING_EVERY_MS = 25000;
const PONG_WAIT_MS = 10000;
const IMAGE_WAIT_MS = 400; // how long a new list waits for its images before showing
const GIVE_UP_EMPTY_MS = 6000; // blank the row (keeping its space) when nothing came
const SEEN_RATIO = 0.5; // an impression: at least this share of the row in view
const FEEDBACK_MAX = 8; // feedback frames kept while the socket is down; older ones go
const DATALAYER_POLL_MS = 1000; // catch pushes when a tag manager replaced our push
// liverec's actions and the GA4 e-commerce names that map onto them.
const ACTIONS = {
  view: "view", view_item: "view", click: "click", select_item: "click",
  add_to_cart: "add_to_cart", remove_from_cart: "remove_from_cart",
  purchase: "purchase", rate: "rate",
};

const script = [...document.scripts].find((s) => s.src === import.meta.url);
const cfg = (script && script.dataset) || {};
const debug = "debug" in cfg;
const k = Math.max(1, Math.min(100, parseInt(cfg.k, 10) || 8));
const placement = cfg.placement || undefined;
const maxBackoff = parseInt(cfg.maxBackoffMs, 10) || 15000;
const itemUrl = cfg.itemUrl || "";
const serverBase = (() => {
  const base = new URL(cfg.server || "./..", import.meta.url);
  return base.href.endsWith("/") ? base.href : base.href + "/";
})();
const wsUrl = (() => {
  const url = new URL("v1/ws", serverBase);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
})();

const log = (...a) => debug && console.debug("[liverec]", ...a);
const store = (area, key, value) => {
  try {
    if (value === undefined) return JSON.parse(area.getItem(key) || "null");
    if (value === null) area.removeItem(key); else area.setItem(key, JSON.stringify(value));
  } catch (e) { /* storage full or blocked: keep going in memory */ }
  return null;
};
const newId = () => (crypto.randomUUID ? crypto.randomUUID()
  : Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 12));

// --- state --------------------------------------------------------------------------

let session = store(localStorage, SESSION_KEY);
if (!session || !session.id || Date.now() - session.t > SESSION_IDLE_MS) {
  session = null;
  store(sessionStorage, OUTBOX_KEY, []); // events of an expired session are not replayed
}
let outbox = store(sessionStorage, OUTBOX_KEY) || [];
let userToken = cfg.userToken || null;
let ws = null;
let state = "closed";
let attempt = 0;
let refusals = 0;
let retryTimer = 0;
let retrying = false;
let pingTimer = 0;
let pongTimer = 0;
let resumed = false;
let lastEventId = outbox.length ? outbox[outbox.length - 1].id : null;
let viewing = null; // the item this page shows: never drawn in its own row
let renderedFor;
let stopped = false;
const listeners = new Set();
// Feedback is best effort: never stored, a few frames kept in memory while the socket
// is down, nothing ever waits for it.
let feedbackQueue = [];

function touchSession() {
  if (session) { session.t = Date.now(); store(localStorage, SESSION_KEY, session); }
}

function saveOutbox() { store(sessionStorage, OUTBOX_KEY, outbox); }

// --- the socket ---------------------------------------------------------------------

function connect() {
  clearTimeout(retryTimer);
  retrying = false;
  if (stopped || (ws && ws.readyState <= 1)) return;
  state = "connecting";
  log("connecting", wsUrl);
  let opened = false;
  try { ws = new WebSocket(wsUrl); } catch (e) { scheduleRetry(); return; }
  const sock = ws;
  sock.onopen = () => {
    opened = true;
    const hello = { type: "hello", k: Math.min(100, k + 1) }; // +1: the viewed item goes
    if (placement) hello.placement = placement;
    if (session) hello.session_id = session.id;
    if (userToken) hello.user_token = userToken;
    sock.send(JSON.stringify(hello));
  };
  sock.onmessage = (m) => {
    let frame;
    try { frame = JSON.parse(m.data); } catch (e) { return; }
    handle(frame);
  };
  sock.onclose = (e) => {
    if (ws !== sock) return;
    ws = null;
    state = "closed";
    clearInterval(pingTimer);
    clearTimeout(pongTimer);
    log("closed", e.code, e.reason);
    if (!opened) { diagnose(); return; }
    refusals = 0;
    // An idle close of a hidden tab waits until the tab is shown again.
    if (!(e.code === 1000 && document.hidden)) scheduleRetry();
  };
}

// A socket that never opened: the browser shows only "1006". If liverec itself answers
// plain HTTP (its widget manifest, readable from any origin), it refused the upgrade
// (HTTP 403: this page's origin is not allowed), which retrying will not change. If
// not (no answer, or a proxy's error page), it is down, and retrying is right.
function diagnose() {
  fetch(serverBase + "widget/manifest.json", { cache: "no-store" }).then((r) => {
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
  }).then(() => {
    refusals += 1;
    const why = `refused by server (origin not allowed?): ${location.origin} must be in the`
      + ` server's allowed_origins (LIVEREC_ALLOWED_ORIGINS)`;
    log(why, `refusal ${refusals} of ${REFUSALS_MAX}`);
    if (refusals < REFUSALS_MAX) { scheduleRetry(); return; }
    state = "refused";
    console.warn(`[liverec] ${why}; stopped retrying (liverec.reconnect() tries again)`);
  }, () => {
    refusals = 0;
    log("server unreachable", serverBase);
    scheduleRetry();
  });
}

function scheduleRetry() {
  if (stopped) return;
  clearTimeout(retryTimer);
  // Exponential backoff with full jitter: a restarted server is not stormed.
  const cap = Math.min(maxBackoff, BACKOFF_BASE_MS * 2 ** attempt);
  attempt = Math.min(attempt + 1, 20);
  retrying = true;
  retryTimer = setTimeout(connect, 50 + Math.random() * cap);
}

// Start over now, e.g. with another identity: a hello is the first frame of a socket.
function restart() {
  attempt = 0;
  refusals = 0;
  stopped = false;
  const old = ws;
  ws = null;
  state = "closed";
  clearInterval(pingTimer);
  clearTimeout(pongTimer);
  if (old) { old.onclose = null; old.close(1000); }
  connect();
}

function send(frame) {
  if (ws && ws.readyState === 1 && state === "open") { ws.send(JSON.stringify(frame)); return true; }
  return false;
}

function sendFeedback(frame) {
  if (send(frame)) return;
  feedbackQueue.push(frame);
  if (feedbackQueue.length > FEEDBACK_MAX) feedbackQueue.splice(0, feedbackQueue.length - FEEDBACK_MAX);
}

function handle(frame) {
  switch (frame.type) {
    case "welcome":
      state = "open";
      attempt = 0;
      refusals = 0;
      resumed = frame.resumed;
      session = { id: frame.session_id, t: Date.now() };
      store(localStorage, SESSION_KEY, session);
      for (const ev of outbox) send(ev); // in order; the server drops duplicates
      for (const fb of feedbackQueue.splice(0)) send(fb); // unknown_recs if it was forgotten
      startPings();
      break;
    case "ack":
      outbox = outbox.filter((ev) => ev.id !== frame.id);
      saveOutbox();
      break;
    case "recs":
      for (const fn of listeners) {
        try { fn(frame); } catch (e) { console.error(e); }
      }
      if (frame.for_event === lastEventId || (frame.for_event === null && !outbox.length)) {
        render(frame.items, frame.for_event, false, frame.recs_id);
      }
      break;
    case "error":
      log("error", frame.code, frame.message);
      if (state !== "open") { refusedHello(frame.code); break; }
      // Errors without `ref` answer feedback (unknown_recs after a server restart, ...):
      // nothing to do but note them.
      if (frame.ref && frame.code !== "store_unavailable" && frame.code !== "rate_limited") {
        outbox = outbox.filter((ev) => ev.id !== frame.ref); // it can never succeed
        saveOutbox();
      } else if (frame.ref) {
        setTimeout(() => { const ev = outbox.find((e) => e.id === frame.ref); if (ev) send(ev); },
          1000 + Math.random() * 2000);
      }
      break;
    case "pong":
      clearTimeout(pongTimer);
      break;
    default:
      if (debug) throw new Error(`liverec: unknown frame type ${JSON.stringify(frame.type)}`);
  }
}

// The hello was refused: carry on as well as the shopper's identity allows.
function refusedHello(code) {
  if (code === "session_forbidden") {
    session = null; // another user's session (a logout, a shared device): start a new one
    store(localStorage, SESSION_KEY, null);
  } else if (code === "bad_token" || code === "token_expired" || code === "auth_disabled") {
    console.warn(`[liverec] user token refused (${code}): continuing anonymously`);
    userToken = null;
  } else return;
  restart();
}

function startPings() {
  clearInterval(pingTimer);
  pingTimer = setInterval(() => {
    if (document.hidden) return; // hidden tabs let the server's idle timeout apply
    send({ type: "ping" });
    clearTimeout(pongTimer);
    pongTimer = setTimeout(() => ws && ws.close(), PONG_WAIT_MS); // half-open: start over
  }, PING_EVERY_MS);
}

// --- events -------------------------------------------------------------------------

// Item ids from what a store passes: "sku", 42, ["a", "b"], [{item_id}], {items: [...]},
// {ecommerce: {items: [...]}} (GA4), {item_id}.
function itemIds(what) {
  if (what === undefined || what === null || what === "") return [];
  if (typeof what === "string" || typeof what === "number") return [String(what)];
  if (Array.isArray(what)) return what.flatMap(itemIds);
  if (typeof what !== "object") return [];
  if (what.ecommerce && typeof what.ecommerce === "object") return itemIds(what.ecommerce);
  if (Array.isArray(what.items)) return itemIds(what.items);
  const id = what.item_id !== undefined ? what.item_id : what.id;
  return typeof id === "string" || typeof id === "number" ? itemIds(id) : [];
}

function track(action, items, opts = {}) {
  const name = ACTIONS[action];
  if (!name) { // begin_checkout, view_cart, ...: nothing liverec learns from; never throws
    log(`track: no liverec action for ${JSON.stringify(action)}: ignored`);
    return 0;
  }
  const ids = itemIds(items);
  if (!ids.length) log(`track(${JSON.stringify(action)}): no item id in`, items);
  for (const item of ids) {
    const ev = { type: "event", id: newId(), action: name, item_id: item, ts: Date.now() / 1000 };
    if (name === "rate") ev.rating = Number(opts.rating);
    if (name === "view") viewing = item;
    outbox.push(ev);
    if (outbox.length > OUTBOX_MAX) outbox.splice(0, outbox.length - OUTBOX_MAX);
    lastEventId = ev.id;
    send(ev);
  }
  if (!ids.length) return 0;
  saveOutbox();
  touchSession();
  if (!ws && !retrying && state !== "refused") connect(); // e.g. a hidden tab closed for idleness
  return ids.length;
}

// GA4 through window.dataLayer: {event, ecommerce: {items}} objects, and gtag's
// `arguments` (["event", name, {items}]). Entries are read in order, each once: those
// pushed before the widget loaded, then every push (our push wrapper, and a poll for
// when a tag manager installs its own push over ours).
function followDataLayer(name) {
  let seen = 0;
  const drain = () => {
    const layer = window[name];
    if (!Array.isArray(layer)) return;
    for (; seen < layer.length; seen++) {
      try { fromDataLayer(layer[seen]); } catch (e) { log("dataLayer entry", e); }
    }
  };
  if (window[name] !== undefined && !Array.isArray(window[name])) {
    log(`data-datalayer: window.${name} is not an array; not followed`);
    return;
  }
  const layer = (window[name] = window[name] || []);
  drain();
  const push = layer.push;
  layer.push = function (...args) { const n = push.apply(this, args); drain(); return n; };
  setInterval(drain, DATALAYER_POLL_MS);
  addEventListener("pagehide", drain);
}

function fromDataLayer(entry) {
  if (!entry || typeof entry !== "object") return;
  let event;
  let params;
  if (!Array.isArray(entry) && typeof entry.length === "number") { // gtag's arguments
    if (entry[0] !== "event") return;
    [, event, params] = entry;
  } else if (typeof entry.event === "string") {
    event = entry.event;
    params = entry.ecommerce;
  }
  if (!params || typeof params !== "object" || !Array.isArray(params.items)) return;
  track(event, params.items);
}

document.addEventListener("click", (e) => {
  // composedPath: the widget's own cards are in its shadow root.
  const link = e.composedPath().find((el) => el instanceof Element && el.matches("a[data-liverec-item]"));
  if (!link || e.button !== 0) return;
  // A card of our row: report the click on the list that drew it, before the click
  // event and before the browser navigates (capture phase, nothing awaited).
  const recsId = section && section.contains(link) ? link.dataset.liverecRecs : undefined;
  if (recsId) {
    if (shownFrame && shownFrame.recsId === recsId) reportImpression(true); // it was seen
    sendFeedback({ type: "feedback", kind: "click", recs_id: recsId, item_id: link.dataset.liverecItem });
  }
  track("click", link.dataset.liverecItem);
}, true);

// --- impressions --------------------------------------------------------------------

let shownFrame = null; // {recsId, reported} of the list drawn in the row now
let rowInView = false;

function reportImpression(clicked = false) {
  if (!shownFrame || shownFrame.reported) return;
  if (!clicked && (!rowInView || document.hidden || !section || section.hidden)) return;
  shownFrame.reported = true; // once per recs frame drawn, however often it is scrolled to
  sendFeedback({ type: "feedback", kind: "impression", recs_id: shownFrame.recsId });
}

function watch(row) {
  if (typeof IntersectionObserver !== "function") return; // no observer: no impressions
  new IntersectionObserver((entries) => {
    for (const entry of entries) {
      rowInView = entry.isIntersecting && entry.intersectionRatio >= SEEN_RATIO - 0.001;
    }
    reportImpression();
  }, { threshold: [0, SEEN_RATIO] }).observe(row);
}

// --- rendering ----------------------------------------------------------------------

const target = cfg.target ? document.querySelector(cfg.target) : null;
let slots = [];
let section = null;
let row = null;
let arrows = [];
let renderToken = 0;
const money = {};

// Inside a shadow root: no rule of the page reaches it, and `all: initial` stops the
// page's inherited font sizes, weights, spacing and colours at the door. Sizes are in
// px so that the row's height (reserved by the page) does not follow the page's root.
const CSS = `:host{display:block!important;margin:0!important;padding:0!important}
.liverec{all:initial;display:block;font-family:var(--liverec-font,inherit);font-size:16px;line-height:1.4;
color:var(--liverec-text,#1f2328);--_accent:var(--liverec-accent,#1f5f52);--_muted:var(--liverec-muted,#5b6474);
--_bg:var(--liverec-card-bg,#fff);--_line:var(--liverec-border,#e7e3dd);--_r:var(--liverec-radius,14px);
--_gap:var(--liverec-gap,16px);--_w:var(--liverec-card-width,176px);--_img:var(--liverec-image-bg,#f3f1ed)}
.liverec *{box-sizing:border-box;font:inherit;letter-spacing:normal;text-transform:none}
.liverec.is-idle{visibility:hidden}
.liverec-title{display:block;font-size:var(--liverec-title-size,20px);font-weight:650;line-height:28px;margin:0 0 12px;
white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.liverec-scroller{position:relative}
.liverec-row{display:grid;grid-auto-flow:column;grid-auto-columns:var(--_w);gap:var(--_gap);
overflow-x:auto;overscroll-behavior-x:contain;scroll-snap-type:x proximity;scroll-padding-inline:2px;scrollbar-width:none;list-style:none;margin:0;padding:2px 2px 10px}
.liverec-row::-webkit-scrollbar{display:none}
.more-right .liverec-row{-webkit-mask-image:linear-gradient(to left,transparent,#000 48px);mask-image:linear-gradient(to left,transparent,#000 48px)}
.more-left.more-right .liverec-row{-webkit-mask-image:linear-gradient(to right,transparent,#000 48px,#000 calc(100% - 48px),transparent);mask-image:linear-gradient(to right,transparent,#000 48px,#000 calc(100% - 48px),transparent)}
.more-left:not(.more-right) .liverec-row{-webkit-mask-image:linear-gradient(to right,transparent,#000 48px);mask-image:linear-gradient(to right,transparent,#000 48px)}
.liverec-card{display:block;scroll-snap-align:start;min-width:0;margin:0;padding:0}
.liverec-card[hidden]{display:none}
.liverec-link{display:flex;flex-direction:column;height:100%;color:inherit;text-decoration:none;cursor:pointer;
background:var(--_bg);border:1px solid var(--_line);border-radius:var(--_r);overflow:hidden}
.liverec-link:hover{border-color:var(--_accent);color:inherit}
.liverec-link:focus-visible{outline:3px solid var(--_accent);outline-offset:-3px}
.liverec-img{display:block;aspect-ratio:1/1;width:100%;background:var(--_img);overflow:hidden}
.liverec-img img{display:block;width:100%;height:100%;max-width:none;object-fit:cover;border:0}
.liverec-name{display:-webkit-box;-webkit-line-clamp:2;-webkit-box-orient:vertical;overflow:hidden;
margin:10px 12px 4px;font-size:14px;font-weight:400;line-height:18px;height:36px}
.liverec-price{display:block;margin:0 12px 12px;font-size:15px;font-weight:650;line-height:20px;height:20px}
.liverec-arrow{all:initial;position:absolute;top:calc(var(--_w) / 2 - 18px);width:36px;height:36px;border-radius:50%;
background:var(--_bg);border:1px solid var(--_line);box-shadow:0 2px 8px rgba(0,0,0,.15);cursor:pointer;
display:grid;place-items:center;font:20px/1 system-ui,sans-serif;color:var(--liverec-text,#1f2328)}
.liverec-arrow[hidden]{display:none}
.liverec-arrow:hover{border-color:var(--_accent)}
.liverec-prev{left:6px}.liverec-next{right:6px}
.liverec-card.is-empty .liverec-img,.liverec-card.is-empty .liverec-name,.liverec-card.is-empty .liverec-price{
background:linear-gradient(90deg,var(--_img),#faf9f7,var(--_img));background-size:200% 100%;border-radius:6px;color:transparent}
@media (prefers-reduced-motion:no-preference){.liverec-card.is-empty .liverec-img{animation:liverec-pulse 1.4s ease infinite}
.liverec-row{scroll-behavior:smooth}}
@keyframes liverec-pulse{50%{background-position:100% 0}}`;

function build() {
  if (!target || section) return;
  // The row lives in a shadow root of its own element inside the target.
  const host = document.createElement("liverec-recs");
  const root = host.attachShadow({ mode: "open" });
  const style = document.createElement("style");
  style.textContent = CSS;
  const id = "liverec-h";
  section = document.createElement("section");
  section.className = "liverec";
  section.setAttribute("aria-labelledby", id);
  const h = document.createElement("h2");
  h.className = "liverec-title";
  h.part = "title";
  h.id = id;
  h.textContent = cfg.title || "Recommended for you";
  const scroller = document.createElement("div");
  scroller.className = "liverec-scroller";
  row = document.createElement("ul");
  row.className = "liverec-row";
  row.part = "row";
  row.setAttribute("role", "list");
  for (let i = 0; i < k; i++) {
    const li = document.createElement("li");
    li.className = "liverec-card is-empty";
    li.part = "card";
    li.innerHTML = '<a class="liverec-link" part="link"><span class="liverec-img" part="image">'
      + '<img alt="" width="400" height="400" decoding="async"></span>'
      + '<span class="liverec-name" part="name">&nbsp;</span>'
      + '<span class="liverec-price" part="price">&nbsp;</span></a>';
    li.setAttribute("aria-hidden", "true");
    row.append(li);
    slots.push(li);
  }
  // Pointer users see arrows when cards are off to a side; keyboard users tab through
  // the cards (each scrolls into view), so the arrows are not in the tab order.
  arrows = [["prev", -1, "‹"], ["next", 1, "›"]].map(([name, dir, glyph]) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = `liverec-arrow liverec-${name}`;
    b.part = "arrow";
    b.textContent = glyph;
    b.tabIndex = -1;
    b.setAttribute("aria-hidden", "true");
    b.hidden = true;
    b.addEventListener("click", () => row.scrollBy({ left: dir * row.clientWidth * 0.8 }));
    return b;
  });
  scroller.append(row, ...arrows);
  section.append(h, scroller);
  root.append(style, section);
  target.replaceChildren(host);
  row.addEventListener("scroll", edges, { passive: true });
  if (typeof ResizeObserver === "function") new ResizeObserver(edges).observe(row);
  watch(row);
}

function edges() {
  const left = row.scrollLeft > 4; // (4: the row's padding, and sub-pixel snapping)
  const right = row.scrollLeft + row.clientWidth < row.scrollWidth - 4;
  arrows[0].hidden = !left;
  arrows[1].hidden = !right;
  row.parentNode.classList.toggle("more-left", left);
  row.parentNode.classList.toggle("more-right", right);
}

function safeUrl(raw) {
  if (!raw) return null;
  try {
    const url = new URL(raw, document.baseURI);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch (e) { return null; }
}

function linkOf(it) {
  return safeUrl(it.url)
    || (itemUrl ? safeUrl(itemUrl.split("{item_id}").join(encodeURIComponent(it.item_id))) : null);
}

function price(value, currency) {
  if (typeof value !== "number") return "";
  const key = currency || "USD";
  if (!money[key]) {
    try {
      money[key] = new Intl.NumberFormat(document.documentElement.lang || undefined,
        { style: "currency", currency: key });
    } catch (e) { money[key] = { format: (v) => `${v.toFixed(2)} ${key}` }; }
  }
  return money[key].format(value);
}

async function render(items, forEvent, fromCache = false, recsId = null) {
  if (!target) return;
  build();
  // Without a catalog title there is nothing to draw; the viewed item never shows in
  // its own row, whether the list is fresh or the previous page's.
  const shown = items.filter((it) => it.title && it.item_id !== viewing).slice(0, k);
  if (!shown.length) return;
  const token = ++renderToken;
  // Decode the new images first, then swap every card at once: no blank frames.
  const urls = shown.map((it) => safeUrl(it.image));
  await Promise.race([
    Promise.all(urls.map((u) => {
      if (!u) return null;
      const img = new Image();
      img.src = u;
      return img.decode().catch(() => null);
    })),
    new Promise((r) => setTimeout(r, IMAGE_WAIT_MS)),
  ]);
  if (token !== renderToken) return; // a newer list arrived meanwhile
  slots.forEach((li, i) => {
    const it = shown[i];
    li.hidden = !it;
    if (!it) return;
    const a = li.firstChild;
    const href = linkOf(it);
    if (href) a.href = href; else a.removeAttribute("href");
    a.dataset.liverecItem = it.item_id;
    if (recsId) a.dataset.liverecRecs = recsId; else delete a.dataset.liverecRecs;
    const img = a.querySelector("img");
    if (urls[i]) { if (img.src !== urls[i]) img.src = urls[i]; } else img.removeAttribute("src");
    a.querySelector(".liverec-name").textContent = it.title;
    a.querySelector(".liverec-price").textContent = price(it.price, it.currency);
    li.classList.remove("is-empty");
    li.removeAttribute("aria-hidden");
  });
  section.classList.remove("is-idle");
  edges();
  // A list kept from the previous page has no recs frame on this connection: not reported.
  shownFrame = recsId ? { recsId, reported: false } : null;
  reportImpression();
  if (!fromCache) {
    renderedFor = forEvent;
    store(sessionStorage, RECS_KEY + (placement || ""), shown);
  }
  target.dataset.liverecFor = forEvent || "";
  target.dispatchEvent(new CustomEvent("liverec:render",
    { bubbles: true, detail: { forEvent, items: shown, fromCache } }));
}

// --- start --------------------------------------------------------------------------

const api = {
  version: "2",
  track,
  view: (itemId) => track("view", itemId),
  onRecs(fn) { listeners.add(fn); return () => listeners.delete(fn); },
  // For stores that draw their own row from onRecs: report what the shopper saw/clicked.
  feedback(kind, recsId, itemId) {
    if (kind !== "impression" && kind !== "click") {
      throw new TypeError(`liverec.feedback: unknown kind ${JSON.stringify(kind)}`);
    }
    const frame = { type: "feedback", kind, recs_id: String(recsId) };
    if (kind === "click") frame.item_id = String(itemId);
    sendFeedback(frame);
  },
  // After a login (a token minted by the store's backend) or a logout (null): a new
  // hello with the new identity.
  setUserToken(token) {
    const next = token ? String(token) : null;
    if (next === userToken) return;
    if (!next) { session = null; store(localStorage, SESSION_KEY, null); } // not the user's
    userToken = next;
    restart();
  },
  reconnect() { restart(); },
  close() { stopped = true; clearTimeout(retryTimer); if (ws) ws.close(1000); },
  get sessionId() { return session ? session.id : null; },
  get state() { return state; },
  get pending() { return outbox.length; },
  get resumed() { return resumed; },
  get lastEventId() { return lastEventId; },
  get renderedFor() { return renderedFor; },
};
// Calls made before the module ran: the stub snippet keeps them in sessionStorage (so
// they outlive a page where the script never loaded) or, failing that, in its array.
const queued = [...(store(sessionStorage, QUEUE_KEY) || []),
  ...(Array.isArray(window.liverec) ? window.liverec : [])];
store(sessionStorage, QUEUE_KEY, null);
window.liverec = api;

const page = [...document.querySelectorAll("[data-liverec-item]")]
  .find((el) => !el.closest("a") && !(target && target.contains(el)));
for (const call of queued) {
  if (!Array.isArray(call)) continue;
  const [method, ...args] = call;
  try { if (typeof api[method] === "function") api[method](...args); } catch (e) { log(e); }
}
if (page) track("view", page.dataset.liverecItem);
if ("datalayer" in cfg) followDataLayer(cfg.datalayer || "dataLayer");
if (target) {
  build();
  section.classList.remove("is-idle");
  const cached = store(sessionStorage, RECS_KEY + (placement || ""));
  if (cached && cached.length) render(cached, null, true);
  // Nothing to show by then (server down on a first visit): blank the row but keep its
  // space, so that nothing below it moves.
  setTimeout(() => { if (slots.every((s) => s.classList.contains("is-empty"))) section.classList.add("is-idle"); },
    GIVE_UP_EMPTY_MS);
}
addEventListener("online", () => { attempt = 0; if (state !== "refused") connect(); });
document.addEventListener("visibilitychange", () => {
  if (document.hidden) return;
  if (!ws && state !== "refused") connect();
  reportImpression(); // a list drawn while the tab was hidden counts once it is shown
});
connect();
