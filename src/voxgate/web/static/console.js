// The voxgate voice console: one WebRTC call to the gateway's default agent, the way OpenAI's
// quickstart builds it. The page asks its own server (/console/token) for an ephemeral key, posts its
// SDP offer with that key, and speaks the Realtime protocol over the `oai-events` data channel. In dev
// mode the page's session cookie (HttpOnly, same-origin) stands for it; otherwise the operator types
// an API key, kept in memory only. window.__console mirrors what the page shows (tests read it).
"use strict";

const $ = (id) => document.getElementById(id);
const CONNECT_TIMEOUT_MS = 15000;
const AUDIBLE_RMS = 0.02; // AnalyserNode RMS (full scale 1.0) that counts as hearing the agent

const view = (window.__console = {
  state: "idle", callId: null, sessionId: null, errors: [], user: [], agent: [], tools: [], latencies: [],
  inbound: { packets: 0, energy: 0, maxRms: 0 },
});

let call = null; // {pc, dc, mic, ...} while a call is up

function setStatus(text, kind = "idle") {
  $("status").textContent = text;
  $("status").className = `status ${kind}`;
  view.state = kind === "live" ? "live" : kind === "failed" ? "failed" : view.state;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = false;
  view.errors.push(text);
}

function clearError() { $("error").hidden = true; }

// -- transcript ------------------------------------------------------------------------------------

const lines = new Map(); // item_id -> <li>

function line(itemId, role) {
  let li = lines.get(itemId);
  if (!li) {
    li = document.createElement("li");
    li.className = `${role} pending`;
    li.innerHTML = `<span class="who">${role === "user" ? "you" : "agent"}</span><span class="text"></span>`;
    lines.set(itemId, li);
    $("transcript").appendChild(li);
  }
  return li;
}

function setText(itemId, role, text, final) {
  const li = line(itemId, role);
  li.querySelector(".text").textContent = text;
  if (final) li.classList.remove("pending");
  li.scrollIntoView({ block: "nearest" });
}

// -- latency per turn ----------------------------------------------------------------------------

let turn = null; // {n, stoppedAt, replyMs, heardMs, row}

function startTurn() {
  const n = view.latencies.length + 1;
  const row = document.createElement("tr");
  row.innerHTML = `<td>${n}</td><td class="reply">…</td><td class="heard">…</td>`;
  $("latency").querySelector("tbody").appendChild(row);
  turn = { n, stoppedAt: performance.now(), replyMs: null, heardMs: null, row };
  view.latencies.push({ turn: n, reply_ms: null, heard_ms: null });
}

function markTurn(field) {
  if (!turn || turn[field] !== null) return;
  const ms = Math.round(performance.now() - turn.stoppedAt);
  turn[field] = ms;
  turn.row.querySelector(field === "replyMs" ? ".reply" : ".heard").textContent = `${ms} ms`;
  view.latencies[turn.n - 1][field === "replyMs" ? "reply_ms" : "heard_ms"] = ms;
}

// -- tool calls ------------------------------------------------------------------------------------

const toolRows = new Map();

function showTool(id, name, args, status, output) {
  const list = $("tools");
  list.querySelector(".empty")?.remove();
  let li = toolRows.get(id);
  if (!li) {
    li = document.createElement("li");
    toolRows.set(id, li);
    list.appendChild(li);
    view.tools.push({ id, name });
  }
  const shownArgs = typeof args === "string" ? args : JSON.stringify(args ?? {});
  const result = output == null ? "" : (typeof output === "string" ? output : JSON.stringify(output));
  li.innerHTML = `<strong></strong> <code></code><span class="result"></span>`;
  li.querySelector("strong").textContent = name;
  li.querySelector("code").textContent = shownArgs;
  li.querySelector(".result").textContent = [status, result].filter(Boolean).join(" · ").slice(0, 240);
}

