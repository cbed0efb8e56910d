// The reverbpy console: overview and charts (uPlot), channels, the live log (Server-Sent
// Events from {base}/stream), the event creator, and a pusher-js subscriber to watch what a
// client receives. Everything it shows comes from the server's JSON; nothing here is secret.
"use strict";

const base = document.querySelector('meta[name="console-base"]').content;
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
const MAX_ROWS = 500;
const MAX_PAUSED = 2000;

const state = {
  app: null,
  apps: [],
  source: null,
  paused: false,
  held: [],
  skipped: 0,
  charts: [],
  history: [],
  listener: null,
  selected: null,
};
window.__console = state; // for tests and for curious operators

async function getJSON(path, params = {}) {
  const url = new URL(base + path, location.href);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  const response = await fetch(url, { credentials: "same-origin" });
  if (response.status === 401) { location.href = base; throw new Error("signed out"); }
  return response.json();
}

function text(el, value) { el.textContent = value; return el; }
function cell(row, value, cls) {
  const td = row.insertCell();
  if (cls) td.className = cls;
  text(td, value ?? "");
  return td;
}
function fmt(value) { return Number.isInteger(value) ? String(value) : value.toFixed(2); }

// --- overview and charts -------------------------------------------------------------------

const CHARTS = [
  { title: "Connections, channels, users", series: ["connections", "channels", "users"], colors: ["#38bdf8", "#a78bfa", "#4ade80"] },
  { title: "Messages per second", series: ["messages_in", "messages_out"], colors: ["#fbbf24", "#38bdf8"] },
  { title: "API requests per second", series: ["api_requests"], colors: ["#f472b6"] },
  { title: "Webhooks queued, failed per second", series: ["webhooks_queued", "webhooks_failed"], colors: ["#94a3b8", "#f87171"] },
];

function chartData(spec) {
  return [state.history.map((s) => s.time), ...spec.series.map((name) => state.history.map((s) => s[name]))];
}

function buildCharts() {
  const holder = $("charts");
  holder.replaceChildren();
  state.charts = [];
  if (typeof uPlot === "undefined") return; // assets missing: the notice says so
  const width = Math.max(220, Math.floor(holder.clientWidth / 4) - 12);
  for (const spec of CHARTS) {
    const box = document.createElement("div");
    box.className = "chart";
    box.dataset.testid = "chart";
    box.appendChild(text(document.createElement("h4"), spec.title));
    holder.appendChild(box);
    const opts = {
      width, height: 150,
      legend: { show: true },
      scales: { x: { time: true } },
      axes: [{ stroke: "#94a3b8", grid: { stroke: "#243049" } }, { stroke: "#94a3b8", grid: { stroke: "#243049" }, size: 45 }],
      series: [{}, ...spec.series.map((name, i) => ({ label: name, stroke: spec.colors[i], width: 2, points: { show: true, size: 4 } }))],
    };
    state.charts.push({ spec, plot: new uPlot(opts, chartData(spec), box) });
  }
}

function redrawCharts() {
  for (const { spec, plot } of state.charts) plot.setData(chartData(spec));
}

function showFigures(figures) {
  for (const [name, value] of Object.entries(figures)) {
    const el = document.querySelector(`[data-testid="stat-${name}"]`);
    if (el && typeof value === "number") text(el, fmt(value));
  }
}

function addSample(sample) {
  const last = state.history[state.history.length - 1];
  if (last && last.time >= sample.time) return;
  state.history.push(sample);
  const cutoff = sample.time - 15 * 60;
  while (state.history.length && state.history[0].time < cutoff) state.history.shift();
  showFigures(sample);
  redrawCharts();
}

