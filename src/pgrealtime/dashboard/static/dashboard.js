// pgrealtime dashboard: hand-written, no build step, no dependencies.
//
// Talks to the server it came from: the REST API with the admin API key (Bearer), a
// snapshot of live figures polled once a second (GET /api/realtime/dashboard), and the
// /realtime WebSocket (authenticated with the same key) for the message stream and
// publishing. The key lives in sessionStorage only: gone when the tab closes. Every
// value from the server reaches the page through textContent, never as HTML.
"use strict";

const KEY = "pgrealtime.apiKey";
const WATCHED = "pgrealtime.watched";
const POLL_MS = 1000;
const HISTORY = 60; // sparkline points: one minute at one poll a second
const MAX_STREAM = 500;
const DELIVERIES_EVERY = 15; // polls between two looks at the webhook deliveries
const API = "/api/realtime";

const $ = (id) => document.getElementById(id);

let apiKey = sessionStorage.getItem(KEY);
let pollTimer = null;
let previous = null; // the last snapshot, for rates
let tick = 0;
const series = { connections: [], delivered: [], published: [], changes: [] };
const stream = []; // messages seen, oldest first
let watched = new Set(JSON.parse(sessionStorage.getItem(WATCHED) || "[]"));
const subscribed = new Map(); // channel -> "pending" | "ok" | error text
let ws = null;
let wsAuthed = false;
let wsRetry = null;
let nextId = 1;
let channelsById = new Map();

// -- helpers ---------------------------------------------------------------------
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name in node) node[name] = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

function rate(value) {
  if (value === null || !Number.isFinite(value)) return "–";
  return value < 10 ? value.toFixed(1) : Math.round(value).toLocaleString();
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return date.toLocaleTimeString([], { hour12: false }) +
    (Date.now() - date > 86400000 ? " " + date.toLocaleDateString() : "");
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || "HTTP " + status);
    this.status = status;
    this.code = body && body.error;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + apiKey };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(API + path, init);
  let data = null;
  try { data = await response.json(); } catch (_) { /* an empty or non-JSON body */ }
  if (response.status === 401 && apiKey) {
    signOut("The API key was refused: sign in again.");
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function setLive(state, text) {
  const badge = $("live");
  badge.dataset.state = state;
  badge.textContent = text;
}

// -- sign in / out ---------------------------------------------------------------
async function signIn(key) {
  apiKey = key;
  const snapshot = await api("GET", "/dashboard");
  sessionStorage.setItem(KEY, key);
  $("login").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  render(snapshot);
  schedulePoll();
  loadChannels();
  loadDeliveries();
  connectWs();
}

function signOut(message) {
  apiKey = null;
  sessionStorage.removeItem(KEY);
  clearTimeout(pollTimer);
  clearTimeout(wsRetry);
  if (ws) { ws.onclose = null; ws.close(); ws = null; }
  wsAuthed = false;
  previous = null;
  $("app").hidden = true;
  $("login").hidden = false;
  $("sign-out").hidden = true;
  $("login-error").textContent = message || "";
  setLive("off", "signed out");
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  const key = $("api-key").value.trim();
  try {
    await signIn(key);
    $("api-key").value = "";
  } catch (error) {
    apiKey = null;
    $("login-error").textContent =
      error.status === 401 || error.status === 403 ? "That is not the admin API key." : error.message;
  }
});
$("sign-out").addEventListener("click", () => signOut(""));

// -- live figures ----------------------------------------------------------------
function schedulePoll() {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(poll, POLL_MS);
}

async function poll() {
  if (!apiKey) return;
  if (document.hidden) { schedulePoll(); return; } // a tab in the background costs nothing
  try {
    render(await api("GET", "/dashboard"));
    tick += 1;
    // the delivery list reads the whole deliveries table (no index on the update time)
    if (tick % DELIVERIES_EVERY === 0) loadDeliveries();
    if (tick % 10 === 0) loadChannels();
  } catch (error) {
    if (!apiKey) return;
    setLive("error", "server unreachable");
  }
  schedulePoll();
}

function push(name, value) {
  const points = series[name];
  points.push(value);
  if (points.length > HISTORY) points.shift();
  const svg = $("s-" + name);
  if (!svg) return;
  const top = Math.max(1, ...points);
  const step = 120 / (HISTORY - 1);
  const start = 120 - (points.length - 1) * step;
  const coords = points.map((v, i) => `${(start + i * step).toFixed(1)},${(31 - (v / top) * 29).toFixed(1)}`);
  svg.replaceChildren();
  const ns = "http://www.w3.org/2000/svg";
  const area = document.createElementNS(ns, "polygon");
  area.setAttribute("points", `${start.toFixed(1)},32 ${coords.join(" ")} 120,32`);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", coords.join(" "));
  svg.append(area, line);
}

