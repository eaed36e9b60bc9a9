// The console: noVNC (Debian's novnc package, served under /novnc/) over the controller's
// WebSocket relay to the agent on the VM's node. Reconnects by itself when the VM moves.
import RFB from "/novnc/core/rfb.js";

const btn = document.getElementById("console-open");
const status = document.getElementById("console-status");
const screen = document.getElementById("screen");
let rfb = null, wanted = false;

async function connect() {
  const d = window.kvmWardenVm;
  if (!d) { setTimeout(connect, 300); return; }
  if (!d.console) {
    status.textContent = "console unavailable: the controller needs a web configuration (TLS + users) and its node agents";
    document.body.dataset.console = "unavailable";
    return;
  }
  let ticket;
  try {
    const session = await getJSON("/api/session");  // the CSRF token of this user
    const r = await fetch("/api/vms/" + encodeURIComponent(NAME) + "/console",
      {method: "POST", credentials: "same-origin", headers: {[session.csrf_header]: session.csrf}});
    ticket = await r.json();
    if (!r.ok) throw new Error(ticket.error || r.status);
  } catch (e) {
    status.textContent = "no console: " + e.message;
    document.body.dataset.console = "refused";
    if (wanted) setTimeout(connect, 2000);
    return;
  }
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
    "/console/" + encodeURIComponent(NAME) + "/ws?ticket=" + encodeURIComponent(ticket.ticket);
  status.textContent = "connecting to " + ticket.node + "…";
  rfb = new RFB(screen, url, {wsProtocols: ["binary"]});
  rfb.scaleViewport = true;
  rfb.addEventListener("connect", () => {
    status.textContent = "connected (" + ticket.node + ")";
    document.body.dataset.console = "connected";
    document.body.dataset.consoleNode = ticket.node;
  });
  rfb.addEventListener("disconnect", () => {
    rfb = null;
    document.body.dataset.console = "disconnected";
    status.textContent = "disconnected" + (wanted ? ", reconnecting…" : "");
    if (wanted) setTimeout(connect, 1000);  // a live migration ends the session: follow the VM
  });
}

btn.addEventListener("click", () => { if (!rfb) { wanted = true; connect(); } });
if (location.hash === "#console") { wanted = true; connect(); }
