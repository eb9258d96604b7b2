// liverec widget: live recommendations over one WebSocket. Plain ES module, no build.
//
//   <div id="recs"></div>
//   <script type="module" src="https://recs.example.com/widget/liverec.js"
//           data-target="#recs" data-placement="product" data-k="8"></script>
//
// Sends a view for the product the page shows (an element, not a link, carrying
// data-liverec-item), a click for every link carrying data-liverec-item, and what the
// page reports with liverec.track(action, itemId). Renders the recs pushed back, in
// place, and reports each list once as an impression when at least half of the row is
// in view, and a click on one of its cards, both tied to the recs frame that drew it.
// Reconnects with backoff and jitter, resumes its session, sends again what the
// server has not acked. Documentation: docs/widget.md.

const SESSION_KEY = "liverec:session"; // localStorage: {id, t}, shared by the tabs
const OUTBOX_KEY = "liverec:outbox"; // sessionStorage: this tab's unacked events
const RECS_KEY = "liverec:recs:"; // sessionStorage + placement: the last list shown
const SESSION_IDLE_MS = 30 * 60 * 1000; // a new session after 30 minutes without events
const OUTBOX_MAX = 200;
const BACKOFF_BASE_MS = 250;
const PING_EVERY_MS = 25000;
const PONG_WAIT_MS = 10000;
const IMAGE_WAIT_MS = 400; // how long a new list waits for its images before showing
const GIVE_UP_EMPTY_MS = 6000; // hide the row when nothing could be shown by then
const SEEN_RATIO = 0.5; // an impression: at least this share of the row in view
const FEEDBACK_MAX = 8; // feedback frames kept while the socket is down; older ones go
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
const wsUrl = (() => {
  const base = new URL(cfg.server || "./..", import.meta.url);
  const url = new URL("v1/ws", base.href.endsWith("/") ? base : base.href + "/");
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
})();

