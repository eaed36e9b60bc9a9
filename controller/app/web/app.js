"use strict";
// The VM list: client-side search, node filter, sort and paging over /api/vms (5,000 VMs
// render 100 at a time); refreshed by the live connection, never by reloading the page.
const PAGE = 100;
let doc = {vms: [], nodes: []}, page = 0, sortKey = "vm", sortDir = 1;
const q = document.getElementById("q"), nodeSel = document.getElementById("node");

function key(v, k) {
  switch (k) {
    case "node": return v.nodes.join(",");
    case "desired": return (v.desired_state || "") + "@" + (v.desired_node || "");
    case "drift": return v.drift.join(",");
    case "findings": return String(100 + v.findings.length);
    case "libvirt": return v.libvirt.join(",");
    default: return String(v[k] ?? "");
  }
}

function matches(v, text, node) {
  if (node && !v.nodes.includes(node)) return false;
  if (!text) return true;
  const hay = [v.vm, v.resource, v.state, v.health, ...v.nodes, ...v.libvirt, ...v.drift,
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
      el("td", {class: "role health-" + v.health, title: v.flags.concat(v.failures).join("\n")}, stateText(v)),
      el("td", {class: "libvirt"}, v.libvirt.join(", ") || "-"),
      el("td", {}, (v.desired_state || "-") + "@" + (v.desired_node || "any")),
      el("td", {class: "drift"}, v.drift.join(", ") || "none"),
      el("td", {class: "findings"}, ...v.findings.map((f) => el("span", {class: "badge " + f.severity, title: f.message}, f.kind))),
      el("td", {}, doc.console && v.nodes.length === 1 && v.vnc_port
        ? el("a", {href: "/vm/" + encodeURIComponent(v.vm) + "#console", class: "console"}, "console (vnc :" + v.vnc_port + ")")
        : (v.vnc_port ? "vnc :" + v.vnc_port : "-")));
    return tr;
  }));
  document.getElementById("count").textContent = rows.length + " of " + doc.vms.length + " VMs";
  document.getElementById("page").textContent = (page + 1) + " / " + pages;
}

function renderNodes() {
  const nav = document.getElementById("nodes");
  nav.replaceChildren(...doc.nodes.map((n) => el("a", {
    href: n.pcsd, class: "node-chip " + (n.unclean ? "unclean" : n.online ? "online" : "offline"),
    title: "the cluster's own web console (pcsd) on " + n.name, target: "_blank", rel: "noopener"},
    n.name + (n.unclean ? " UNCLEAN" : n.online ? "" : " offline") + (n.standby ? " (standby)" : ""))));
  const chosen = nodeSel.value;
  nodeSel.replaceChildren(el("option", {value: ""}, "all nodes"),
    ...doc.nodes.map((n) => el("option", {value: n.name}, n.name)));
  nodeSel.value = chosen;
}

async function reload() {
  if (!document.body.dataset.role) await loadSession();
  doc = await getJSON("/api/vms");
  showBanner(doc.banner);
  renderNodes();
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