function render(s) {
  setLive("live", "live");
  const dt = previous ? s.monotonicSeconds - previous.monotonicSeconds : 0;
  const per = (name) => (previous && dt > 0 ? Math.max(0, (s[name] - previous[name]) / dt) : null);
  const rates = { delivered: per("delivered"), published: per("published"), changes: per("changesDelivered") };
  previous = s;
  $("f-connections").textContent = s.connections.toLocaleString();
  push("connections", s.connections);
  for (const [name, value] of Object.entries(rates)) {
    $("f-" + name).textContent = rate(value);
    if (value !== null) push(name, value);
  }
  const feed = s.changes || {};
  $("f-feed").textContent = feed.state || (feed.enabled ? "on" : "off");
  $("f-feed").className = feed.state === "streaming" ? "ok" : "";
  $("f-feed-lag").textContent = feed.enabled ? "lag " + bytes(feed.lag_bytes) : feed.reason || "";
  const queue = s.webhooks || {};
  $("f-webhooks").textContent =
    queue.pending === null ? "?" : queue.pending.toLocaleString() + (queue.pendingCapped ? "+" : "");
  $("f-listener").textContent = "pending · bus " + (s.listener || "–");
  renderLiveChannels(s);
  renderFeed(feed);
}

function renderLiveChannels(s) {
  const presence = s.presence || {};
  const rows = s.channels.map((c) =>
    el("tr", { "data-channel": c.name },
      el("td", { class: "mono" }, c.name),
      el("td", { class: "num" }, c.subscribers.toLocaleString()),
      el("td", { class: "num" }, presence[c.name] === undefined ? "–" : String(presence[c.name])),
      el("td", {}, watched.has(c.name) ? el("span", { class: "muted" }, "watching")
        : el("button", { type: "button", class: "small quiet", onclick: () => watch(c.name) }, "Watch"))));
  $("live-channels").tBodies[0].replaceChildren(...rows);
  const more = s.channelsWithSubscribers - s.channels.length;
  $("live-empty").hidden = s.channels.length > 0;
  $("live-empty").textContent = s.channels.length ? "" : "No channel has subscribers.";
  if (more > 0) {
    $("live-channels").tBodies[0].append(el("tr", {}, el("td", { colSpan: 4, class: "muted" }, `and ${more} more`)));
  }
}

const FEED_FACTS = [
  ["state", "State"], ["reason", "Reason"], ["slot", "Slot"], ["publication", "Publication"],
  ["lag_bytes", "Lag", bytes], ["confirmed_lsn", "Confirmed LSN"],
  ["delivered_changes", "Changes handed on"], ["consecutive_failures", "Failures in a row"],
  ["last_error", "Last error"], ["skipped_changes", "Skipped changes"],
  ["tables_without_replica_identity", "Tables without replica identity", (v) => (v && v.length ? v.join(", ") : "none")],
];

function renderFeed(feed) {
  const items = [];
  for (const [key, label, format] of FEED_FACTS) {
    if (!(key in feed) || feed[key] === null || feed[key] === "") continue;
    items.push(el("dt", {}, label), el("dd", {}, format ? format(feed[key]) : String(feed[key])));
  }
  $("feed").replaceChildren(...items);
}

// -- channels (REST) -------------------------------------------------------------
async function loadChannels() {
  try {
    const channels = await api("GET", "/channels");
    channelsById = new Map(channels.map((c) => [c.id, c]));
    const rows = channels.length ? channels.map(channelRow)
      : [el("tr", {}, el("td", { colSpan: 4, class: "muted" },
        "No channels yet: clients may subscribe only to names a channel's pattern matches."))];
    $("channels").tBodies[0].replaceChildren(...rows);
  } catch (error) {
    $("channel-error").textContent = error.message;
  }
}

function channelRow(c) {
  const urls = c.webhookUrls || [];
  const toggle = el("input", {
    type: "checkbox", checked: c.enabled, title: c.enabled ? "Enabled: click to disable" : "Disabled: click to enable",
    "aria-label": "Enabled " + c.pattern,
    onchange: async (event) => {
      event.target.disabled = true;
      try {
        await api("PUT", "/channels/" + c.id, { enabled: event.target.checked });
      } catch (error) {
        $("channel-error").textContent = error.message;
      }
      loadChannels();
      if (event.target.checked) resubscribeRefused();
    },
  });
  return el("tr", { class: c.enabled ? "" : "disabled", "data-pattern": c.pattern },
    el("td", { class: "mono" }, c.pattern, c.description ? el("span", { class: "sub" }, c.description) : null),
    el("td", { class: "url" }, urls.length ? urls.join("\n") : el("span", { class: "muted" }, "none")),
    el("td", {}, toggle),
    el("td", {},
      el("button", { type: "button", class: "small quiet", onclick: () => editChannel(c) }, "Edit"),
      el("button", { type: "button", class: "small quiet", onclick: () => deleteChannel(c) }, "Delete")));
}

