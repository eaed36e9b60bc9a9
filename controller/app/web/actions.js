"use strict";
// Node cards, and the operator's actions: each one a change to the desired file, reviewed
// (the diff, validate's verdict, the plan and Pacemaker's transition) before it is confirmed.
let session = {role: "viewer"};
let pending = null;  // the reviewed edit the dialog would confirm

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

function nodeCards(doc) {
  const on = {};
  for (const v of doc.vms) for (const n of v.nodes) (on[n] = on[n] || []).push(v);
  document.getElementById("cards").replaceChildren(...doc.nodes.map((n) => {
    const state = n.unclean ? "unclean" : !n.online ? "offline" : n.maintenance ? "maintenance"
      : n.standby ? "standby" : "online";
    const card = el("section", {class: "card node-" + state, "data-node": n.name},
      el("h3", {}, n.name, " ", el("span", {class: "node-state"}, state)));
    const list = el("ul", {class: "card-vms"});
    for (const v of (on[n.name] || []).sort((a, b) => a.vm.localeCompare(b.vm))) {
      const li = el("li", {"data-vm": v.vm},
        el("a", {href: "/vm/" + encodeURIComponent(v.vm)}, v.vm), " ",
        el("span", {class: "state health-" + v.health, title: v.flags.join("\n")}, stateText(v)));
      if (canAct()) {
        const move = el("select", {class: "move", "aria-label": "move " + v.vm},
          el("option", {value: ""}, "move to…"),
          ...doc.nodes.filter((o) => o.name !== n.name).map((o) => el("option", {value: o.name}, o.name)));
        move.addEventListener("change", () => move.value &&
          reviewEdit({type: "place", vm: v.vm, node: move.value}));
        const stop = el("button", {type: "button", class: "stop"}, "stop");
        stop.addEventListener("click", () => reviewEdit({type: "run-state", vm: v.vm, state: "stopped"}));
        li.append(" ", move, " ", stop);
      }
      list.append(li);
    }
    card.append(list.childElementCount ? list : el("p", {class: "note"}, "no VMs"));
    if (canAct()) {
      const next = state === "online" ? ["standby", "drain (standby)"] : ["online", "bring online"];
      const b = el("button", {type: "button", class: "node-action"}, next[1]);
      b.addEventListener("click", () => reviewEdit({type: "node-state", node: n.name, state: next[0]}));
      card.append(b);
    }
    return card;
  }));
  // stopped VMs of the file: a start button
  const stopped = doc.vms.filter((v) => v.desired_state === "stopped");
  const box = document.getElementById("stopped");
  box.replaceChildren(...stopped.map((v) => {
    const li = el("li", {"data-vm": v.vm}, v.vm + " (stopped)");
    if (canAct()) {
      const start = el("button", {type: "button", class: "start"}, "start");
      start.addEventListener("click", () => reviewEdit({type: "run-state", vm: v.vm, state: "running"}));
      li.append(" ", start);
    }
    return li;
  }));
}

async function reviewEdit(edit) {
  const dlg = document.getElementById("review");
  const out = document.getElementById("review-body");
  out.replaceChildren(el("p", {}, "reviewing…"));
  document.getElementById("confirm").disabled = true;
  if (!dlg.open) dlg.showModal();
  try {
    const r = await post("/api/edits/review", {edit});
    pending = {edit, file_sha256: r.file_sha256, cib_version: r.cib_version};
    out.replaceChildren(
      el("h3", {}, r.description),
      el("pre", {class: "diff"}, r.diff || "(no change)"),
      el("p", {class: r.valid ? "ok" : "bad"}, r.valid ? "validate: the file is valid"
        : "validate: " + r.problems.join("; ")),
      el("h4", {}, "the plan"),
      el("ul", {class: "plan"}, ...r.actions.map((a) => el("li", {class: "verdict-" + a.verdict},
        a.action + " — " + a.verdict + (a.detail ? ": " + a.detail : "")))),
      el("h4", {}, "Pacemaker would"),
      el("ul", {class: "transition"}, ...(r.transition.length ? r.transition.map((s) =>
        el("li", {}, s.action + " " + s.resource + (s.from ? " " + s.from : "") + (s.to ? " → " + s.to : "")))
        : [el("li", {}, r.transition_error || "change nothing")])));
    document.getElementById("confirm").disabled = !r.valid || !r.changed;
  } catch (e) {
    out.replaceChildren(el("p", {class: "bad"}, "cannot review: " + e.message));
  }
}

async function confirmEdit() {
  const out = document.getElementById("review-body");
  try {
    await post("/api/edits/confirm", pending);
    document.getElementById("review").close();
  } catch (e) {
    out.prepend(el("p", {class: "bad stale"}, (e.doc && e.doc.stale ? "not written: " : "") + e.message));
    if (e.doc && e.doc.stale) reviewEdit(pending.edit);  // the review is redone
  }
}

document.getElementById("confirm").addEventListener("click", confirmEdit);
document.getElementById("cancel").addEventListener("click", () => document.getElementById("review").close());
