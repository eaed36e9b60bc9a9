"use strict";
// The VM list: client-side search, node filter, sort and paging over /api/vms (5,000 VMs
// render 100 at a time); refreshed by the live connection, never by reloading the page.
const PAGE = 100;
let doc = {vms: [], nodes: []}, page = 0, sortKey = "vm", sortDir = 1;
const q = document.getElementById("q"), nodeSel = document.getElementById("node");

function key(v, k) {
  switch (k) {
    case "node": return v.nodes.join(",");
    case "desired": return desiredText(v);
    case "drift": return v.drift.join(",");
    case "findings": return String(100 + v.findings.length);
    case "libvirt": return v.libvirt.map(domainText).join(",");
    default: return String(v[k] ?? "");
  }
}

function matches(v, text, node) {
  if (node && !v.nodes.includes(node)) return false;
  if (!text) return true;
  const hay = [v.vm, v.resource, v.state, v.health, (STATES[v.health] || [])[1], desiredText(v), ...v.nodes, ...v.libvirt.map(domainText), ...v.drift,
               ...v.findings.map((f) => f.kind + " " + f.message)].join(" ").toLowerCase();
  return text.toLowerCase().split(/\s+/).every((w) => hay.includes(w));
}

function render() {
  const text = q.value.trim(), node = nodeSel.value;
  const rows = doc.vms.filter((v) => matches(v, text, node))
    .sort((a, b) => key(a, sortKey).localeCompare(key(b, sortKey), undefined, {numeric: true}) * sortDir);
  const pages = Math.max(1, Math.ceil(rows.length / PAGE));
  page = Math.min(page, pages - 1);
  const tbody = document.querySelector("#vms tbody");
  tbody.replaceChildren(...rows.slice(page * PAGE, (page + 1) * PAGE).map((v) => {
    const tr = el("tr", {"data-vm": v.vm, class: v.findings.some((f) => f.severity === "critical") ? "critical" : ""});
    tr.append(
      el("td", {}, el("a", {href: "/vm/" + encodeURIComponent(v.vm), class: "vm"}, v.vm)),
      el("td", {class: "node"}, v.nodes.join(", ") || "-"),
      el("td", {class: "role"}, vmState(v)),
      el("td", {class: "libvirt"}, v.libvirt.map(domainText).join(", ") || "-"),
      el("td", {class: "desired"}, desiredText(v)),
      el("td", {class: "drift"}, v.drift.join(", ") || "none"),
      el("td", {class: "findings"}, ...v.findings.map(findingBadge)),
      el("td", {class: "console"}, consoleCell(v)));
    return tr;
  }));
  document.getElementById("count").textContent = rows.length + " of " + doc.vms.length + " VMs";
  document.getElementById("page").textContent = (page + 1) + " / " + pages;
}

// The console one click away when the web console can reach it and this user may open it
// (operators); else how to reach it by hand.
function consoleCell(v) {
  if (doc.console && canAct() && v.nodes.length === 1 && v.vnc_port) {
    return el("a", {href: "/vm/" + encodeURIComponent(v.vm) + "#console", class: "console",
                    title: "VNC :" + v.vnc_port + " on " + v.nodes[0]}, "console");
  }
  return v.console ? el("code", {title: doc.console_reason || ""}, v.console) : "-";
}

function renderNodes() {
  const nav = document.getElementById("nodes");
  nav.replaceChildren(...doc.nodes.map((n) => el("a", {
    href: "#node-" + n.name, class: "node-chip node-" + n.state,
    title: n.name + ": " + n.state + " (its card below)"},
    n.name + (n.state === "online" ? "" : " " + n.state))));
  const chosen = nodeSel.value;
  nodeSel.replaceChildren(el("option", {value: ""}, "all nodes"),
    ...doc.nodes.map((n) => el("option", {value: n.name}, n.name)));
  nodeSel.value = chosen;
}

// The cluster's own stack: the storage chain's clones per node, the fence devices and each
// node's last fencing, and failed actions of what is not a VM (model/stack.py).
const CELL = {started: "\u25B6 started", stopped: "\u25A0 stopped", failed: "\u2716 FAILED",
              blocked: "\u2298 blocked", pending: "\u2026 changing", unmanaged: "\u25C7 unmanaged",
              offline: "offline"};
function renderStack(st) {
  const box = document.getElementById("stack");
  if (!st) { box.hidden = true; return; }
  const nodes = st.clones.length ? st.clones[0].cells.map((c) => c.node) : doc.nodes.map((n) => n.name);
  document.querySelector("#clones thead").replaceChildren(el("tr", {},
    el("th", {}, "storage chain"), ...nodes.map((n) => el("th", {}, n))));
  document.querySelector("#clones tbody").replaceChildren(...st.clones.map((c) =>
    el("tr", {"data-clone": c.id, class: c.ok ? "" : "critical"},
       el("td", {}, c.id + (c.storage ? " (" + c.storage + ")" : "")),
       ...c.cells.map((cell) => el("td", {class: "cell-" + cell.state, "data-node": cell.node,
                                          "data-state": cell.state, title: cell.text},
                                   CELL[cell.state] || cell.state)))));
  const last = st.last_fencing.map((e) => e.target + " " + e.action + " " + e.status
    + (e.completed ? " at " + e.completed : "") + (e.delegate ? " by " + e.delegate : "")
    + (e.exit_reason ? ": " + e.exit_reason : ""));
  const devices = st.fence_devices.map((d) => d.id + " (" + d.agent.replace("stonith:", "") + ") "
    + (d.state === "started" ? "on " + d.nodes.join(", ") : d.state.toUpperCase()));
  const f = document.getElementById("fencing");
  f.className = st.fencing_enabled && st.fence_devices.some((d) => d.state === "started") ? "" : "bad";
  f.replaceChildren(el("b", {}, "fencing: "), (st.fencing_enabled ? "on" : "OFF") + "; devices: "
    + (devices.join("; ") || "NONE") + "; last fencing: " + (last.join("; ") || "none recorded"));
  document.getElementById("stack-failures").replaceChildren(...st.failures.map((t) =>
    el("li", {class: "critical"}, "failed: " + t)));
}

