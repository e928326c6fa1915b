// The fedbroker web view: reads the REST API of the broker that served it, with the user's session token.
// Everything shown is built with textContent (never innerHTML): names and reasons come from callers.
"use strict";

const INVENTORY = "/tmf-api/serviceInventory/v4";
const ORDERING = "/tmf-api/serviceOrdering/v4";
const FEDERATION = "/fedbroker/v1/federation";
const OFFERS = "/fedbroker/v1/offer";
const LOGIN = "/fedbroker/v1/login";
const REFRESH_MS = 3000; // the federation's notes age and change without events: read again this often
const services = new Map(); // slice id -> TMF638 service
let token = "";
let stream = null;
let lastEventId = ""; // the last event this page saw: a new stream resumes after it
let retryMs = 0; // the wait before the page opens a stream the browser gave up on (doubles, at most 30 s)
let retryTimer = null;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function chars(service) {
  const out = {};
  for (const c of service.serviceCharacteristic || []) out[c.name] = c.value;
  return out;
}

function showError(text) {
  const box = document.getElementById("error");
  box.hidden = !text;
  box.textContent = text || "";
}

async function call(method, path, body) {
  const headers = { Authorization: "Bearer " + token };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const reply = await fetch(path, init);
  if (reply.status === 204) return null;
  const answer = await reply.json();
  if (!reply.ok) {
    const err = new Error(answer.reason || reply.statusText);
    err.status = reply.status;
    throw err;
  }
  return answer;
}

function segmentNode(seg) {
  const c = chars(seg);
  const node = el("span", null, "segment");
  node.append(el("span", `${c.local ? "domain" : "SP"} ${c.domain} `));
  node.append(el("span", c.sliceState, "state " + c.sliceState));
  const labels = c.labels ? " " + c.labels.map((l) => `${l.port}=${l.label}`).join(" ") : "";
  node.append(el("span", ` ${c.ingress} → ${c.egress}${labels}`, "muted"));
  if (seg.supportingService) {
    const kids = el("span", null, "children");
    for (const child of seg.supportingService) kids.append(segmentNode(child));
    node.append(kids);
  }
  return node;
}

function renderSlices() {
  const body = document.querySelector("#slices tbody");
  body.replaceChildren();
  const rows = [...services.values()].sort((a, b) => (a.startDate || "").localeCompare(b.startDate || ""));
  document.getElementById("none").hidden = rows.length > 0;
  for (const s of rows) {
    const c = chars(s);
    const tr = el("tr");
    tr.dataset.slice = s.id;
    tr.append(el("td", s.id));
    tr.append(el("td", s.name));
    const state = el("td", c.sliceState, "state " + c.sliceState);
    state.dataset.role = "state";
    tr.append(state);
    const health = el("td", c.health || "-", "health " + (c.health || ""));
    health.dataset.role = "health";
    for (const a of c.alerts || []) {
      health.append(el("span", `${a.metric} ${a.value} > ${a.threshold} (${a.severity}, from ${a.sourceSp})`, "segment"));
    }
    tr.append(health);
    tr.append(el("td", `${c.src} → ${c.dst}, ${c.bandwidth_mbps} Mb/s` + (c.reason ? ` (${c.reason})` : "")));
    const segs = el("td");
    for (const seg of s.supportingService || []) segs.append(segmentNode(seg));
    tr.append(segs);
    const act = el("td");
    if (s.state !== "terminated") {
      const button = el("button", "terminate");
      button.dataset.role = "terminate";
      button.addEventListener("click", () => terminate(s.id));
      act.append(button);
    }
    tr.append(act);
    body.append(tr);
  }
}

function noteNode(note, own) {
  const box = el("div", null, own ? "sp own" : "sp");
  box.dataset.sp = note.spId;
  box.append(el("div", `${note.spId}${own ? " (this SP)" : ""}`, "title"));
  const expires = note.expiresInS >= 0 ? `expires in ${Math.round(note.expiresInS)} s` : "EXPIRED";
  box.append(el("div", `note v${note.version}, ${Math.round(note.ageS)} s old, ${expires}`, "small"));
  box.append(el("div", `endpoints: ${note.endpoints.join(", ") || "-"}`, "small"));
  const peers = [...new Set(note.ports.map((p) => p.peerSp))];
  box.append(el("div", `borders with: ${peers.join(", ") || "-"}`, "small"));
  if (note.functions.length) box.append(el("div", `functions: ${note.functions.join(", ")}`, "small"));
  return box;
}

async function loadFederation() {
  const where = document.getElementById("federation");
  try {
    const fed = await call("GET", FEDERATION);
    document.getElementById("sp").textContent = fed.spId;
    where.replaceChildren();
    if (fed.own) where.append(noteNode(fed.own, true));
    const below = el("div");
    for (const note of fed.lower) below.append(noteNode(note, false));
    const hidden = "each is that SP's abstract note: the SPs it buys from show only as its endpoints and borders";
    where.append(el("div", `notes from below (${hidden}):`, "muted"), below);
    for (const r of fed.refused) {
      where.append(el("div", `refused ${r.spId} v${r.version}: ${r.reason} ${r.detail} (${r.at})`, "refused"));
    }
  } catch (err) {
    where.replaceChildren(el("p", err.status === 403 ? "operators and peer SPs only" : err.message, "muted"));
  }
}

