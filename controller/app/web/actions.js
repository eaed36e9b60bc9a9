"use strict";
// Node cards, and the operator's actions: each one a change to the desired file, reviewed
// (the diff, validate's verdict, the plan and Pacemaker's transition) before it is confirmed.
let session = {role: "viewer"};
let pending = null;  // the reviewed edit the dialog would confirm
let openActions = null;  // the VM whose actions the operator opened
const CARD_VMS = 40;  // per card; the rest are one click away in the list, filtered by node

async function loadSession() {
  try { session = await getJSON("/api/session"); } catch (e) { session = {role: "viewer"}; }
  document.body.dataset.role = session.role;
}

async function post(url, body) {
  const r = await fetch(url, {method: "POST", credentials: "same-origin", cache: "no-store",
    headers: {"Content-Type": "application/json", [session.csrf_header]: session.csrf},
    body: JSON.stringify(body)});
  const doc = await r.json().catch(() => ({error: url + ": " + r.status}));
  if (!r.ok) throw Object.assign(new Error(doc.error || String(r.status)), {doc});
  return doc;
}

function canAct() { return session.role === "operator" || session.role === "admin"; }

function button(cls, text, edit) {
  const b = el("button", {type: "button", class: cls}, text);
  b.addEventListener("click", () => reviewEdit(edit));
  return b;
}

// One VM as a card lists it: its state, the console, and (for operators) what can be done.
function cardVm(doc, v, here) {
  const li = el("li", {"data-vm": v.vm, "data-health": v.health},
    el("a", {href: "/vm/" + encodeURIComponent(v.vm), class: "vm"}, v.vm), " ", vmState(v));
  if (doc.console && canAct() && v.nodes.length === 1 && v.vnc_port) {
    li.append(" ", el("a", {href: "/vm/" + encodeURIComponent(v.vm) + "#console", class: "console",
                            title: "open its console"}, "console"));
  }
  if (canAct() && v.health === "outside" && !v.desired_state) {  // outside the cluster and the file: declare it
    li.append(" ", button("enroll", "enroll", {type: "enroll", vm: v.vm}));
    return li;
  }
  if (!canAct() || !v.desired_state) return li;  // a VM the file does not list: nothing to edit
  // Its actions are built when asked for: 5,000 VMs on the cards stay one button each. The
  // one open stays open when a pass re-draws the cards.
  if (openActions === v.vm) { li.append(" ", vmActions(doc, v, here)); return li; }
  const more = el("button", {type: "button", class: "act", "aria-label": "actions on " + v.vm,
                             title: failed(v) ? "move, start/stop, retire, clean up" : "move, start/stop, retire"}, "\u22EF");
  more.addEventListener("click", () => { openActions = v.vm; more.replaceWith(vmActions(doc, v, here)); });
  li.append(" ", more);
  return li;
}

function vmActions(doc, v, here) {
  const move = el("select", {class: "move", "aria-label": "move " + v.vm},
    el("option", {value: ""}, "move to…"),
    ...doc.nodes.filter((o) => o.name !== here).map((o) => el("option", {value: o.name}, o.name)),
    ...(v.desired_node ? [el("option", {value: "-"}, "any node (clear)")] : []));
  move.addEventListener("change", () => move.value &&
    reviewEdit({type: "place", vm: v.vm, node: move.value === "-" ? null : move.value}));
  return el("span", {class: "actions"}, move, " ",
    v.desired_state === "stopped" ? button("start", "start", {type: "run-state", vm: v.vm, state: "running"})
      : button("stop", "stop", {type: "run-state", vm: v.vm, state: "stopped"}),
    " ", button("retire", "retire", {type: "retire", vm: v.vm, keep_running: true}),
    ...(failed(v) ? [" ", button("cleanup", "clean up", {type: "clean-failures", vm: v.vm})] : []));
}

// The nodes a VM is on: Pacemaker's, or libvirt's for a domain outside the cluster.
function where(v) {
  return v.nodes.length || v.health !== "outside" ? v.nodes : v.libvirt.map((d) => d.node);
}

// Failures Pacemaker keeps for it: what a cleanup (crm_resource --cleanup) would forget.
function failed(v) {
  return v.health === "failed" || Object.values(v.fail_counts || {}).some((c) => c > 0);
}