async function pollTools() {
  if (!call || !view.callId) return;
  try {
    const res = await fetch(`/console/calls/${encodeURIComponent(view.callId)}`,
      { cache: "no-store", headers: operatorHeaders() });
    if (!res.ok) return;
    const body = await res.json();
    for (const t of body.tool_calls || []) showTool(t.tool_call_id, t.name, t.arguments, t.status, t.output);
  } catch (_) { /* the next poll will tell */ }
}

// -- server events -----------------------------------------------------------------------------------

function onEvent(event) {
  switch (event.type) {
    case "session.created":
      view.sessionId = event.session.id;
      $("session-id").textContent = event.session.id;
      setStatus("Connected. Speak now.", "live");
      break;
    case "input_audio_buffer.speech_started":
      setText(event.item_id, "user", "…", false);
      break;
    case "input_audio_buffer.speech_stopped":
      startTurn();
      break;
    case "conversation.item.input_audio_transcription.completed":
      setText(event.item_id, "user", event.transcript || "(nothing heard)", true);
      view.user.push(event.transcript || "");
      break;
    case "response.output_audio_transcript.delta":
    case "response.output_text.delta": {
      const li = line(event.item_id, "agent");
      setText(event.item_id, "agent", li.querySelector(".text").textContent + event.delta, false);
      break;
    }
    case "response.output_audio_transcript.done":
    case "response.output_text.done": {
      const text = event.transcript ?? event.text ?? "";
      setText(event.item_id, "agent", text, true);
      view.agent.push(text);
      break;
    }
    case "conversation.item.truncated":
      lines.get(event.item_id)?.classList.add("interrupted");
      break;
    case "response.function_call_arguments.done": // a function the client must run: show it as asked
      showTool(event.call_id, event.name, event.arguments, "asked of the client", null);
      break;
    case "output_audio_buffer.started":
      markTurn("replyMs");
      break;
    case "error":
      showError(`Gateway error: ${event.error.message}`);
      break;
  }
}

// -- inbound audio: level meter and "heard" latency ---------------------------------------------------

function watchInbound(stream) {
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  ctx.createMediaStreamSource(stream).connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  call.meter = setInterval(() => {
    analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const x of buf) sum += x * x;
    const rms = Math.sqrt(sum / buf.length);
    view.inbound.maxRms = Math.max(view.inbound.maxRms, rms);
    $("level-bar").style.width = `${Math.min(100, rms * 400)}%`;
    if (rms > AUDIBLE_RMS) markTurn("heardMs");
  }, 50);
  call.audioContext = ctx;
}

async function pollStats() {
  if (!call) return;
  const stats = await call.pc.getStats();
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      view.inbound.packets = s.packetsReceived || 0;
      view.inbound.energy = s.totalAudioEnergy || 0;
      $("level").textContent = `${view.inbound.packets} pkts · energy ${view.inbound.energy.toFixed(3)}`;
    }
  });
}

// -- the call ------------------------------------------------------------------------------------------

function operatorHeaders() {
  const operatorKey = $("operator-key").value.trim();
  return operatorKey ? { Authorization: `Bearer ${operatorKey}` } : {};
}

async function getKey() {
  const operatorKey = $("operator-key").value.trim();
  let res;
  try {
    res = await fetch("/console/token", { method: "POST", headers: operatorHeaders() });
  } catch (_) {
    throw new Error("Cannot reach the gateway. Is it running, and is this page served by it?");
  }
  if (res.status === 401 || res.status === 403) {
    $("operator").hidden = false;
    throw new Error(operatorKey
      ? "The operator API key was refused. Check it and try again."
      : "This gateway needs an operator API key for console calls (it is not in dev mode, or this page " +
        "was not loaded from it): enter the key to start a call.");
  }
  if (!res.ok) throw new Error(`The gateway could not issue a session key (HTTP ${res.status}).`);
  return res.json();
}

async function getMicrophone() {
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    if (err.name === "NotAllowedError" || err.name === "SecurityError") {
      throw new Error("Microphone access was denied. Allow the microphone for this page " +
        "(the icon in the address bar, or the browser's site settings), then press Start call again.");
    }
    if (err.name === "NotFoundError") throw new Error("No microphone was found. Plug one in and try again.");
    throw new Error(`The microphone could not be opened: ${err.message}`);
  }
}

function waitForIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, timeoutMs); // post what we have: the gateway learns the rest from ICE checks
  });
}

async function startCall() {
  clearError();
  $("start").disabled = true;
  try {
    setStatus("Getting a session key…");
    const token = await getKey();
    setStatus("Opening the microphone…");
    const mic = await getMicrophone();
    const pc = new RTCPeerConnection({ iceServers: token.ice_servers || [] });
    call = { pc, mic, dc: null, meter: null, polls: [], audioContext: null, connectTimer: null };
    mic.getTracks().forEach((t) => pc.addTrack(t, mic));
    pc.ontrack = (e) => {
      $("remote").srcObject = e.streams[0] || new MediaStream([e.track]);
      watchInbound($("remote").srcObject);
    };
    pc.onconnectionstatechange = () => {
      $("connection").textContent = pc.connectionState;
      if (pc.connectionState === "connected") clearTimeout(call?.connectTimer);
      if (pc.connectionState === "failed") {
        endCall(false);
        setStatus("Connection failed.", "failed");
        showError("The media connection failed: this browser could not reach the gateway's UDP ports. " +
          "On another network the gateway needs a STUN/TURN server (setting ice_servers).");
      } else if (pc.connectionState === "disconnected") {
        setStatus("Connection interrupted; trying to recover…");
      }
    };
    const dc = pc.createDataChannel("oai-events");
    call.dc = dc;
    dc.onmessage = (e) => { try { onEvent(JSON.parse(e.data)); } catch (err) { console.warn(err); } };
    dc.onclose = () => { if (call) { endCall(false); setStatus("The gateway ended the call."); } };

    setStatus("Connecting…");
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc, 1500);
    const res = await fetch("/v1/realtime/calls", {
      method: "POST", body: pc.localDescription.sdp,
      headers: { Authorization: `Bearer ${token.value}`, "Content-Type": "application/sdp" },
    });
    if (res.status === 401) {
      throw new Error("The session key expired or was already used before the call could start. " +
        "Press Start call again for a fresh one.");
    }
    if (!res.ok) {
      let message = `HTTP ${res.status}`;
      try { message = (await res.json()).error.message; } catch (_) { /* keep the status */ }
      throw new Error(`The gateway refused the call: ${message}`);
    }
    const location = res.headers.get("Location") || "";
    view.callId = location.split("/").pop();
    $("call-id").textContent = view.callId;
    await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
    call.connectTimer = setTimeout(() => {
      if (call && pc.connectionState !== "connected") {
        endCall(false);
        setStatus("Connection failed.", "failed");
        showError("No media connection after 15 s: the gateway is reachable over HTTP but not over WebRTC. " +
          "Check UDP between this browser and the gateway, or configure a TURN server.");
      }
    }, CONNECT_TIMEOUT_MS);
    call.polls.push(setInterval(pollTools, 1000), setInterval(pollStats, 250));
    $("hangup").disabled = false;
  } catch (err) {
    endCall(false);
    setStatus("Not connected.", "failed");
    showError(err.message);
  }
}

function endCall(byUser) {
  if (!call) { $("start").disabled = false; return; }
  const c = call;
  call = null;
  clearTimeout(c.connectTimer);
  clearInterval(c.meter);
  c.polls.forEach(clearInterval);
  try { c.dc?.close(); } catch (_) { /* already closed */ }
  c.pc.close(); // the gateway sees the peer go and ends the session
  c.mic.getTracks().forEach((t) => t.stop());
  c.audioContext?.close();
  $("hangup").disabled = true;
  $("start").disabled = false;
  $("connection").textContent = "closed";
  view.state = "ended";
  if (byUser) setStatus("Call ended.");
}

$("start").addEventListener("click", startCall);
$("hangup").addEventListener("click", () => endCall(true));
