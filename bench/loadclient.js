#!/usr/bin/env node
// A lean load generator for bench/load.py and bench/matrix.py: the same phases, frames
// and result JSON as load.py's Python client (`load.py _client`), in one Node process
// with the `ws` package, so that 5,000 sockets at 2,000 events/s do not need the
// cores the server under test is measured on.
//
// Owns nothing of the traffic: load.py writes the schedule (traffic.py's shapes) to
// cfg.schedule_file first, {"warm": [item ids], "events": [[seconds from the start,
// socket, its number, item id], ...]} in time order; this client sends exactly that.
//
// Phases, on stdout one JSON line each, each released by a "go" line on stdin:
//   warm (one socket: hello, then warm_events events, each answered by ack + recs)
//   -> idle (N sockets said hello, got welcome + recs; "go T" aligns the start to
//   epoch second T) -> window_start, window_end -> result -> (go) close and exit.
// Latency: from sending an event to the recs frame whose for_event is it or a later
// event of the same socket (the server replaces stale recs: "superseded"); an event
// of the window without recs within cfg.drain seconds is lost.
//
//   npm ci --prefix bench        # once: bench/node_modules/ws
//   python bench/load.py --targets echo --sockets 5000 --rate 2000 --client node

"use strict";

const fs = require("fs");
const readline = require("readline");
const { performance } = require("perf_hooks");
const WebSocket = require("ws");

const OPEN_CONCURRENCY = 32; // handshakes in flight while opening sockets
const PHASE_TIMEOUT_MS = 120000;

const cfg = JSON.parse(process.argv[2]);
const plan = JSON.parse(fs.readFileSync(cfg.schedule_file, "utf8"));

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

// --- "go" lines on stdin
const lines = [];
const waiting = [];
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (waiting.length) waiting.shift()(line);
  else lines.push(line);
});

function waitGo() {
  const got = lines.length
    ? Promise.resolve(lines.shift())
    : new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no 'go' on stdin")), PHASE_TIMEOUT_MS);
        waiting.push((line) => {
          clearTimeout(timer);
          resolve(line);
        });
      });
  return got.then((line) => {
    const [word, at] = line.trim().split(" ");
    if (word !== "go") throw new Error(`load client: expected 'go', got ${JSON.stringify(line)}`);
    return at ? Number(at) : null;
  });
}

// --- sockets
function open() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(cfg.url, {
      perMessageDeflate: false,
      maxPayload: 2 ** 20,
      handshakeTimeout: 30000,
    });
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

function hello(ws, timeoutMs) {
  // a new session: the server issues its id; wait for welcome and the first recs
  return new Promise((resolve, reject) => {
    const got = new Set();
    const timer = setTimeout(() => reject(new Error("no welcome + recs")), timeoutMs);
    const onMessage = (data) => {
      got.add(JSON.parse(data).type);
      if (got.has("welcome") && got.has("recs")) {
        clearTimeout(timer);
        ws.off("message", onMessage);
        resolve();
      }
    };
    ws.on("message", onMessage);
    ws.send(JSON.stringify({ type: "hello" }));
  });
}

function frames(ws) {
  // every frame in order: next(timeoutMs) resolves with the oldest not yet taken
  const queue = [];
  const takers = [];
  ws.on("message", (data) => (takers.length ? takers.shift()(data) : queue.push(data)));
  return (timeoutMs) =>
    queue.length
      ? Promise.resolve(queue.shift())
      : new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error("no answer")), timeoutMs);
          takers.push((data) => {
            clearTimeout(timer);
            resolve(data);
          });
        });
}

async function openAll(n) {
  const socks = new Array(n);
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      const ws = await open();
      await hello(ws, 30000);
      socks[i] = ws;
    }
  }
  await Promise.all(Array.from({ length: Math.min(OPEN_CONCURRENCY, n) }, worker));
  return socks;
}