function editChannel(c) {
  $("ch-id").value = c ? c.id : "";
  $("ch-pattern").value = c ? c.pattern : "";
  $("ch-description").value = c ? c.description || "" : "";
  $("ch-webhooks").value = c ? (c.webhookUrls || []).join("\n") : "";
  $("ch-enabled").checked = c ? c.enabled : true;
  $("ch-save").textContent = c ? "Save" : "Create";
  $("channel-editor-title").textContent = c ? "Edit " + c.pattern : "New channel";
  $("channel-error").textContent = "";
  $("channel-editor").open = true;
  if (c) $("ch-pattern").focus();
}

async function deleteChannel(c) {
  if (!confirm(`Delete the channel ${c.pattern}? Its subscribers are dropped.`)) return;
  try {
    await api("DELETE", "/channels/" + c.id);
  } catch (error) {
    $("channel-error").textContent = error.message;
  }
  loadChannels();
}

$("ch-cancel").addEventListener("click", () => { editChannel(null); $("channel-editor").open = false; });
$("channel-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const id = $("ch-id").value;
  const urls = $("ch-webhooks").value.split("\n").map((u) => u.trim()).filter(Boolean);
  const description = $("ch-description").value.trim();
  const body = {
    pattern: $("ch-pattern").value.trim(),
    description: description || null,
    webhookUrls: urls.length ? urls : null,
    enabled: $("ch-enabled").checked,
  };
  try {
    if (id) await api("PUT", "/channels/" + id, body);
    else await api("POST", "/channels", body);
    editChannel(null);
    $("channel-editor").open = false;
  } catch (error) {
    $("channel-error").textContent = error.message;
  }
  loadChannels();
  if (body.enabled) resubscribeRefused();
});

// -- webhook deliveries (REST) -------------------------------------------------------
async function loadDeliveries() {
  try {
    const status = encodeURIComponent($("wh-status").value);
    const rows = await api("GET", `/webhooks/deliveries?status=${status}&limit=50`);
    $("deliveries").tBodies[0].replaceChildren(...rows.map(deliveryRow));
    $("wh-empty").hidden = rows.length > 0;
  } catch (error) {
    $("wh-note").textContent = error.message;
  }
}

function deliveryRow(d) {
  const retry = d.status === "failed" || d.status === "dead"
    ? el("button", { type: "button", class: "small", onclick: () => retryMessage(d.messageId) }, "Retry")
    : null;
  return el("tr", {},
    el("td", {}, when(d.updatedAt)),
    el("td", { class: "mono" }, d.channelName, el("span", { class: "sub" }, d.eventName)),
    el("td", { class: "url mono" }, d.url),
    el("td", { class: "status-" + d.status }, d.status + (d.lastStatusCode ? " " + d.lastStatusCode : "")),
    el("td", { class: "num" }, d.attempts),
    el("td", { class: "err" }, d.lastError || ""),
    el("td", {}, retry));
}

async function retryMessage(messageId) {
  try {
    const result = await api("POST", `/messages/${messageId}/deliveries/retry`);
    $("wh-note").textContent = `Queued ${result.requeued} again.`;
  } catch (error) {
    $("wh-note").textContent = error.message;
  }
  loadDeliveries();
}

$("wh-status").addEventListener("change", loadDeliveries);
$("wh-refresh").addEventListener("click", loadDeliveries);

// -- message stream (WebSocket) -----------------------------------------------------
function send(frame) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
}

function connectWs() {
  clearTimeout(wsRetry);
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  ws = new WebSocket(scheme + location.host + "/realtime");
  wsAuthed = false;
  setWsState("connecting");
  ws.onopen = () => send({ type: "auth", token: apiKey, id: "auth" });
  ws.onmessage = (event) => onFrame(JSON.parse(event.data));
  ws.onclose = (event) => {
    wsAuthed = false;
    for (const channel of watched) subscribed.set(channel, "pending");
    renderWatched();
    setWsState(`closed (${event.code}), reconnecting`);
    if (apiKey) wsRetry = setTimeout(connectWs, 2000);
  };
}

function setWsState(text) {
  $("ws-state").textContent = "WebSocket: " + text;
}

function onFrame(frame) {
  switch (frame.type) {
    case "auth_success":
      wsAuthed = true;
      setWsState("connected");
      for (const channel of watched) subscribe(channel);
      break;
    case "subscribed":
      subscribed.set(frame.channel, "ok");
      renderWatched();
      break;
    case "message":
      addToStream(frame);
      break;
    case "published":
      $("publish-status").textContent = `Published to ${frame.channel} (position ${frame.position}).`;
      break;
    case "error":
      if (frame.id === "auth") {
        setWsState("refused: " + frame.message);
      } else if (String(frame.id || "").startsWith("pub-")) {
        $("publish-status").textContent = `Not published: ${frame.message}`;
      } else if (frame.channel && watched.has(frame.channel)) {
        subscribed.set(frame.channel, frame.message);
        renderWatched();
        note(`${frame.channel}: ${frame.message}`);
      } else {
        note(frame.message);
      }
      break;
    default:
      break;
  }
}

