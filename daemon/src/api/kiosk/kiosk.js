// facegate kiosk page: the live preview of a door camera, what the terminal asks of the person,
// the decision as a banner, and an operator view (enroll the person in front of the camera,
// list and delete enrollments). It uses the public API only: /api/auth/token/ (+ refresh),
// /api/cameras/, the camera's stream.mjpeg, /ws/events, enrollment sessions fed by the camera.
"use strict";

const $ = (id) => document.getElementById(id);
const store = window.sessionStorage;
let access = null;
let events = null;
let bannerTimer = null;
let camera = null;

function show(id, on) { $(id).hidden = !on; }

async function api(path, options = {}, retried = false) {
  const headers = Object.assign({ "Content-Type": "application/json" }, options.headers || {});
  if (access) headers.Authorization = "Bearer " + access;
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  const body = await resp.json().catch(() => ({}));
  if (resp.status === 401 && path !== "/api/auth/token/") {
    // One refresh and one retry; a token refused again means the operator is gone.
    if (!retried && await refresh()) return api(path, options, true);
    signedOut();
  }
  if (!resp.ok) throw new Error(body.message || resp.statusText);
  return body;
}

async function login(email, password) {
  const body = await api("/api/auth/token/", { method: "POST", body: JSON.stringify({ email, password }) });
  signedIn(body);
}

function signedIn(tokens) {
  access = tokens.access;
  store.setItem("facegate.refresh", tokens.refresh);
  // Refresh a minute before the access token expires.
  const ms = Math.max(30, (tokens.expires_in || 900) - 60) * 1000;
  setTimeout(refresh, ms);
  start();
}

async function refresh() {
  const token = store.getItem("facegate.refresh");
  if (!token) return false;
  try {
    const resp = await fetch("/api/auth/token/refresh/", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh: token }),
    });
    if (!resp.ok) return false;
    const tokens = await resp.json();
    access = tokens.access;
    store.setItem("facegate.refresh", tokens.refresh || token);
    setTimeout(refresh, Math.max(30, (tokens.expires_in || 900) - 60) * 1000);
    connectEvents();
    setPreview();
    return true;
  } catch (_) { return false; }
}

function signedOut() {
  access = null;
  store.removeItem("facegate.refresh");
  if (events) { events.onclose = null; events.close(); events = null; }
  ["door", "operator", "operator-toggle", "logout"].forEach((id) => show(id, false));
  show("login", true);
  $("status").textContent = "offline";
  $("status").className = "status";
}

async function start() {
  show("login", false);
  show("door", true);
  show("operator-toggle", true);
  show("logout", true);
  const { cameras } = await api("/api/cameras/");
  const sel = $("camera");
  sel.innerHTML = "";
  for (const c of cameras) {
    const o = document.createElement("option");
    o.value = c.id;
    o.textContent = c.id + (c.door ? " (door)" : "");
    sel.appendChild(o);
  }
  const door = cameras.find((c) => c.door) || cameras[0];
  camera = door ? door.id : null;
  if (camera) sel.value = camera;
  show("nocamera", !camera);
  setPreview();
  connectEvents();
}

function setPreview() {
  if (!camera || !access) return;
  $("preview").src = `/api/cameras/${encodeURIComponent(camera)}/stream.mjpeg?overlay=1&fps=10&token=${encodeURIComponent(access)}`;
}

function connectEvents() {
  if (events) { events.onclose = null; events.close(); }
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  events = new WebSocket(`${proto}//${location.host}/ws/events?token=${encodeURIComponent(access)}`);
  events.onopen = () => {
    $("status").textContent = "online";
    $("status").className = "status online";
    document.body.dataset.events = "open";
  };
  events.onclose = () => {
    $("status").textContent = "reconnecting";
    $("status").className = "status";
    document.body.dataset.events = "closed";
    setTimeout(() => access && connectEvents(), 2000);
  };
  events.onmessage = (m) => {
    let e;
    try { e = JSON.parse(m.data); } catch (_) { return; }
    if (e.camera && camera && e.camera !== camera) return;
    if (e.type === "door_prompt") {
      $("prompt").textContent = e.message || "Look at the camera";
    } else if (e.type === "access_decision" && e.session_type === "door") {
      banner(e);
    }
  };
}

