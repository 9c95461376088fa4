// echomimic live page: opens a session, watches it over WebRTC, talks to it over a WebSocket.
// Everything it loads comes from this server; no STUN or TURN server is contacted.
"use strict";
const $ = (id) => document.getElementById(id);
const API = "/api/v1";
let session = null, pc = null, ws = null, mic = null;

function log(msg) {
  const el = $("log");
  el.textContent += msg + "\n";
  el.scrollTop = el.scrollHeight;
}

function headers() {
  const key = $("key").value.trim();
  localStorage.setItem("echomimic-key", key);
  return key ? { Authorization: "Bearer " + key } : {};
}

function setState(text) { $("state").textContent = text; }

async function start() {
  const file = $("photo").files[0];
  if (!file) { log("pick a photo first"); return; }
  $("start").disabled = true;
  setState("preparing the portrait…");
  const form = new FormData();
  form.append("image", file);
  form.append("resolution", "512");
  let r = await fetch(API + "/sessions", { method: "POST", headers: headers(), body: form });
  let body = await r.json();
  if (r.status !== 201) { log("error: " + (body.message || r.status)); setState(""); $("start").disabled = false; return; }
  session = body;
  log("session " + session.session_id);

  pc = new RTCPeerConnection({ iceServers: [] });
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.ontrack = (ev) => { stream.addTrack(ev.track); $("video").srcObject = stream; };
  pc.onconnectionstatechange = () => setState(pc.connectionState);
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
    setTimeout(resolve, 2000);
  });
  r = await fetch(session.webrtc_url, {
    method: "POST", headers: { ...headers(), "Content-Type": "application/json" },
    body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
  });
  body = await r.json();
  if (!r.ok) { log("error: " + (body.message || r.status)); return; }
  log("video codec: " + body.video_codec);
  await pc.setRemoteDescription({ sdp: body.sdp, type: body.type });

  openInput(16000);
  for (const id of ["say", "mic", "interrupt", "stop"]) $(id).disabled = false;
}

function openInput(rate) {
  const key = $("key").value.trim();
  const url = new URL(session.input_url);
  url.searchParams.set("rate", String(rate));
  if (key) url.searchParams.set("token", key);
  ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onmessage = (ev) => log("event: " + ev.data);
  ws.onclose = (ev) => log("input closed: " + ev.code + " " + ev.reason);
}

function say() {
  const text = $("text").value.trim();
  if (!text || !ws || ws.readyState !== WebSocket.OPEN) return;
  ws.send(JSON.stringify({ type: "say", text }));
  $("text").value = "";
}

async function toggleMic() {
  if (mic) {
    mic.stream.getTracks().forEach((t) => t.stop());
    mic.ctx.close();
    mic = null;
    $("mic").textContent = "Microphone on";
    return;
  }
  const media = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
  const ctx = new AudioContext({ sampleRate: 16000 });
  if (ctx.sampleRate !== 16000) {            // the browser keeps its own rate: declare it
    ws.close(1000, "reopening at the microphone's rate");
    openInput(ctx.sampleRate);
  }
  const src = ctx.createMediaStreamSource(media);
  const node = ctx.createScriptProcessor(2048, 1, 1);
  node.onaudioprocess = (ev) => {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const x = ev.inputBuffer.getChannelData(0);
    const pcm = new Int16Array(x.length);
    for (let i = 0; i < x.length; i++) pcm[i] = Math.max(-1, Math.min(1, x[i])) * 32767;
    ws.send(pcm.buffer);
  };
  src.connect(node);
  node.connect(ctx.destination);
  mic = { stream: media, ctx };
  $("mic").textContent = "Microphone off";
}

async function stop() {
  if (ws) ws.close(1000, "bye");
  if (pc) pc.close();
  if (session) await fetch(API + "/sessions/" + session.session_id, { method: "DELETE", headers: headers() });
  session = pc = ws = null;
  for (const id of ["say", "mic", "interrupt", "stop"]) $(id).disabled = true;
  $("start").disabled = false;
  setState("ended");
}

$("key").value = localStorage.getItem("echomimic-key") || "";
$("start").onclick = () => start().catch((e) => { log("error: " + e); $("start").disabled = false; });
$("stop").onclick = () => stop();
$("say").onclick = say;
$("text").onkeydown = (ev) => { if (ev.key === "Enter") say(); };
$("mic").onclick = () => toggleMic().catch((e) => log("microphone: " + e));
$("interrupt").onclick = () => ws && ws.send(JSON.stringify({ type: "interrupt" }));