function capacity(n) {
  if (n.host_cpus == null) return el("p", {class: "capacity note"}, "capacity: its libvirtd has not said");
  const pct = (a, b) => Math.min(100, Math.round(100 * a / Math.max(1, b)));
  const meter = (label, used, total, text) => el("div", {class: "meter", title: label + " " + text},
    el("span", {class: "meter-label"}, label + " " + text),
    el("span", {class: "meter-bar"}, el("span", {class: "meter-fill" + (used > total ? " over" : ""),
                                                 style: "width:" + pct(used, total) + "%"})));
  const load = n.cpu_used == null ? [] :  // libvirt's CPU time: what rebalancing evens out
    [meter("CPU used", n.cpu_used, n.host_cpus, n.cpu_used.toFixed(2) + " / " + n.host_cpus + " cores")];
  return el("div", {class: "capacity"},
    meter("vCPU", n.vcpus, n.host_cpus, n.vcpus + " / " + n.host_cpus), ...load,
    meter("memory", n.memory_kib, n.host_memory_kib, gib(n.memory_kib) + " / " + gib(n.host_memory_kib) + " GiB"));
}

function nodeCards(doc) {
  const on = {};
  for (const v of doc.vms) for (const n of where(v)) (on[n] = on[n] || []).push(v);
  document.getElementById("cards").replaceChildren(...doc.nodes.map((n) => {
    const card = el("section", {class: "card node-" + n.state, "data-node": n.name, id: "node-" + n.name},
      el("h3", {}, n.name, " ", el("span", {class: "node-state"}, n.state),
         " ", el("a", {href: n.pcsd, class: "pcsd", target: "_blank", rel: "noopener",
                       title: "the cluster's own web console (pcsd) on " + n.name}, "pcsd \u2197")));
    if (n.desired_state && n.desired_state !== n.state) {
      card.append(el("p", {class: "want"}, "the file asks: " + n.desired_state));
    }
    if (n.draining) {
      card.append(el("p", {class: "drain " + (n.left.length ? "warn" : "good")}, n.left.length
        ? "draining: " + n.left.length + " VM(s) left (" + n.left.join(", ") + ")" : "drained"));
    }
    card.append(capacity(n));
    const runs = [n.release, n.feature_set && "Pacemaker feature set " + n.feature_set,
                  n.qemu && "QEMU " + n.qemu, n.libvirt && "libvirt " + n.libvirt].filter(Boolean);
    if (runs.length) card.append(el("p", {class: "versions note"}, runs.join(" \u00B7 ")));
    if (n.failover_fits !== null && n.failover_fits !== undefined) {  // the file's capacity: N+1
      card.append(el("p", {class: "failover " + (n.failover_fits ? "good" : "bad"), "data-fits": String(n.failover_fits)},
        n.failover_fits ? "if it fails: every VM has room" : "if it fails: no room for " + n.failover_stopped.join(", ")));
    }
    // the worst first, so a failed VM is never below the fold of a full card
    const vms = (on[n.name] || []).sort((a, b) => (a.health === "ok") - (b.health === "ok") || a.vm.localeCompare(b.vm));
    const shown = vms.slice(0, CARD_VMS);
    card.append(vms.length ? el("ul", {class: "card-vms"}, ...shown.map((v) => cardVm(doc, v, n.name)))
      : el("p", {class: "note"}, "no VMs"));
    if (vms.length > shown.length) {
      const all = el("a", {href: "#vms", class: "more"}, "all " + vms.length + " VMs on " + n.name + " in the list");
      all.addEventListener("click", () => { nodeSel.value = n.name; nodeSel.dispatchEvent(new Event("change")); });
      card.append(el("p", {}, all));
    }
    if (canAct()) {
      if (n.state === "online") {
        card.append(button("node-action", "drain (standby)", {type: "node-state", node: n.name, state: "standby"}),
          " ", button("node-maint", "maintenance", {type: "node-state", node: n.name, state: "maintenance"}));
      } else if (n.online || n.desired_state) {
        card.append(button("node-action", "bring online", {type: "node-state", node: n.name, state: "online"}));
      }
    }
    return card;
  }));
  // the VMs that run nowhere: stopped by the file, failed, not created yet
  const idle = doc.vms.filter((v) => !where(v).length).sort((a, b) => a.vm.localeCompare(b.vm));
  document.getElementById("elsewhere").hidden = !idle.length;
  document.getElementById("stopped").replaceChildren(...idle.map((v) => cardVm(doc, v, null)));
}