function banner(e) {
  const b = $("banner");
  b.className = "banner " + e.decision;
  if (e.decision === "granted") b.textContent = `Welcome, ${e.user_id}`;
  else if (e.decision === "unknown") b.textContent = "Not recognised";
  else b.textContent = "Access denied" + (e.reason === "liveness_failed" ? ": please look at the camera and turn your head slightly" : "");
  b.dataset.decision = e.decision;
  b.dataset.user = e.user_id || "";
  show("banner", true);
  clearTimeout(bannerTimer);
  bannerTimer = setTimeout(() => show("banner", false), 5000);
}

// --- Operator view.
async function loadOperator() {
  const clients = await api("/api/admin/clients/");
  const list = clients.results || clients.clients || clients;
  const sel = $("enroll-client");
  sel.innerHTML = "";
  for (const c of list) {
    const o = document.createElement("option");
    o.value = c.name;
    o.textContent = c.name;
    sel.appendChild(o);
  }
  await loadEnrollments();
}

async function loadEnrollments() {
  const body = await api("/api/auth/enrollments/?page_size=100");
  const tbody = $("enrollments");
  tbody.innerHTML = "";
  for (const e of body.results) {
    const tr = document.createElement("tr");
    for (const v of [e.user_id, e.client || "", (e.created_at || "").slice(0, 19)]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    const td = document.createElement("td");
    const del = document.createElement("button");
    del.textContent = "Delete";
    del.onclick = async () => {
      if (!confirm(`Delete the enrollment of ${e.user_id}?`)) return;
      await api(`/api/auth/enrollments/${encodeURIComponent(e.enrollment_id || e.id)}/`, { method: "DELETE" });
      loadEnrollments();
    };
    td.appendChild(del);
    tr.appendChild(td);
    tbody.appendChild(tr);
  }
}

async function enroll(client, userId) {
  const progress = $("enroll-progress");
  progress.textContent = "Starting…";
  const s = await api("/api/auth/enrollment/", {
    method: "POST",
    body: JSON.stringify({ user_id: userId, client_id: client, source: "camera:" + camera }),
  });
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/ws/auth/process-image/${s.session_token}/`);
  ws.onmessage = (m) => {
    const e = JSON.parse(m.data);
    if (e.type === "enrollment_complete") {
      progress.textContent = `Enrolled ${userId}.`;
      ws.close();
      loadEnrollments();
    } else if (e.type === "error") {
      progress.textContent = e.message;
    } else if (e.frames_processed !== undefined) {
      const done = e.completed_samples ?? "?";
      progress.textContent = `${e.message || ""} (${done}/${e.target_samples ?? "?"} samples)`;
    }
  };
  ws.onclose = (c) => { if (c.code !== 1000 && c.code !== 1005) progress.textContent = `Enrollment ended (${c.code}).`; };
}

window.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    try { await login($("email").value, $("password").value); }
    catch (e) { $("login-error").textContent = e.message; }
  });
  $("logout").onclick = signedOut;
  $("camera").onchange = (ev) => { camera = ev.target.value; setPreview(); };
  $("operator-toggle").onclick = async () => {
    const on = $("operator").hidden;
    show("operator", on);
    if (on) { try { await loadOperator(); } catch (e) { $("enroll-progress").textContent = e.message; } }
  };
  $("enroll-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try { await enroll($("enroll-client").value, $("enroll-user").value); }
    catch (e) { $("enroll-progress").textContent = e.message; }
  });
  if (!(await refresh())) signedOut(); else start();
});
