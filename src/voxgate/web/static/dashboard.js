// The operators' dashboard: every number comes from the API (/v1/stats, /v1/stats/cost, /v1/calls) with
// the operator's API key, held in memory only; plots are drawn here with the vendored uPlot.
"use strict";

const STAGES = ["vad", "transcript", "first_token", "tts_first_audio", "first_audio_sent", "first_audio_heard"];
const STAGE_COLOURS = ["#8e9aaf", "#5b8def", "#f0a33a", "#9b59b6", "#2e8b57", "#c93b3b"];
const TRANSPORTS = ["sip", "twilio", "telnyx", "webrtc", "realtime_ws"];
const KPI_NAMES = {
  first_response_p95_ms: "first response P95", interruption_success_rate: "interruption success",
  task_completion_rate: "task completion", drop_rate: "session drops", buffer_overflows: "buffer overflows",
  tool_success_rate: "tool success", fallthrough_rate: "“didn't understand”", escalation_rate: "escalation",
};
const state = { key: "", since: "", until: "", stats: null, cost: null, calls: null, call: null, loaded: false };
window.__dashboard = state;  // what the page shows, for the browser test to compare with the API

const $ = (id) => document.getElementById(id);

// One formatting of each kind of number, used by the tiles and by the browser test alike.
function formatKpi(name, value) {
  if (value === null || value === undefined) return "–";
  if (name.endsWith("_ms")) return `${Math.round(value)} ms`;
  if (name === "buffer_overflows") return String(value);
  return `${(value * 100).toFixed(1)} %`;
}
window.formatKpi = formatKpi;

function formatTarget(name, target) {
  if (Array.isArray(target)) return `${formatKpi(name, target[0])} – ${formatKpi(name, target[1])}`;
  const atMost = ["first_response_p95_ms", "drop_rate", "buffer_overflows", "fallthrough_rate"].includes(name);
  return `${atMost ? "≤" : "≥"} ${formatKpi(name, target)}`;
}

async function api(path, params = {}, init = {}) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== undefined));
  const url = query.toString() ? `${path}?${query}` : path;
  const reply = await fetch(url, { ...init, headers: { Authorization: `Bearer ${state.key}`, ...(init.headers || {}) } });
  const body = await reply.json();
  if (!reply.ok) throw new Error(body.error ? body.error.message : `${reply.status} from ${path}`);
  return body;
}

function windowParams() {
  return { since: state.since, until: state.until };
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const child of children) node.append(child);
  return node;
}

function drawTiles(stats) {
  const tiles = $("tiles");
  tiles.replaceChildren();
  for (const [name, check] of Object.entries(stats.targets)) {
    const verdict = check.met === null ? "" : check.met ? "met" : "missed";
    tiles.append(el("div", { class: `tile ${verdict}`, "data-kpi": name },
      el("div", { class: "name" }, KPI_NAMES[name] || name),
      el("div", { class: "value" }, formatKpi(name, check.value)),
      el("div", { class: "target" }, `target ${formatTarget(name, check.target)}`)));
  }
  const extra = [["calls", String(stats.calls)], ["handle time", stats.average_handle_time_s === null ? "–" :
    `${stats.average_handle_time_s.toFixed(0)} s`], ["barge-ins", String(stats.barge_ins)]];
  for (const [name, text] of extra) {
    tiles.append(el("div", { class: "tile", "data-kpi": name.replace(" ", "_") },
      el("div", { class: "name" }, name), el("div", { class: "value" }, text), el("div", { class: "target" }, " ")));
  }
}

function plot(target, opts, data) {
  const box = $(target);
  box.replaceChildren();
  return new uPlot({ width: Math.max(300, box.clientWidth - 10), height: 200, ...opts }, data, box);
}

function drawHistogram(stats) {
  const h = stats.latency_histogram;
  plot("histogram", {
    scales: { x: { time: false } },
    axes: [{ label: "ms", values: (u, ticks) => ticks.map((t) => `${t}`) }, { label: "turns" }],
    series: [{}, { label: "turns", fill: "rgba(47,111,237,.35)", stroke: "#2f6fed",
      paths: uPlot.paths.bars({ size: [0.9], align: 1 }), points: { show: false } }],
  }, [h.bins_from_ms, h.counts]);
}

async function drawBudget() {
  const box = $("budget");
  box.replaceChildren();
  const per = await Promise.all(TRANSPORTS.map((t) => api("/v1/stats", { ...windowParams(), transport: t })));
  per.forEach((s, i) => {
    const budget = s.latency_budget_ms;
    if (!budget.total.count) return;
    const total = STAGES.reduce((sum, stage) => sum + (budget[stage].p50 || 0), 0) || 1;
    const stack = el("div", { class: "stack" });
    STAGES.forEach((stage, j) => {
      const ms = budget[stage].p50;
      if (!ms) return;
      stack.append(el("div", { style: `width:${(100 * ms / total).toFixed(2)}%;background:${STAGE_COLOURS[j]}`,
        title: `${stage}: ${Math.round(ms)} ms`, "data-stage": stage }));
    });
    box.append(el("div", { class: "bar-row", "data-transport": TRANSPORTS[i] }, el("span", {}, TRANSPORTS[i]), stack,
      el("span", {}, `${Math.round(total)} ms`)));
  });
  $("budget-legend").replaceChildren(...STAGES.map((stage, j) =>
    el("span", {}, el("i", { style: `background:${STAGE_COLOURS[j]}` }), stage)));
}