const log = (...a) => debug && console.debug("[liverec]", ...a);
const store = (area, key, value) => {
  try {
    if (value === undefined) return JSON.parse(area.getItem(key) || "null");
    area.setItem(key, JSON.stringify(value));
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
let ws = null;
let state = "closed";
let attempt = 0;
let retryTimer = 0;
let retrying = false;
let pingTimer = 0;
let pongTimer = 0;
let resumed = false;
let lastEventId = outbox.length ? outbox[outbox.length - 1].id : null;
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
  try { ws = new WebSocket(wsUrl); } catch (e) { scheduleRetry(); return; }
  const sock = ws;
  sock.onopen = () => {
    const hello = { type: "hello", k };
    if (placement) hello.placement = placement;
    if (session) hello.session_id = session.id;
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
    // An idle close of a hidden tab waits until the tab is shown again.
    if (!(e.code === 1000 && document.hidden)) scheduleRetry();
  };
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
      // Errors without `ref` answer feedback (unknown_recs after a server restart, ...):
      // nothing to do but note them.
      log("error", frame.code, frame.message);
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

function track(action, itemId, opts = {}) {
  const name = ACTIONS[action];
  if (!name) throw new TypeError(`liverec.track: unknown action ${JSON.stringify(action)}`);
  for (const item of Array.isArray(itemId) ? itemId : [itemId]) {
    if (item === undefined || item === null || item === "") continue;
    const ev = { type: "event", id: newId(), action: name, item_id: String(item),
      ts: Date.now() / 1000 };
    if (name === "rate") ev.rating = Number(opts.rating);
    outbox.push(ev);
    if (outbox.length > OUTBOX_MAX) outbox.splice(0, outbox.length - OUTBOX_MAX);
    lastEventId = ev.id;
    send(ev);
  }
  saveOutbox();
  touchSession();
  if (!ws && !retrying) connect(); // e.g. a hidden tab closed for idleness
}

document.addEventListener("click", (e) => {
  const link = e.target instanceof Element && e.target.closest("a[data-liverec-item]");
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
let renderToken = 0;
const money = {};

const CSS = `.liverec{--_accent:var(--liverec-accent,#1f5f52);--_muted:var(--liverec-muted,#5b6474);
--_bg:var(--liverec-card-bg,#fff);--_line:var(--liverec-border,#e7e3dd);--_r:var(--liverec-radius,14px);
--_gap:var(--liverec-gap,16px);--_w:var(--liverec-card-width,176px);--_img:var(--liverec-image-bg,#f3f1ed);
font:inherit;color:var(--liverec-text,inherit)}
.liverec[hidden]{display:none}
.liverec-title{font-size:var(--liverec-title-size,1.25rem);font-weight:650;margin:0 0 12px}
.liverec-row{display:grid;grid-auto-flow:column;grid-auto-columns:var(--_w);gap:var(--_gap);
overflow-x:auto;overscroll-behavior-x:contain;scroll-snap-type:x proximity;list-style:none;margin:0;padding:2px 2px 10px}
.liverec-card{scroll-snap-align:start;min-width:0}
.liverec-card[hidden]{display:none}
.liverec-link{display:flex;flex-direction:column;height:100%;color:inherit;text-decoration:none;
background:var(--_bg);border:1px solid var(--_line);border-radius:var(--_r);overflow:hidden}
.liverec-link:hover{border-color:var(--_accent)}
.liverec-link:focus-visible{outline:3px solid var(--_accent);outline-offset:2px}
.liverec-img{display:block;aspect-ratio:1;background:var(--_img)}
.liverec-img img{display:block;width:100%;height:100%;object-fit:cover}
.liverec-name{display:-webkit-box;-webkit-line-clamp:2;-webkit-box-orient:vertical;overflow:hidden;
margin:10px 12px 4px;font-size:.9rem;line-height:1.3;min-height:2.6em}
.liverec-price{margin:auto 12px 12px;font-weight:650;min-height:1.3em}
.liverec-card.is-empty .liverec-img,.liverec-card.is-empty .liverec-name,.liverec-card.is-empty .liverec-price{
background:linear-gradient(90deg,var(--_img),#faf9f7,var(--_img));background-size:200% 100%;border-radius:6px;color:transparent}
@media (prefers-reduced-motion:no-preference){.liverec-card.is-empty .liverec-img{animation:liverec-pulse 1.4s ease infinite}}
@keyframes liverec-pulse{50%{background-position:100% 0}}`;

function build() {
  if (!target || section) return;
  if (!document.getElementById("liverec-style")) {
    const style = document.createElement("style");
    style.id = "liverec-style";
    style.textContent = CSS;
    document.head.append(style);
  }
  const id = "liverec-h-" + Math.random().toString(36).slice(2, 8);
  section = document.createElement("section");
  section.className = "liverec";
  section.setAttribute("aria-labelledby", id);
  const h = document.createElement("h2");
  h.className = "liverec-title";
  h.id = id;
  h.textContent = cfg.title || "Recommended for you";
  const row = document.createElement("ul");
  row.className = "liverec-row";
  row.setAttribute("role", "list");
  for (let i = 0; i < k; i++) {
    const li = document.createElement("li");
    li.className = "liverec-card is-empty";
    li.innerHTML = '<a class="liverec-link"><span class="liverec-img"><img alt="" width="400" '
      + 'height="400" decoding="async"></span><span class="liverec-name">&nbsp;</span>'
      + '<span class="liverec-price">&nbsp;</span></a>';
    li.setAttribute("aria-hidden", "true");
    row.append(li);
    slots.push(li);
  }
  section.append(h, row);
  target.replaceChildren(section);
  watch(row);
}

function safeUrl(raw) {
  if (!raw) return null;
  try {
    const url = new URL(raw, document.baseURI);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch (e) { return null; }
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
  const shown = items.filter((it) => it.title).slice(0, k); // without a catalog: nothing to draw
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
    const href = safeUrl(it.url);
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
  section.hidden = false;
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
  version: "1",
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
  reconnect() { attempt = 0; if (ws) ws.close(); else connect(); },
  close() { stopped = true; clearTimeout(retryTimer); if (ws) ws.close(1000); },
  get sessionId() { return session ? session.id : null; },
  get state() { return state; },
  get pending() { return outbox.length; },
  get resumed() { return resumed; },
  get lastEventId() { return lastEventId; },
  get renderedFor() { return renderedFor; },
};
const queued = Array.isArray(window.liverec) ? window.liverec : [];
window.liverec = api;

if (target) {
  build();
  const cached = store(sessionStorage, RECS_KEY + (placement || ""));
  if (cached && cached.length) render(cached, null, true);
  setTimeout(() => { if (section && slots.every((s) => s.classList.contains("is-empty"))) section.hidden = true; },
    GIVE_UP_EMPTY_MS);
}
const page = [...document.querySelectorAll("[data-liverec-item]")]
  .find((el) => !el.closest("a") && !(target && target.contains(el)));
if (page) track("view", page.dataset.liverecItem);
for (const [method, ...args] of queued) if (typeof api[method] === "function") api[method](...args);
addEventListener("online", () => { attempt = 0; connect(); });
document.addEventListener("visibilitychange", () => {
  if (document.hidden) return;
  if (!ws) connect();
  reportImpression(); // a list drawn while the tab was hidden counts once it is shown
});
connect();