async function loadOverview() {
  const overview = await getJSON("/api/overview", { app: state.app });
  text($("interval"), overview.interval);
  for (const el of document.querySelectorAll("[data-scope]")) text(el, overview.scope[el.dataset.scope] || "");
  state.history = overview.history;
  const latest = overview.history[overview.history.length - 1];
  showFigures({
    connections: overview.now.connections, channels: overview.now.channels, users: overview.now.users,
    webhooks_queued: overview.now.webhooks_queued, webhooks_failed: overview.now.webhooks_failed,
    messages_in: latest ? latest.messages_in : 0, messages_out: latest ? latest.messages_out : 0,
    api_requests: latest ? latest.api_requests : 0,
  });
  // The failed count is a total in the card, a rate in the chart.
  text(document.querySelector('[data-testid="stat-webhooks_failed"]'), overview.now.webhooks_failed);
  buildCharts();
}

// --- the live log ----------------------------------------------------------------------------

function logRow(line) {
  const row = document.createElement("tr");
  row.dataset.kind = line.kind;
  row.dataset.testid = "log-line";
  cell(row, new Date(line.time * 1000).toLocaleTimeString());
  cell(row, line.kind);
  cell(row, line.socket_id);
  cell(row, (line.channels || []).join(", "));
  cell(row, line.event);
  const parts = [];
  if (line.detail) parts.push(line.detail);
  if (line.data !== undefined) parts.push(typeof line.data === "string" ? line.data : JSON.stringify(line.data));
  cell(row, parts.join("  "), "data");
  return row;
}

function showLines(lines) {
  const body = $("log");
  for (const line of lines) body.prepend(logRow(line));
  while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
}

function onLines(payload) {
  state.skipped += payload.skipped;
  text($("skipped"), state.skipped);
  if (state.paused) {
    state.held.push(...payload.lines);
    if (state.held.length > MAX_PAUSED) state.held.splice(0, state.held.length - MAX_PAUSED);
    text($("paused-count"), `${state.held.length} new while paused`);
    return;
  }
  showLines(payload.lines);
}

function openStream() {
  if (state.source) state.source.close();
  const url = new URL(base + "/stream", location.href);
  url.searchParams.set("app", state.app);
  const filters = { channel: "filter-channel", event: "filter-event", socket_id: "filter-socket" };
  for (const [param, id] of Object.entries(filters)) {
    const value = $(id).value.trim();
    if (value) url.searchParams.set(param, value);
  }
  const source = new EventSource(url);
  const dot = $("stream-state");
  source.addEventListener("hello", () => { dot.dataset.state = "open"; text(dot, "live"); });
  source.addEventListener("lines", (e) => onLines(JSON.parse(e.data)));
  source.addEventListener("sample", (e) => addSample(JSON.parse(e.data)));
  source.onerror = () => { dot.dataset.state = "closed"; text(dot, "reconnecting"); };
  state.source = source;
}

$("log-filter").addEventListener("submit", (e) => { e.preventDefault(); openStream(); });
$("pause").addEventListener("click", () => {
  state.paused = !state.paused;
  text($("pause"), state.paused ? "Resume" : "Pause");
  if (!state.paused) {
    showLines(state.held);
    state.held = [];
    text($("paused-count"), "");
  }
});
$("clear").addEventListener("click", () => $("log").replaceChildren());

// --- channels --------------------------------------------------------------------------------

async function loadChannels() {
  const answer = await getJSON("/api/channels", { app: state.app, prefix: $("channel-prefix").value.trim() });
  text($("channels-scope"), `${answer.total} channel(s), ${answer.scope}-wide${answer.truncated ? ", first ones shown" : ""}`);
  const body = $("channel-list");
  body.replaceChildren();
  for (const channel of answer.channels) {
    const row = body.insertRow();
    row.dataset.testid = "channel-row";
    row.dataset.channel = channel.name;
    if (channel.name === state.selected) row.className = "selected";
    cell(row, channel.name);
    cell(row, channel.type);
    cell(row, channel.subscription_count);
    row.addEventListener("click", () => selectChannel(channel.name));
  }
}

