// The console: noVNC (Debian's novnc package, served under /novnc/) over the controller's
// WebSocket relay to the agent on the VM's node. Says why it cannot connect, retries with an
// exponential backoff (1 s to 30 s), follows the VM after a live migration, and can be closed.
import RFB from "/novnc/core/rfb.js";

const openBtn = document.getElementById("console-open");
const closeBtn = document.getElementById("console-close");
const cadBtn = document.getElementById("console-cad");
const fullBtn = document.getElementById("console-full");
const status = document.getElementById("console-status");
const screen = document.getElementById("screen");
const FIRST = 1000, LAST = 30000;
let rfb = null, wanted = false, delay = FIRST, timer = null, attempt = 0;

function say(state, text) {
  status.textContent = text;
  document.body.dataset.console = state;
}

function buttons() {
  const connected = document.body.dataset.console === "connected";
  openBtn.disabled = wanted || !window.kvmWardenVm || !window.kvmWardenVm.console;
  closeBtn.disabled = !wanted;
  cadBtn.disabled = fullBtn.disabled = !connected;
}

// Why the last attempt ended, as the relay saw it (the browser's WebSocket API hides it).
async function lastReason() {
  try {
    const r = await getJSON("/api/vms/" + encodeURIComponent(NAME) + "/console");
    return r.last || "";
  } catch (e) {
    return "";
  }
}

function retry(why) {
  if (!wanted) { say("closed", why || "disconnected"); buttons(); return; }
  const s = Math.round(delay / 1000);
  say("retrying", (why || "disconnected") + "; retrying in " + s + " s");
  document.body.dataset.consoleAttempts = String(attempt);
  timer = setTimeout(connect, delay);
  delay = Math.min(LAST, delay * 2);
  buttons();
}

async function connect() {
  timer = null;
  const d = window.kvmWardenVm;
  if (!d) { timer = setTimeout(connect, 300); return; }
  if (d.gone) { wanted = false; say("unavailable", "no console: no such VM"); buttons(); return; }
  if (!d.console) {
    wanted = false;
    say("unavailable", "console unavailable: " + d.console_reason);
    buttons();
    return;
  }
  attempt += 1;
  let ticket;
  try {
    const session = await getJSON("/api/session");  // the CSRF token of this user
    const r = await fetch("/api/vms/" + encodeURIComponent(NAME) + "/console",
      {method: "POST", credentials: "same-origin", headers: {[session.csrf_header]: session.csrf}});
    ticket = await r.json().catch(() => ({error: "HTTP " + r.status}));
    if (!r.ok) throw new Error(ticket.error || r.status);
  } catch (e) {
    retry("no console: " + e.message);
    return;
  }
  if (!wanted) return;  // disconnected while asking
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
    "/console/" + encodeURIComponent(NAME) + "/ws?ticket=" + encodeURIComponent(ticket.ticket);
  say("connecting", "connecting to " + ticket.node + "…");
  rfb = new RFB(screen, url, {wsProtocols: ["binary"]});
  rfb.scaleViewport = true;
  rfb.addEventListener("connect", () => {
    delay = FIRST;
    say("connected", "connected (" + ticket.node + ")");
    document.body.dataset.consoleNode = ticket.node;
    buttons();
  });
  rfb.addEventListener("disconnect", async () => {
    rfb = null;
    document.body.dataset.console = "disconnected";
    buttons();
    const why = await lastReason();
    // A live migration ends the session on the old node: follow the VM at once.
    if (wanted && /migrat|not running on one node|moved/.test(why)) delay = FIRST;
    retry("disconnected" + (why ? ": " + why : ""));
  });
}

function start() {
  if (wanted) return;
  wanted = true;
  delay = FIRST;
  buttons();
  connect();
}

function stop() {
  wanted = false;
  if (timer) { clearTimeout(timer); timer = null; }
  if (rfb) rfb.disconnect(); else say("closed", "disconnected");
  buttons();
}

openBtn.addEventListener("click", start);
closeBtn.addEventListener("click", stop);
cadBtn.addEventListener("click", () => rfb && rfb.sendCtrlAltDel());
fullBtn.addEventListener("click", () => screen.requestFullscreen && screen.requestFullscreen());
if (location.hash === "#console") start();
