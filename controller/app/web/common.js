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
  let r;
  try {
    r = await fetch(url, {credentials: "same-origin", cache: "no-store"});
  } catch (e) {
    throw new Error("cannot reach the controller (" + e.message + ")");
  }
  if (!r.ok) {
    const text = (await r.text().catch(() => "")).trim();
    let why = text;
    try { why = JSON.parse(text).error || text; } catch (e) { /* plain text */ }
    throw Object.assign(new Error(url + ": HTTP " + r.status + (why ? " — " + why : "")), {status: r.status});
  }
  return r.json();
}

// A failed call is said on the page (never only in the browser's console); cleared by the
// next call that works.
function showError(e) {
  const box = document.getElementById("error");
  if (!box) return;
  box.hidden = !e;
  box.textContent = e ? e.message : "";
  document.body.dataset.error = e ? "shown" : "";
}

// Calls reload() now and whenever the controller finishes a pass; shows the link's state.
function live(reload) {
  const badge = document.getElementById("live");
  let busy = false, again = false;
  async function run() {
    if (busy) { again = true; return; }
    busy = true;
    try { await reload(); showError(null); } catch (e) { showError(e); }
    busy = false;
    if (again) { again = false; run(); }
  }
  const es = new EventSource("/api/events");
  es.addEventListener("update", (ev) => { document.body.dataset.version = ev.data; run(); });
  es.onopen = () => { badge.textContent = "live"; badge.className = "live on"; };
  es.onerror = () => { badge.textContent = "reconnecting"; badge.className = "live off"; };
  run();
}

function utc(t) { return new Date(Math.round(t) * 1000).toISOString().replace(".000Z", "Z").replace("T", " "); }

// Pacemaker's role, led by the worse truth when there is one ("FAILED (Started)").
function stateText(v) {
  return ["ok", "stopped", "absent"].includes(v.health) ? v.state : v.health.toUpperCase() + " (" + v.state + ")";
}

// One icon and colour per state (glyphs every Debian font has: DejaVu), everywhere a VM is shown (list, node cards, VM page). The
// word is the truth (model/overview.py's health), never Pacemaker's role alone.
const STATES = {
  ok: ["\u25B6", "running"], stopped: ["\u25A0", "stopped"], failed: ["\u2716", "failed"],
  blocked: ["\u2298", "blocked"], paused: ["\u2016", "paused"], migrating: ["\u21C4", "migrating"],
  pending: ["\u2026", "changing"], unmanaged: ["\u25C7", "unmanaged"],
  orphaned: ["\u26A0", "orphaned"], outside: ["\u26A0", "outside the cluster"],
  absent: ["\u25CC", "not created"],
};

function vmState(v) {
  const [icon, word] = STATES[v.health] || ["?", v.health];
  return el("span", {class: "state health-" + v.health, "data-health": v.health,
                     title: [stateText(v), ...v.flags, ...v.failures].join("\n")},
    el("span", {class: "icon", "aria-hidden": "true"}, icon), " " + word);
}

// What the file asks, in words: "running on kvm2", "running, any node", "not in the file".
function desiredText(v) {
  if (!v.desired_state) return "not in the file";
  if (v.desired_state === "absent") return "to be retired";
  if (v.desired_state === "stopped") return "stopped";
  return v.desired_state + (v.desired_node ? " on " + v.desired_node : ", any node")
    + (v.desired_note ? " (" + v.desired_note + ")" : "");
}

function findingBadge(f) {
  return el("span", {class: "badge " + f.severity, title: f.severity + ": " + f.message}, f.kind);
}

function ago(t) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - t));
  return s < 90 ? s + " s ago" : s < 5400 ? Math.round(s / 60) + " min ago" : utc(t);
}

// One node's libvirt state of a VM (the API's {node, state, reason}), as `status` prints it.
function domainText(d) { return d.node + ":" + d.state + (d.reason ? "(" + d.reason + ")" : ""); }

function gib(kib) { return (kib / 1048576).toFixed(1); }

// The header's summary of the cluster: quorum, fencing, the VMs, the findings, the file, the pass.
function renderSummary(s) {
  const box = document.getElementById("cluster-summary");
  if (!box || !s) return;
  const item = (cls, text, title) => el("span", {class: "sum " + cls, title: title || ""}, text);
  const f = s.findings;
  box.replaceChildren(
    item(s.quorum ? "good" : "bad", s.quorum ? "quorum" : "NO QUORUM"),
    item(s.fencing ? "good" : "bad", s.fencing ? "fencing on" : "FENCING OFF", "stonith-enabled"),
    item("", s.vms + " VMs: " + s.running + " running"),
    item(s.failed ? "bad" : "", s.failed + " failed"),
    item(s.paused ? "warn" : "", s.paused + " paused"),
    item(s.drifting ? "warn" : "good", s.drifting ? s.drifting + " drifting" : "matches the file",
         (s.drift || []).join("\n")),
    item(f.critical ? "bad" : f.warning ? "warn" : "good",
         "findings: " + f.critical + " critical, " + f.warning + " warning, " + f.info + " info"),
    item(s.desired_valid ? "good" : "bad",
         (s.desired_valid ? "desired file valid" : "desired file INVALID") +
         (s.desired_since ? " since " + utc(s.desired_since) : ""), s.desired_path || ""),
    lastPass(item(s.last_pass_error ? "bad" : "", "", s.last_pass_error || ""), s));
  box.dataset.failed = String(s.failed);
}

// "last pass 12 s ago" counts up between passes (a quiet cluster has no pass for a while).
function lastPass(span, s) {
  const text = () => s.last_pass_at ? "last pass " + ago(s.last_pass_at) + " ("
    + s.last_pass_seconds.toFixed(2) + " s)" + (s.last_pass_error ? ": FAILED" : "") : "no pass yet";
  span.id = "last-pass";
  span.textContent = text();
  clearInterval(lastPass.timer);
  lastPass.timer = setInterval(() => { span.textContent = text(); }, 1000);
  return span;
}

// An invalid desired file or a failing pass: said on top of every page until it is fixed.
function showBanner(lines) {
  const b = document.getElementById("banner");
  if (!b) return;
  b.hidden = !lines || !lines.length;
  b.replaceChildren(...(lines || []).map((l) => el("p", {}, l)));
  document.body.dataset.banner = b.hidden ? "" : "shown";
}