function percentile(sorted, q) {
  // nearest rank, as load.py's percentile
  if (!sorted.length) return NaN;
  const rank = Math.max(1, Math.min(sorted.length, Math.round((q / 100) * sorted.length + 0.5)));
  return sorted[rank - 1];
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

async function main() {
  // 1. warm up the app on one socket, closed loop
  const warm = await open();
  await hello(warm, 10000);
  const next = frames(warm);
  for (let k = 0; k < plan.warm.length; k++) {
    warm.send(JSON.stringify({ type: "event", id: `w${k}`, action: "view", item_id: plan.warm[k] }));
    await next(10000); // ack
    await next(10000); // recs
  }
  warm.close();
  emit({ phase: "warm" });
  await waitGo();

  // 2. N idle sockets
  const n = cfg.sockets;
  const t0 = performance.now();
  const socks = await openAll(n);
  emit({ phase: "idle", sockets: socks.length, open_s: (performance.now() - t0) / 1000 });
  const startAt = await waitGo();
  if (cfg.idle_only) {
    for (const ws of socks) ws.close();
    process.exit(0);
  }

  // 3. open-loop load on the same sockets: warm-up, measured window, drain
  const lead = startAt === null ? 500 : Math.max(0, startAt * 1000 - Date.now());
  const start = performance.now() + lead;
  const w0 = start + cfg.warmup * 1000;
  const w1 = w0 + cfg.duration * 1000;
  // per socket, the unanswered events: parallel arrays used as queues
  const pendK = Array.from({ length: n }, () => []);
  const pendAt = Array.from({ length: n }, () => []);
  const pendIn = Array.from({ length: n }, () => []);
  const head = new Int32Array(n);
  const latencies = [];
  const sendLag = [];
  const errors = {};
  let sentWindow = 0;
  let sentTotal = 0;
  let superseded = 0;
  let acks = 0;
  let closed = 0;
  let recsWindow = 0;
  let windowOpen = 0;
  let allSent = false;
  let drained = null;

  socks.forEach((ws, i) => {
    ws.on("message", (data) => {
      const now = performance.now();
      const msg = JSON.parse(data);
      if (msg.type === "recs") {
        const forEvent = msg.for_event;
        if (!forEvent) return;
        if (now >= w0 && now < w1) recsWindow++;
        const k = Number(forEvent.slice(forEvent.lastIndexOf(".") + 1));
        const ks = pendK[i];
        let h = head[i];
        while (h < ks.length && ks[h] <= k) {
          if (pendIn[i][h]) {
            latencies.push(now - pendAt[i][h]);
            if (ks[h] < k) superseded++;
            windowOpen--;
          }
          h++;
        }
        head[i] = h;
        if (h > 1024) {
          // drop the answered prefix now and then
          ks.splice(0, h);
          pendAt[i].splice(0, h);
          pendIn[i].splice(0, h);
          head[i] = 0;
        }
        if (windowOpen === 0 && allSent && drained) drained();
      } else if (msg.type === "ack") {
        acks++;
      } else if (msg.type === "error") {
        const code = String(msg.code);
        errors[code] = (errors[code] || 0) + 1;
      }
    });
    ws.on("close", () => closed++);
  });

  let cpu0 = null;
  const marks = sleep(w0 - performance.now()).then(() => {
    cpu0 = process.cpuUsage();
    emit({ phase: "window_start" });
  });

  // the sender: one timer walks the time-ordered schedule
  const events = plan.events;
  await new Promise((resolve) => {
    let p = 0;
    function tick() {
      const now = performance.now();
      while (p < events.length) {
        const [offset, i, k, item] = events[p];
        const due = start + offset * 1000;
        if (due > now) break;
        p++;
        if (due >= w1) continue;
        const inWindow = due >= w0 && due < w1;
        const sent = performance.now();
        pendK[i].push(k);
        pendAt[i].push(sent);
        pendIn[i].push(inWindow);
        sentTotal++;
        if (inWindow) {
          sentWindow++;
          windowOpen++;
          sendLag.push(sent - due);
        }
        const ws = socks[i];
        if (ws.readyState === WebSocket.OPEN) {
          ws.send(JSON.stringify({ type: "event", id: `${i}.${k}`, action: "view", item_id: item }));
        }
      }
      if (p >= events.length) return resolve();
      setTimeout(tick, start + events[p][0] * 1000 - performance.now());
    }
    setTimeout(tick, start - performance.now());
  });
  await marks;
  const cpu = process.cpuUsage(cpu0);
  emit({ phase: "window_end" });
  allSent = true;
  if (windowOpen > 0) {
    await new Promise((resolve) => {
      drained = resolve;
      setTimeout(resolve, cfg.drain * 1000);
    });
  }
  const lost = windowOpen;
  const lat = latencies.sort((a, b) => a - b);
  if (cfg.latency_file) fs.writeFileSync(cfg.latency_file, JSON.stringify(lat));
  const all = lost ? lat.concat(new Array(lost).fill(Infinity)) : lat;
  const lag = sendLag.sort((a, b) => a - b);
  // JSON has no Infinity: load.py's json.loads reads the bare token, so write it
  const result = {
    phase: "result",
    events_sent_window: sentWindow,
    events_sent_total: sentTotal,
    events_per_s: sentWindow / cfg.duration,
    recs_per_s: recsWindow / cfg.duration,
    p50_ms: percentile(all, 50),
    p90_ms: percentile(all, 90),
    p99_ms: percentile(all, 99),
    max_ms: all.length ? all[all.length - 1] : NaN,
    lost: lost,
    superseded: superseded,
    acks: acks,
    errors: errors,
    closed_early: closed,
    send_lag_p99_ms: percentile(lag, 99),
    client_cpu_s: (cpu.user + cpu.system) / 1e6,
  };
  const text = JSON.stringify(result, (key, value) =>
    typeof value === "number" && !Number.isFinite(value) ? `__${value}__` : value
  ).replace(/"__(Infinity|-Infinity|NaN)__"/g, "$1");
  process.stdout.write(text + "\n");
  await waitGo();
  for (const ws of socks) ws.terminate();
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`load client: ${err.stack || err}\n`);
  process.exit(1);
});
