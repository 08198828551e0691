// The doppel console: a read-only view of the cluster from the admin API, with the operator's
// own credential (kept in this tab's sessionStorage only, never in a cookie or the URL the
// server sees: a credential given as #token=… is moved out of the address bar at once).
"use strict";

const REFRESH_MS = 2000;
let last = null; // the previous services answer and when it came, for request rates

function credential() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    sessionStorage.setItem("doppel-token", hash.get("token"));
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("doppel-token");
}

async function api(path) {
  const response = await fetch(path, {
    headers: { Authorization: "Bearer " + credential() },
    cache: "no-store",
  });
  if (!response.ok) {
    let why = response.statusText;
    try { why = (await response.json()).error; } catch (_) { /* not JSON */ }
    const error = new Error(why);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

// Text only: nothing the API answers is ever parsed as markup.
function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function labelsText(labels) {
  const entries = Object.entries(labels || {});
  return entries.length ? entries.map(([k, v]) => k + "=" + v).join(", ") : "no labels";
}

function showHosts(cluster) {
  document.getElementById("cluster").textContent =
    "term " + cluster.term + (cluster.leader ? "" : " · no leader");
  const groups = new Map();
  for (const host of cluster.hosts) {
    // Grouped by where they run: provider and jurisdiction first, then any other labels.
    const l = host.labels || {};
    const key = ["provider", "jurisdiction"].filter((k) => l[k]).map((k) => k + "=" + l[k]).join(", ")
      || labelsText(l);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(host);
  }
  const root = document.getElementById("hosts");
  root.replaceChildren();
  for (const [key, hosts] of [...groups].sort()) {
    const group = document.createElement("div");
    group.className = "group";
    const title = document.createElement("h3");
    title.textContent = key;
    const table = document.createElement("table");
    table.className = "hosts";
    const head = table.createTHead().insertRow();
    for (const h of ["host", "health", "role", "behind", "admin", "labels"]) {
      const th = document.createElement("th");
      th.textContent = h;
      head.appendChild(th);
    }
    const body = table.createTBody();
    for (const host of hosts.sort((a, b) => a.name.localeCompare(b.name))) {
      const row = body.insertRow();
      row.dataset.host = host.name;
      cell(row, host.name + (host.this ? " (answering)" : ""));
      cell(row, host.health + (host.drained ? " · drained" : ""), host.health === "up" ? "up" : "down");
      cell(row, host.role);
      cell(row, host.behind == null ? "" : String(host.behind));
      cell(row, host.admin);
      cell(row, labelsText(host.labels));
    }
    group.append(title, table);
    root.appendChild(group);
  }
}

function showServices(services) {
  const now = Date.now();
  const before = last && new Map(last.services.map((s) => [s.name, s.requests]));
  const seconds = last ? (now - last.at) / 1000 : 0;
  const body = document.querySelector("#services tbody");
  body.replaceChildren();
  for (const s of services.sort((a, b) => a.name.localeCompare(b.name))) {
    const row = body.insertRow();
    row.dataset.service = s.name;
    cell(row, s.name);
    cell(row, s.active.join(", ") + (s.leaving.length ? " (leaving: " + s.leaving.join(", ") + ")" : ""));
    const rules = labelsText(s.placement.on) + " · " + s.placement.replicas + " replica(s)";
    cell(row, s.unmet ? rules + " · not met: " + s.unmet : rules);
    const previous = before && before.get(s.name);
    cell(row, previous != null && seconds > 0 ? ((s.requests - previous) / seconds).toFixed(1) : "…");
    cell(row, String(s.requests));
    cell(row, String(s.errors));
    cell(row, (s.signed_by || []).join(", ") + (s.release ? " " + s.release : ""));
  }
  last = { services, at: now };
}

function showEvents(events) {
  const body = document.querySelector("#events tbody");
  body.replaceChildren();
  for (const e of events.slice(-50).reverse()) {
    const row = body.insertRow();
    cell(row, new Date(e.time_ms).toISOString().replace("T", " ").slice(0, 19));
    cell(row, e.service);
    cell(row, String(e.epoch));
    cell(row, e.active.join(", "));
    cell(row, e.cause);
    cell(row, e.actor);
  }
}

async function refresh() {
  const state = document.getElementById("state");
  try {
    const [cluster, services, events] = await Promise.all([
      api("/v1/cluster"), api("/v1/services"), api("/v1/events?limit=50"),
    ]);
    showHosts(cluster);
    showServices(services);
    showEvents(events);
    state.textContent = "updated " + new Date().toLocaleTimeString();
    state.className = "";
  } catch (error) {
    state.textContent = error.message;
    state.className = "error";
    if (error.status === 401 || error.status === 403) {
      sessionStorage.removeItem("doppel-token");
      document.getElementById("login").hidden = false;
      return;
    }
  }
  setTimeout(refresh, REFRESH_MS);
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("doppel-token", document.getElementById("token").value.trim());
  document.getElementById("login").hidden = true;
  refresh();
});

if (credential()) {
  refresh();
} else {
  document.getElementById("login").hidden = false;
}