async function loadOffers() {
  const section = document.getElementById("offers");
  let offers;
  try {
    offers = await call("GET", OFFERS);
  } catch (err) {
    section.hidden = true; // operators only
    return false;
  }
  section.hidden = false;
  const body = section.querySelector("tbody");
  body.replaceChildren();
  for (const o of offers) {
    const tr = el("tr");
    tr.dataset.domain = o.domain;
    tr.append(el("td", o.domain));
    const state = el("td", o.withdrawn ? "withdrawn" : "offered");
    state.dataset.role = "offer";
    tr.append(state);
    const act = el("td");
    const button = el("button", o.withdrawn ? "publish again" : "withdraw");
    button.dataset.role = "toggle-offer";
    button.addEventListener("click", () => setWithdrawn(o.domain, !o.withdrawn));
    act.append(button);
    tr.append(act);
    body.append(tr);
  }
  return true;
}

async function setWithdrawn(domain, withdrawn) {
  try {
    await call("PATCH", `${OFFERS}/${encodeURIComponent(domain)}`, { withdrawn });
  } catch (err) {
    showError(`offer of ${domain}: ${err.message}`);
  }
  await loadOffers();
  await loadFederation();
}

async function loadSlices() {
  const list = await call("GET", `${INVENTORY}/service?limit=500`);
  services.clear();
  for (const s of list) services.set(s.id, s);
  renderSlices();
}

async function terminate(id) {
  try {
    await call("DELETE", `${INVENTORY}/service/${encodeURIComponent(id)}`);
  } catch (err) {
    showError(`terminate ${id}: ${err.message}`);
  }
}

// The browser's EventSource retries a broken stream by itself (sending Last-Event-ID), but gives up for good
// on some failures (an error status while the broker restarts) and may wait long after the network comes
// back: the page then opens a new stream itself, resuming after the last event it saw.
function follow() {
  if (stream) stream.close();
  clearTimeout(retryTimer);
  const live = document.getElementById("live");
  const resume = lastEventId ? `&lastEventId=${encodeURIComponent(lastEventId)}` : "";
  // A new stream after a lost one, with no event seen to resume after: what happened meanwhile is read.
  const reread = stream !== null && !lastEventId;
  const es = new EventSource(`${ORDERING}/events?access_token=${encodeURIComponent(token)}${resume}`);
  stream = es;
  es.onopen = () => {
    live.textContent = "live";
    live.className = "badge on";
    retryMs = 0;
    if (reread) loadSlices().catch((err) => showError(err.message));
  };
  es.onerror = () => {
    live.textContent = "reconnecting";
    live.className = "badge off";
    if (es.readyState === EventSource.CLOSED && stream === es) {
      retryMs = Math.min(Math.max(2 * retryMs, 1000), 30000);
      retryTimer = setTimeout(follow, retryMs);
    }
  };
  const seen = (msg) => { if (msg.lastEventId) lastEventId = msg.lastEventId; };
  for (const kind of ["ServiceStateChangeEvent", "ServiceAlertEvent", "reset"]) es.addEventListener(kind, seen);
  es.addEventListener("ServiceStateChangeEvent", (msg) => {
    const service = JSON.parse(msg.data).event.service;
    services.set(service.id, service);
    renderSlices();
  });
  // The broker no longer keeps the events missed while the page was away (EventSource resumed after
  // its Last-Event-ID): read the slices again, then follow from here.
  es.addEventListener("reset", () => loadSlices().catch((err) => showError(err.message)));
  es.addEventListener("ServiceAlertEvent", async (msg) => {
    const id = JSON.parse(msg.data).event.service.id;
    try {
      services.set(id, await call("GET", `${INVENTORY}/service/${encodeURIComponent(id)}`));
      renderSlices();
    } catch (err) {
      showError(`alert on ${id}: ${err.message}`);
    }
  });
}

async function logIn() {
  const user = document.getElementById("user").value.trim();
  const password = document.getElementById("password").value;
  try {
    const reply = await fetch(LOGIN, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user, password }),
    });
    const answer = await reply.json();
    if (!reply.ok) throw new Error(answer.reason || reply.statusText);
    document.getElementById("password").value = "";
    await start(answer.token);
  } catch (err) {
    showError(`log in as ${user}: ${err.message}`);
  }
}

async function start(newToken) {
  token = newToken;
  sessionStorage.setItem("fedbroker-token", token);
  document.getElementById("login").hidden = true;
  showError("");
  try {
    await loadSlices();
    follow();
    await loadFederation();
    if (await loadOffers()) setInterval(loadFederation, REFRESH_MS);
  } catch (err) {
    showError(err.message);
    if (err.status === 401) document.getElementById("login").hidden = false;
  }
}

// Back online with a stream the browser gave up on: open one now rather than after the wait.
window.addEventListener("online", () => { if (stream && stream.readyState === EventSource.CLOSED) follow(); });

window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("use").addEventListener("click", () => start(document.getElementById("token").value.trim()));
  document.getElementById("log-in").addEventListener("click", logIn);
  document.getElementById("password").addEventListener("keydown", (e) => { if (e.key === "Enter") logIn(); });
  const fromUrl = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromUrl) history.replaceState(null, "", location.pathname); // the token leaves the address bar
  const known = fromUrl || sessionStorage.getItem("fedbroker-token");
  if (known) start(known);
  else document.getElementById("login").hidden = false;
});
