"use strict";
// Shared by the pages: DOM helpers and the live connection (server-sent events).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return e;
}

async function getJSON(url) {
  const r = await fetch(url, {credentials: "same-origin", cache: "no-store"});
  if (!r.ok) throw new Error(url + ": " + r.status);
  return r.json();
}

// Calls reload() now and whenever the controller finishes a pass; shows the link's state.
function live(reload) {
  const badge = document.getElementById("live");
  let busy = false, again = false;
  async function run() {
    if (busy) { again = true; return; }
    busy = true;
    try { await reload(); } catch (e) { console.error(e); }
    busy = false;
    if (again) { again = false; run(); }
  }
  const es = new EventSource("/api/events");
  es.addEventListener("update", (ev) => { document.body.dataset.version = ev.data; run(); });
  es.onopen = () => { badge.textContent = "live"; badge.className = "live on"; };
  es.onerror = () => { badge.textContent = "reconnecting"; badge.className = "live off"; };
  run();
}

function utc(t) { return new Date(t * 1000).toISOString().replace(".000Z", "Z").replace("T", " "); }

// Pacemaker's role, led by the worse truth when there is one ("FAILED (Started)").
function stateText(v) {
  return ["ok", "stopped", "absent"].includes(v.health) ? v.state : v.health.toUpperCase() + " (" + v.state + ")";
}

// An invalid desired file or a failing pass: said on top of every page until it is fixed.
function showBanner(lines) {
  const b = document.getElementById("banner");
  if (!b) return;
  b.hidden = !lines || !lines.length;
  b.replaceChildren(...(lines || []).map((l) => el("p", {}, l)));
  document.body.dataset.banner = b.hidden ? "" : "shown";
}