function subscribe(channel) {
  subscribed.set(channel, "pending");
  renderWatched();
  send({ type: "subscribe", channel, id: "sub-" + nextId++ });
}

// A channel changed from this page may now admit what it refused or ended: try again.
function resubscribeRefused() {
  if (!wsAuthed) return;
  for (const channel of watched) {
    const state = subscribed.get(channel);
    if (state !== "ok" && state !== "pending") subscribe(channel);
  }
}

function watch(channel) {
  channel = channel.trim();
  if (!channel || watched.has(channel)) return;
  watched.add(channel);
  sessionStorage.setItem(WATCHED, JSON.stringify([...watched]));
  if (wsAuthed) subscribe(channel);
  else { subscribed.set(channel, "pending"); renderWatched(); }
}

function unwatch(channel) {
  watched.delete(channel);
  subscribed.delete(channel);
  sessionStorage.setItem(WATCHED, JSON.stringify([...watched]));
  send({ type: "unsubscribe", channel, id: "unsub-" + nextId++ });
  renderWatched();
}

function renderWatched() {
  const chips = [...watched].map((channel) => {
    const state = subscribed.get(channel) || "pending";
    const failed = state !== "ok" && state !== "pending";
    const title = state === "ok" ? "subscribed" : state === "pending" ? "subscribing…" : state;
    return el("span", { class: "chip", title, "data-channel": channel, "data-state": failed ? "error" : state },
      (state === "ok" ? "● " : state === "pending" ? "○ " : "⚠ ") + channel,
      failed && wsAuthed ? el("button", { type: "button", title: "Subscribe again", "aria-label": "Subscribe again to " + channel, onclick: () => subscribe(channel) }, "↻") : null,
      el("button", { type: "button", title: "Stop watching", "aria-label": "Stop watching " + channel, onclick: () => unwatch(channel) }, "×"));
  });
  $("watched").replaceChildren(...chips);
}

function addToStream(message) {
  stream.push(message);
  if (stream.length > MAX_STREAM) stream.shift();
  if (matches(message)) $("stream").prepend(streamItem(message));
  const list = $("stream");
  while (list.children.length > MAX_STREAM) list.lastChild.remove();
}

function note(text) {
  $("stream").prepend(el("li", { class: "note" }, text));
}

function matches(m) {
  const channel = $("filter-channel").value.trim();
  const event = $("filter-event").value.trim();
  return (!channel || m.channel.includes(channel)) && (!event || m.event.includes(event));
}

function streamItem(m) {
  let payload = JSON.stringify(m.payload);
  if (payload.length > 2000) payload = payload.slice(0, 2000) + " …";
  return el("li", { "data-channel": m.channel, "data-event": m.event },
    el("div", { class: "meta" },
      el("span", {}, when(m.timestamp)),
      el("span", { class: "ch" }, m.channel),
      el("span", { class: "ev" }, m.event),
      el("span", {}, "#" + m.position),
      el("span", {}, m.senderType + (m.senderId ? " " + m.senderId : ""))),
    el("pre", {}, payload));
}

function renderStream() {
  $("stream").replaceChildren(...stream.filter(matches).reverse().map(streamItem));
}

$("filter-channel").addEventListener("input", renderStream);
$("filter-event").addEventListener("input", renderStream);
$("stream-clear").addEventListener("click", () => { stream.length = 0; renderStream(); });
$("watch-form").addEventListener("submit", (event) => {
  event.preventDefault();
  watch($("watch-channel").value);
  $("watch-channel").value = "";
});

$("publish-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const channel = $("pub-channel").value.trim();
  const eventName = $("pub-event").value.trim();
  let payload;
  try {
    payload = JSON.parse($("pub-payload").value || "{}");
  } catch (error) {
    $("publish-status").textContent = "The payload is not JSON: " + error.message;
    return;
  }
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
    $("publish-status").textContent = "The payload must be a JSON object.";
    return;
  }
  if (!wsAuthed) {
    $("publish-status").textContent = "The WebSocket is not connected yet.";
    return;
  }
  watch(channel); // see what was sent: subscribed first, the server keeps frame order
  send({ type: "publish", channel, event: eventName, payload, id: "pub-" + nextId++ });
  $("publish-status").textContent = "Publishing…";
});

// -- start -------------------------------------------------------------------------
renderWatched();
if (apiKey) {
  signIn(apiKey).catch(() => signOut("Sign in again."));
}