// The declared rolling upgrade (model/upgrade.py): each node's step, and what it waits for.
const STEP = {done: "\u2714 done", ready: "\u25B6 ready to upgrade", draining: "\u21C4 draining",
              upgrading: "\u23FB upgrading", returning: "\u21BA coming back",
              verifying: "\u2026 verifying", held: "\u23F8 HELD", waiting: "waiting"};
function renderUpgrade(up) {
  const box = document.getElementById("upgrade");
  const act = document.getElementById("upgrade-act");
  box.hidden = !up && !canAct();
  act.replaceChildren();
  if (!up) {  // an operator may declare one: a reviewed edit of the file, like every action
    document.getElementById("upgrade-title").textContent = "";
    document.getElementById("upgrade-steps").replaceChildren();
    document.getElementById("upgrade-now").textContent = "";
    if (canAct()) act.append(upgradeForm());
    return;
  }
  const done = up.nodes.filter((n) => n.step === "done").length;
  const now = up.nodes.find((n) => n.step !== "done");
  document.getElementById("upgrade-title").textContent = "Rolling upgrade to " + up.to + ": "
    + done + " of " + up.nodes.length + " nodes done";
  document.getElementById("upgrade-steps").replaceChildren(...up.nodes.map((n) =>
    el("li", {class: "step-" + n.step, "data-node": n.node, "data-step": n.step},
       n.node + ": " + (STEP[n.step] || n.step) + (n.release ? " (" + n.release + ")" : ""))));
  const p = document.getElementById("upgrade-now");
  p.className = now && (now.step === "held" || now.step === "ready") ? "bad" : "";
  p.textContent = now ? now.detail : "every node runs " + up.to + ": remove the upgrade section";
  if (canAct()) act.append(button("upgrade-end", "end the upgrade", {type: "upgrade", to: null}));
  upgradeTimeline();
}

// Each step as it happened: the history keeps every upgrade finding as it moves on (the last
// page of the cluster's history, oldest first).
async function upgradeTimeline() {
  let page;
  try { page = await getJSON("/api/history?limit=500"); } catch (e) { return; }
  const steps = (page.events || []).filter((e) => e.kind === "finding" && /^upgrade-/.test(e.detail));
  document.getElementById("upgrade-timeline").replaceChildren(...steps.map((e) =>
    el("li", {}, new Date(e.at * 1000).toLocaleTimeString() + " " + e.detail.replace(/^upgrade-[a-z]+: /, ""))));
}

// Kept across re-renders: what the operator is typing must not be redrawn away.
let upgradeFormEl = null;
function upgradeForm() {
  if (upgradeFormEl) return upgradeFormEl;
  const to = el("input", {id: "upgrade-to", placeholder: "Debian 13", "aria-label": "target release"});
  const order = el("input", {id: "upgrade-order", "aria-label": "node order",
                             value: doc.nodes.map((n) => n.name).join(", ")});
  const go = el("button", {type: "button", id: "upgrade-start"}, "review");
  go.addEventListener("click", () => reviewEdit({type: "upgrade", to: to.value.trim(),
    order: order.value.split(/[\s,]+/).filter(Boolean)}));
  upgradeFormEl = el("details", {class: "upgrade-form"}, el("summary", {}, "roll the cluster to a new release\u2026"),
    el("label", {}, "to ", to), " ", el("label", {}, "node by node: ", order), " ", go);
  return upgradeFormEl;
}

async function reload() {
  if (!document.body.dataset.role) await loadSession();
  doc = await getJSON("/api/vms");
  showBanner(doc.banner);
  renderSummary(doc.summary);
  renderNodes();
  renderUpgrade(doc.upgrade);
  renderStack(doc.stack);
  nodeCards(doc);
  render();
  document.body.dataset.loaded = String(doc.version);
}

q.addEventListener("input", () => { page = 0; render(); });
nodeSel.addEventListener("change", () => { page = 0; render(); });
document.getElementById("prev").addEventListener("click", () => { page = Math.max(0, page - 1); render(); });
document.getElementById("next").addEventListener("click", () => { page += 1; render(); });
for (const th of document.querySelectorAll("th[data-key]")) {
  th.addEventListener("click", () => {
    sortDir = sortKey === th.dataset.key ? -sortDir : 1;
    sortKey = th.dataset.key;
    render();
  });
}
live(reload);