async function reviewEdit(edit) {
  const written = document.getElementById("written");
  if (written) written.hidden = true;
  const dlg = document.getElementById("review");
  const out = document.getElementById("review-body");
  out.replaceChildren(el("p", {}, "reviewing…"));
  document.getElementById("confirm").disabled = true;
  if (!dlg.open) dlg.showModal();
  try {
    const r = await post("/api/edits/review", {edit});
    // the review's edit: what it filled in (a cleanup's instant) is what confirm writes
    pending = {edit: r.edit, review_id: r.review_id};
    dlg.dataset.weight = r.weight || "info";
    document.getElementById("confirm").textContent = r.weight === "danger"
      ? "confirm: " + r.description + " (read what it costs above)" : "confirm: write the desired file";
    out.replaceChildren(
      el("h3", {class: "weight-" + (r.weight || "info")}, r.description),
      // what it costs, heaviest first: a stop, a retirement, maintenance in red (app/weight.py)
      el("ul", {class: "consequences"}, ...(r.consequences || []).map((c) =>
        el("li", {class: "weight-" + c.weight, "data-weight": c.weight}, c.text))),
      el("pre", {class: "diff"}, r.diff || "(no change)"),
      el("p", {class: r.valid ? "ok" : "bad"}, r.valid ? "validate: the file is valid"
        : "validate: " + r.problems.join("; ")),
      el("h4", {}, "the plan"),
      el("ul", {class: "plan"}, ...r.actions.map((a) => el("li", {class: "verdict-" + a.verdict},
        a.action + " — " + a.verdict + (a.detail ? ": " + a.detail : ""),
        el("br"), el("span", {class: "why"}, "why: " + a.why)))),
      ...reviewFindings(r),
      el("h4", {}, "Pacemaker would"),
      el("ul", {class: "transition"}, ...(r.transition.length ? r.transition.map((s) =>
        el("li", {}, s.action + " " + s.resource + (s.from ? " " + s.from : "") + (s.to ? " → " + s.to : "")))
        : [el("li", {}, r.transition_error || "change nothing")])),
      el("p", {class: "scheduler"}, r.scheduler ? "previewed by " + r.scheduler : ""));
    document.getElementById("confirm").disabled = !r.valid || !r.changed;
  } catch (e) {
    out.replaceChildren(el("p", {class: "bad"}, "cannot review: " + e.message));
  }
}

// What kvm-warden would say of the edited VM or node (a refused enrollment says why here).
function reviewFindings(r) {
  const sub = r.subject || {};
  const mine = (r.findings || []).filter((f) => (sub.resource && f.resource === sub.resource)
    || (sub.node && f.node === sub.node && !f.resource));
  return mine.length ? [el("h4", {}, "findings"), el("ul", {class: "findings"},
    ...mine.map((f) => el("li", {class: "finding " + f.severity}, f.severity + ": " + f.message)))] : [];
}

async function confirmEdit() {
  const out = document.getElementById("review-body");
  try {
    const done = await post("/api/edits/confirm", {review_id: pending.review_id});
    document.getElementById("review").close();
    // said on the page until the next action: what was written, where, under which audit id
    const w = document.getElementById("written");
    w.hidden = false;
    w.textContent = "written: " + done.description + " — " + done.path + " (audit " + done.audit_id
      + (done.git ? ", git commit" : "") + "); kvm-warden carries it out through Pacemaker";
    w.dataset.audit = done.audit_id;
  } catch (e) {
    out.prepend(el("p", {class: "bad stale"}, (e.doc && e.doc.stale ? "not written: " : "") + e.message));
    if (e.doc && e.doc.stale) reviewEdit(pending.edit);  // the review is redone
  }
}

document.getElementById("confirm").addEventListener("click", confirmEdit);
document.getElementById("cancel").addEventListener("click", () => document.getElementById("review").close());
