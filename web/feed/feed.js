// liverec live feed: the operator's view of /v1/feed (see src/liverec/server/feed.py).
// Sessions connected now, every event with the recommendations pushed after it, charts
// of events per second and latency percentiles over the last minutes, and click-through
// rate by model version and placement.

const TOKEN_KEY = "liverec:feed-token";
const MAX_ROWS = 120;
const MAX_SESSION_ROWS = 40;
const GA4 = { view: "view_item", click: "select_item", add_to_cart: "add_to_cart",
  remove_from_cart: "remove_from_cart", purchase: "purchase", rate: "rate" };

const $ = (sel) => document.querySelector(sel);
const url = new URL(location.href);
if (url.searchParams.has("token")) {
  sessionStorage.setItem(TOKEN_KEY, url.searchParams.get("token"));
  url.searchParams.delete("token");
  history.replaceState(null, "", url.pathname + url.search); // keep it out of the address bar
}

const state = { windowS: 300, t0: 0, events: [], p50: [], p99: [], sessions: new Map(), attempt: 0 };
let ws = null;
let pending = [];
let drawQueued = false;

function setStatus(kind, text) {
  const el = $("[data-status]");
  el.dataset.status = kind;
  $("[data-status-text]").textContent = text;
}

function connect() {
  const wsUrl = new URL("/v1/feed", location.href);
  wsUrl.protocol = wsUrl.protocol === "https:" ? "wss:" : "ws:";
  setStatus("connecting", "Connecting…");
  ws = new WebSocket(wsUrl);
  ws.onopen = () => {
    const hello = { type: "hello" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) hello.token = token;
    ws.send(JSON.stringify(hello));
  };
  ws.onmessage = (m) => handle(JSON.parse(m.data));
  ws.onclose = (e) => {
    ws = null;
    if (e.code === 1008 && /token/.test(e.reason)) {
      setStatus("denied", "Token needed");
      $("[data-login]").hidden = false;
      return;
    }
    setStatus("down", "Reconnecting…");
    const cap = Math.min(10000, 250 * 2 ** state.attempt++);
    setTimeout(connect, 100 + Math.random() * cap);
  };
}

$("[data-login]").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, e.target.token.value);
  e.target.hidden = true;
  connect();
});

function handle(frame) {
  switch (frame.type) {
    case "snapshot": {
      state.attempt = 0;
      setStatus("live", "Live");
      state.windowS = frame.window_s;
      state.t0 = frame.series.t0;
      state.events = frame.series.events;
      state.p50 = frame.series.p50_ms;
      state.p99 = frame.series.p99_ms;
      state.sessions = new Map(frame.sessions.map((s) => [s.sid, { ...s, connections: s.connections || 1 }]));
      $("[data-window]").textContent = `last ${Math.round(state.windowS / 60)} min`;
      $("[data-model]").textContent = frame.model || "–";
      kpi("sessions", frame.live_sessions);
      $("[data-ctr-window]").textContent = `last ${Math.round(state.windowS / 60)} min`;
      drawCtr(frame.ctr || []);
      queueDraw();
      break;
    }
    case "batch":
      if (frame.dropped) {
        const note = $("[data-dropped]");
        note.hidden = false;
        note.textContent = `This page fell behind: ${frame.dropped} entries skipped.`;
      }
      pending.push(...frame.entries);
      queueDraw();
      break;
    case "tick":
      state.events.push(frame.events);
      state.p50.push(frame.p50_ms);
      state.p99.push(frame.p99_ms);
      while (state.events.length > state.windowS) { state.events.shift(); state.p50.shift(); state.p99.shift(); }
      state.t0 = frame.t - state.events.length + 1;
      kpi("sessions", frame.sessions);
      kpi("eps", frame.minute.events_per_s.toFixed(1));
      kpi("p50", ms(frame.minute.p50_ms));
      kpi("p99", ms(frame.minute.p99_ms));
      if (frame.model) $("[data-model]").textContent = frame.model;
      if (frame.ctr) drawCtr(frame.ctr);
      queueDraw();
      break;
    default:
      console.warn("unknown feed frame", frame.type);
  }
}

function ms(v) { return v === null || v === undefined ? "–" : v < 10 ? `${v.toFixed(2)} ms` : `${v.toFixed(1)} ms`; }
function kpi(name, value) { $(`[data-kpi="${name}"]`).textContent = value ?? "–"; }
function clock(t) { return new Date(t * 1000).toLocaleTimeString([], { hour12: false }); }
function hue(sid) { let h = 0; for (const c of sid) h = (h * 31 + c.charCodeAt(0)) % 360; return h; }

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v; else if (k === "style") node.style.cssText = v; else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function sessionChip(sid) {
  return el("span", { class: "sid", title: sid, style: `--h:${hue(sid)}` }, sid.slice(0, 8));
}

function queueDraw() {
  if (drawQueued) return;
  drawQueued = true;
  requestAnimationFrame(() => { drawQueued = false; draw(); });
}