async function selectChannel(name) {
  state.selected = name;
  for (const row of $("channel-list").rows) row.className = row.dataset.channel === name ? "selected" : "";
  const info = await getJSON("/api/channel", { app: state.app, name });
  const detail = $("channel-detail");
  detail.replaceChildren(text(document.createElement("h3"), `${info.name} (${info.type}, ${info.subscription_count} subscriptions)`));
  if (info.members) {
    const list = document.createElement("ul");
    for (const member of info.members) {
      const item = text(document.createElement("li"), `${member.id}  ${JSON.stringify(member.info)}`);
      item.dataset.testid = "member";
      list.appendChild(item);
    }
    detail.appendChild(text(document.createElement("p"), `${info.members.length} member(s)`));
    detail.appendChild(list);
  }
  if ("cached" in info) {
    const pre = document.createElement("pre");
    pre.dataset.testid = "cached-event";
    text(pre, info.cached ? `cached: ${info.cached.event} ${info.cached.data}` : "no cached event");
    detail.appendChild(pre);
  }
}

$("channel-filter").addEventListener("submit", (e) => { e.preventDefault(); loadChannels(); });

// --- the event creator ------------------------------------------------------------------------

$("event-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const out = $("event-answer");
  const data = $("event-data").value;
  try { JSON.parse(data); } catch (err) { text(out, `Data is not JSON: ${err.message}`); return; }
  const response = await fetch(base + "/api/events", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify({
      app: state.app,
      channels: $("event-channels").value.split(",").map((c) => c.trim()).filter(Boolean),
      name: $("event-name").value.trim(),
      data,
    }),
  });
  const answer = await response.json();
  out.dataset.status = answer.status ?? response.status;
  text(out, answer.status !== undefined
    ? `HTTP ${answer.status} ${JSON.stringify(answer.answer)}`
    : `refused (${response.status}): ${answer.error}`);
});

// --- pusher-js, against this server -----------------------------------------------------------

$("listen-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = $("listen-channel").value.trim();
  if (!name || typeof Pusher === "undefined") return;
  const app = state.apps.find((a) => a.id === state.app);
  if (state.listener) state.listener.disconnect();
  const secure = location.protocol === "https:";
  const port = Number(location.port) || (secure ? 443 : 80);
  const path = base.slice(0, -"/console".length);
  const pusher = new Pusher(app.key, {
    cluster: "", wsHost: location.hostname, wsPort: port, wssPort: port, forceTLS: secure,
    enabledTransports: ["ws", "wss"], ...(path ? { wsPath: path } : {}),
  });
  state.listener = pusher;
  const status = $("listen-state");
  pusher.connection.bind("state_change", (s) => text(status, `${s.current}${pusher.connection.socket_id ? ` as ${pusher.connection.socket_id}` : ""}`));
  const channel = pusher.subscribe(name);
  channel.bind("pusher:subscription_succeeded", () => text(status, `subscribed to ${name} as ${pusher.connection.socket_id}`));
  channel.bind_global((event, data) => {
    if (event.startsWith("pusher")) return;
    const item = text(document.createElement("li"), `${new Date().toLocaleTimeString()} ${event} ${JSON.stringify(data)}`);
    item.dataset.testid = "listen-event";
    item.dataset.event = event;
    $("listen-log").prepend(item);
  });
});

// --- apps ----------------------------------------------------------------------------------------

async function selectApp(id) {
  state.app = id;
  state.held = [];
  state.skipped = 0;
  $("log").replaceChildren();
  await loadOverview();
  openStream();
  await loadChannels();
}

async function start() {
  const info = await getJSON("/api/apps");
  state.apps = info.apps;
  text($("adapter"), `adapter: ${info.adapter}`);
  const select = $("app");
  for (const app of info.apps) {
    const option = text(document.createElement("option"), `${app.id} (${app.key})${app.enabled ? "" : " disabled"}`);
    option.value = app.id;
    select.appendChild(option);
  }
  select.addEventListener("change", () => selectApp(select.value));
  if (info.assets_missing.length && !$("notice").textContent) {
    text($("notice"), `Assets missing: ${info.assets_missing.join(", ")}`);
  }
  await selectApp(info.apps[0].id);
  setInterval(loadChannels, 5000);
}

start();