function drawCost(cost) {
  const days = Object.keys(cost.by_day);
  const xs = days.map((d) => Date.parse(`${d}T00:00:00Z`) / 1000);
  plot("cost", {
    scales: { x: { auto: false, range: () => [xs[0] - 86400, xs[xs.length - 1] + 86400] } },  // one day reads as one
    series: [{}, { label: "voxgate $", stroke: "#2f6fed", width: 2 },
      { label: "human agent $", stroke: "#c93b3b", dash: [6, 4] }],
  }, [xs, days.map((d) => cost.by_day[d].cost_usd), days.map((d) => cost.by_day[d].human_cost_usd)]);
  const t = cost.total;
  $("cost-total").textContent = t.calls ? `${t.calls} calls, ${t.minutes} min: $${t.cost_usd.toFixed(2)} ` +
    `($${t.cost_per_minute_usd.toFixed(4)}/min) against $${t.human_cost_usd.toFixed(2)} for a human agent.` : "No finished calls.";
}

function drawCalls(live, recent) {
  const liveBody = $("live").tBodies[0];
  liveBody.replaceChildren(...live.data.map((c) => {
    const button = el("button", { class: "hangup", type: "button" }, "hang up");
    button.onclick = () => api(`/v1/calls/${c.id}/hangup`, {}, { method: "POST", body: "{}",
      headers: { "Content-Type": "application/json" } }).then(refresh, showError);
    return el("tr", { "data-call": c.id }, el("td", {}, c.id), el("td", {}, c.agent), el("td", {}, c.transport),
      el("td", {}, new Date(c.started_at).toLocaleTimeString()), el("td", {}, button));
  }));
  if (!live.data.length) liveBody.append(el("tr", {}, el("td", { colspan: "5" }, "No live calls.")));
  const body = $("recent").tBodies[0];
  body.replaceChildren(...recent.data.map((c) => {
    const row = el("tr", { "data-call": c.id }, ...[c.id, c.agent, c.transport, new Date(c.started_at).toLocaleString(),
      c.status, c.outcome || "", String(c.turns), String(c.interruptions),
      c.cost_usd === null ? "–" : c.cost_usd.toFixed(4)].map((text) => el("td", {}, text)));
    row.onclick = () => showCall(c.id).catch(showError);
    return row;
  }));
}

async function showCall(id) {
  const call = await api(`/v1/calls/${id}`);
  state.call = call;
  for (const row of $("recent").tBodies[0].rows) row.classList.toggle("picked", row.dataset.call === id);
  const start = Date.parse(call.started_at) / 1000;
  const lanes = { caller: 1, agent: 2, tool: 3, "barge-in": 4, transfer: 5 };
  const events = [];
  for (const item of call.items) events.push([Date.parse(item.created_at) / 1000 - start, item.role === "user" ? "caller" : item.type === "message" ? "agent" : "tool"]);
  for (const tool of call.tool_calls) events.push([Date.parse(tool.created_at) / 1000 - start, "tool"]);
  for (const b of call.barge_ins) events.push([Date.parse(b.at) / 1000 - start, "barge-in"]);
  if (call.status === "transferred" && call.ended_at) events.push([Date.parse(call.ended_at) / 1000 - start, "transfer"]);
  events.sort((a, b) => a[0] - b[0]);
  const xs = events.map((e) => e[0]);
  const series = Object.keys(lanes).map((lane) => events.map((e) => (e[1] === lane ? lanes[lane] : null)));
  const colours = ["#2f6fed", "#2e8b57", "#f0a33a", "#c93b3b", "#9b59b6"];
  plot("timeline", {
    scales: { x: { time: false }, y: { range: [0, 6] } },
    axes: [{ label: "seconds into the call" }, { size: 80, splits: () => [1, 2, 3, 4, 5],
      values: (u, ticks) => ticks.map((t) => Object.keys(lanes)[t - 1] || "") }],
    series: [{}, ...Object.keys(lanes).map((lane, i) => ({ label: lane, stroke: colours[i], paths: () => null,
      points: { show: true, size: 9, fill: colours[i] } }))],
  }, [xs, ...series]);
  $("timeline-call").textContent = `${call.id}: ${call.agent} over ${call.transport}, ${call.status}` +
    (call.outcome ? ` (${call.outcome})` : "") + ", no recording kept";
}

// -- the escalation queue: an operator takes a waiting browser call over with this browser's microphone
// (POST /v1/escalations/{id}/take_over with an SDP offer); the agent stops and the caller hears the operator.

state.queue = [];
state.operator = null; // {callId, pc, mic, state: "connecting" | "connected" | "ended"} while on a call

function waitForIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") resolve(); });
    setTimeout(resolve, timeoutMs); // post what we have: the gateway learns the rest from ICE checks
  });
}

function showOperatorCall(text) {
  $("operator-call").hidden = !state.operator;
  $("operator-status").textContent = text;
}

async function takeOver(card) {
  if (state.operator) return;
  let mic;
  try {
    mic = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    throw new Error(`The microphone could not be opened (${err.name}): allow it for this page to take a call.`);
  }
  const pc = new RTCPeerConnection();
  const call = { callId: card.call_id, pc, mic, state: "connecting" };
  state.operator = call;
  mic.getTracks().forEach((t) => pc.addTrack(t, mic));
  pc.ontrack = (e) => { $("operator-audio").srcObject = e.streams[0] || new MediaStream([e.track]); };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "connected") {
      call.state = "connected";
      showOperatorCall(`On the call with ${card.caller || "the caller"} (${card.call_id}): ${card.reason}`);
    } else if (["failed", "closed"].includes(pc.connectionState)) {
      endOperatorCall("The call ended.");
    }
  };
  showOperatorCall(`Taking over ${card.call_id}…`);
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc, 1500);
    const reply = await fetch(`/v1/escalations/${encodeURIComponent(card.call_id)}/take_over`, {
      method: "POST", body: pc.localDescription.sdp,
      headers: { Authorization: `Bearer ${state.key}`, "Content-Type": "application/sdp" },
    });
    if (!reply.ok) {
      let message = `HTTP ${reply.status}`;
      try { message = (await reply.json()).error.message; } catch (_) { /* keep the status */ }
      throw new Error(`The call could not be taken over: ${message}`);
    }
    await pc.setRemoteDescription({ type: "answer", sdp: await reply.text() });
  } catch (err) {
    endOperatorCall("");
    throw err;
  }
  await drawQueue();
}

function endOperatorCall(text) {
  const call = state.operator;
  if (!call) return;
  call.state = "ended";
  call.pc.close(); // the gateway sees the operator leave and ends the call
  call.mic.getTracks().forEach((t) => t.stop());
  state.operator = null;
  showOperatorCall(text);
  $("operator-call").hidden = !text;
}

async function drawQueue() {
  const queue = await api("/v1/escalations", { state: "waiting" });
  state.queue = queue.data;
  const body = $("queue").tBodies[0];
  body.replaceChildren(...queue.data.map((card) => {
    const cell = el("td");
    if (card.transport === "webrtc") {  // a browser call: its caller can talk to this browser
      const button = el("button", { class: "take-over", type: "button" }, "take over");
      button.disabled = state.operator !== null;
      button.onclick = () => takeOver(card).catch(showError);
      cell.append(button);
    }
    return el("tr", { "data-call": card.call_id }, el("td", {}, card.call_id), el("td", { class: "why" }, card.summary),
      el("td", {}, card.agent), el("td", {}, card.transport),
      el("td", {}, new Date(card.requested_at * 1000).toLocaleTimeString()), cell);
  }));
  if (!queue.data.length) body.append(el("tr", {}, el("td", { colspan: "6" }, "Nobody is waiting.")));
}

function showError(err) {
  $("error").hidden = false;
  $("error").textContent = String(err.message || err);
}

async function refresh() {
  const [stats, cost, live, recent] = await Promise.all([
    api("/v1/stats", windowParams()), api("/v1/stats/cost", windowParams()),
    api("/v1/calls", { status: "active", limit: 50 }), api("/v1/calls", { ...windowParams(), limit: 20 })]);
  Object.assign(state, { stats, cost, calls: recent });
  $("board").hidden = false;
  $("error").hidden = true;
  $("window").textContent = `${stats.calls} calls` + (state.since ? ` from ${state.since}` : "") +
    (state.until ? ` to ${state.until}` : "");
  drawTiles(stats);
  drawHistogram(stats);
  drawCost(cost);
  drawCalls(live, recent);
  await drawQueue();
  await drawBudget();
  if (!state.call && recent.data.length) await showCall(recent.data[0].id);
  state.loaded = true;
  $("status").textContent = `Updated ${new Date().toLocaleTimeString()}.`;
}

function isoOf(localValue) {
  return localValue ? new Date(`${localValue}Z`).toISOString() : "";
}

function start() {
  // A link may carry the key and window in its fragment (never sent to a server); it is read, then dropped.
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("key")) {
    state.key = fragment.get("key");
    state.since = fragment.get("since") || "";
    state.until = fragment.get("until") || "";
    history.replaceState(null, "", location.pathname);
    refresh().catch(showError);
  }
  $("login").onsubmit = (event) => {
    event.preventDefault();
    state.key = $("key").value.trim();
    state.since = isoOf($("since").value);
    state.until = isoOf($("until").value);
    state.call = null;
    refresh().catch(showError);
  };
  setInterval(() => { if (state.key) refresh().catch(showError); }, 10000);
  setInterval(() => { if (state.key && state.loaded) drawQueue().catch(showError); }, 2000); // callers wait
  $("operator-hangup").onclick = () => endOperatorCall("Call ended.");
}

start();