function draw() {
  const list = $("[data-events]");
  const rows = [];
  for (const e of pending) {
    const s = state.sessions.get(e.sid);
    if (e.kind === "open") {
      if (s) s.connections += 1;
      else state.sessions.set(e.sid, { sid: e.sid, placement: e.placement, events: 0, item: null, connections: 1, last: e.t });
    } else if (e.kind === "close") {
      if (s && --s.connections <= 0) state.sessions.delete(e.sid);
    } else if (e.kind === "event") {
      const info = s || { sid: e.sid, placement: e.placement, events: 0, connections: 1 };
      info.events += 1;
      info.item = e.item;
      info.title = e.title;
      info.last = e.t;
      state.sessions.delete(e.sid);
      state.sessions.set(e.sid, info); // most recent last
      rows.push(eventRow(e));
    }
  }
  pending = [];
  if (rows.length) {
    list.prepend(...rows.slice(-MAX_ROWS).reverse());
    while (list.children.length > MAX_ROWS) list.lastChild.remove();
  }
  drawSessions();
  chart($('[data-chart="events"]'), [{ values: state.events, color: "#3b82f6", bars: true }]);
  chart($('[data-chart="latency"]'), [
    { values: state.p50, color: "#14b8a6" },
    { values: state.p99, color: "#f59e0b" },
  ], "ms");
}

function eventRow(e) {
  const recs = el("span", { class: "recs" });
  for (const r of e.recs || []) recs.append(el("span", { class: "rec", title: r.id, text: r.title || r.id }));
  if (!(e.recs || []).length) recs.append(el("span", { class: "muted", text: "no recommendations" }));
  return el("li", { class: "event", "data-item": e.item },
    el("time", { datetime: new Date(e.t * 1000).toISOString(), text: clock(e.t) }),
    sessionChip(e.sid),
    el("span", { class: `action a-${e.action}`, title: `GA4: ${GA4[e.action] || e.action}`, text: e.action.replace(/_/g, " ") }),
    el("span", { class: "item", title: e.item, text: e.title || e.item }),
    el("span", { class: "arrow", "aria-label": "recommended", text: "→" }),
    recs,
    el("span", { class: "lat", text: ms(e.latency_ms) + (e.dup ? " · dup" : "") + (e.acked ? "" : " · not acked") }),
    el("span", { class: "mdl", text: e.model || "" }));
}

function drawSessions() {
  const body = $("[data-sessions]");
  const all = [...state.sessions.values()].reverse();
  $("[data-session-count]").textContent = `${state.sessions.size} connected`;
  body.replaceChildren(...all.slice(0, MAX_SESSION_ROWS).map((s) => el("tr", {},
    el("td", {}, sessionChip(s.sid)),
    el("td", { text: s.placement || "–" }),
    el("td", { text: String(s.events) }),
    el("td", { class: "item", text: s.title || s.item || "–" }))));
}

function pct(v) { return v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)} %`; }

function drawCtr(rows) {
  const body = $("[data-ctr]");
  const key = JSON.stringify(rows);
  if (body.dataset.key === key) return; // unchanged: leave the table (and any selection) alone
  body.dataset.key = key;
  if (!rows.length) {
    body.replaceChildren(el("tr", { class: "none" }, el("td", { colspan: "6", class: "muted", text: "No impressions reported yet" })));
    return;
  }
  body.replaceChildren(...rows.map((r) => el("tr", { "data-model": r.model, "data-placement": r.placement },
    el("td", { class: "mdl-cell", title: r.model, text: r.model || "–" }),
    el("td", { text: r.placement || "–" }),
    el("td", { class: "num", "data-col": "impressions", text: String(r.impressions) }),
    el("td", { class: "num", "data-col": "clicks", text: String(r.clicks) }),
    el("td", { class: "num strong", "data-col": "ctr", text: pct(r.ctr) }),
    el("td", { class: "num", "data-col": "window", title: `${r.window.clicks} clicks / ${r.window.impressions} impressions`, text: pct(r.window.ctr) }))));
}

function chart(canvas, series, unit = "") {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const n = state.windowS;
  const left = 40;
  const bottom = h - 18;
  let max = 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
  max = niceMax(max || 1);
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#8b93a3";
  g.strokeStyle = "#e6e8ee";
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = 6 + ((bottom - 6) * i) / 4;
    g.beginPath(); g.moveTo(left, y); g.lineTo(w, y); g.stroke();
    g.fillText(fmt(max * (1 - i / 4)) + (i === 0 ? ` ${unit}` : ""), 2, y + 4);
  }
  for (let m = 0; m * 60 <= n; m++) {
    const x = left + ((w - left) * (n - m * 60)) / n;
    g.fillText(m === 0 ? "now" : `−${m} min`, Math.min(x - 12, w - 26), h - 4);
  }
  const step = (w - left) / n;
  for (const s of series) {
    const off = n - s.values.length;
    g.fillStyle = s.color;
    g.strokeStyle = s.color;
    g.lineWidth = 1.8;
    g.beginPath();
    let pen = false;
    const dots = [];
    s.values.forEach((v, i) => {
      const x = left + (off + i) * step;
      if (v === null || v === undefined) { pen = false; return; }
      const y = bottom - ((bottom - 6) * v) / max;
      if (s.bars) g.fillRect(x, y, Math.max(1, step - 0.5), bottom - y);
      else if (!pen) { g.moveTo(x, y); pen = true; } else g.lineTo(x, y);
      const lone = (s.values[i - 1] ?? null) === null && (s.values[i + 1] ?? null) === null;
      if (lone && !s.bars) dots.push([x, y]); // a single second with data: show a dot
    });
    if (!s.bars) g.stroke();
    for (const [x, y] of dots) { g.beginPath(); g.arc(x, y, 2.5, 0, 2 * Math.PI); g.fill(); }
  }
}

function niceMax(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}
function fmt(v) { return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1).replace(/\.0$/, "") : v.toFixed(2).replace(/\.?0+$/, ""); }

addEventListener("resize", queueDraw);
connect();
