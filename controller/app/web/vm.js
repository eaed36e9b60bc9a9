"use strict";
// One VM: where it runs and why (its constraints, kvm-warden's or not), its storage, its
// history; refreshed live.
const NAME = decodeURIComponent(location.pathname.split("/").pop());
document.getElementById("name").textContent = NAME;
document.title = "kvm-warden: " + NAME;

function dl(pairs) {
  return el("dl", {}, ...pairs.flatMap(([k, v, cls]) => [el("dt", {}, k), el("dd", {class: cls || ""}, v)]));
}

function gone(e) {
  // a VM that is not (or no longer) there: said, and nothing left to click
  document.getElementById("summary").replaceChildren(el("p", {class: "bad"},
    e.status === 404 ? "no VM named " + NAME + " (it may have been retired)" : e.message));
  document.getElementById("console-open").disabled = true;
  window.kvmWardenVm = {gone: true};
  document.body.dataset.loaded = "gone";
}

async function reload() {
  if (!document.body.dataset.role) await loadSession();
  let d;
  try {
    d = await getJSON("/api/vms/" + encodeURIComponent(NAME));
  } catch (e) {
    if (e.status === 404) { gone(e); return; }
    throw e;
  }
  showBanner(d.banner);
  const v = d.vm;
  window.kvmWardenVm = d;  // the console reads where the VM runs from here
  const open = document.getElementById("console-open");
  open.disabled = !d.console || v.nodes.length !== 1 || !v.vnc_port || document.body.dataset.console === "connected";
  if (!d.console) {
    document.getElementById("console-status").textContent = "console unavailable: " + d.console_reason;
  } else if (!document.body.dataset.console && (v.nodes.length !== 1 || !v.vnc_port)) {
    document.getElementById("console-status").textContent = v.nodes.length
      ? "no console: it has no VNC display" : "no console: it runs nowhere";
  }
  document.body.dataset.node = v.nodes.join(",");
  const stateCell = el("span", {}, vmState(v), " Pacemaker: " + v.state + " (" + v.resource + ")");
  document.getElementById("summary").replaceChildren(dl([
    ["runs on", v.nodes.join(", ") || "nowhere", "node"],
    ["state", stateCell, "role"],
    ["conditions", v.flags.concat(v.failures).join("\n") || "none", "flags"],
    ["libvirt", v.libvirt.map(domainText).join(", ") || "-", "libvirt"],
    ["desired", desiredText(v)],
    ["drift", v.drift.join(", ") || "none"],
    ["findings", v.findings.length ? v.findings.map((f) => f.severity + " " + f.kind + ": " + f.message).join("\n") : "none", "findings"],
  ]));
  document.querySelector("#constraints tbody").replaceChildren(...d.constraints.map((c) =>
    el("tr", {}, el("td", {}, c.id), el("td", {}, c.type), el("td", {}, c.text),
       el("td", {}, c.owned ? "kvm-warden" : "someone else (kept as is)"))));
  // as the storage reconciler derives it: declared, or its domain XML or a disk under a mountpoint
  document.getElementById("storage").replaceChildren(...(d.storage.length ? d.storage.map((s) =>
    el("li", {"data-storage": s.name}, s.name + ": " + s.resource + " at " + s.mountpoint
       + (s.requires.length ? " (after " + s.requires.join(", ") + ")" : "") + " — " + s.why))
    : [el("li", {}, "none: neither the file nor its domain XML or disks tie it to a storage entry")]));
  document.querySelector("#history tbody").replaceChildren(...d.history.slice().reverse().map((e) =>
    el("tr", {}, el("td", {}, utc(e.at)), el("td", {}, e.kind),
       el("td", {}, e.from_node ? e.from_node + " → " + e.to_node : (e.node || "-")),
       el("td", {}, (e.detail || "") + (e.duration_s != null ? " (" + e.duration_s.toFixed(1) + " s)" : "")))));
  showActions(d, v);
  await showScores();
  document.body.dataset.loaded = document.body.dataset.version || "0";
}

// The same actions as on the node cards (actions.js), for operators; kept while a review is open.
function showActions(d, v) {
  const box = document.getElementById("vm-actions");
  box.hidden = !canAct() || !v.desired_state;
  if (box.hidden || document.getElementById("review").open) return;
  document.getElementById("vm-actions-row").replaceChildren(
    vmActions({nodes: d.nodes.map((n) => ({name: n}))}, v, v.nodes.length === 1 ? v.nodes[0] : null));
}

// The scheduler's own numbers: -INFINITY where it may not run, the highest where it goes.
async function showScores() {
  const note = document.getElementById("scores-note");
  try {
    const s = await getJSON("/api/vms/" + encodeURIComponent(NAME) + "/scores");
    const rows = Object.entries(s.scores);
    document.querySelector("#scores tbody").replaceChildren(...rows.map(([node, score]) =>
      el("tr", {class: score === "-INFINITY" ? "banned" : ""}, el("td", {}, node), el("td", {}, score))));
    note.textContent = rows.length ? "" : "no scores: the scheduler does not place it (no resource?)";
  } catch (e) {
    note.textContent = "scores unavailable: " + e.message;
  }
}
live(reload);
