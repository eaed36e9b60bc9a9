"""`kvm-warden run` and `kvm-warden controller`: the loop and its HTTP port, against the live
cluster, a CIB file, or the embedded simulated cluster (`--simulate`).

The process is wired here and nowhere else: which sources the store hears (the in-process
agent, remote agents, alerts), which Source a full pass reads, and what HTTP serves.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import zmq

from controller import logs
from controller.actuators.pacemaker import Exporter, PacemakerActuator
from controller.app.console import ConsoleBroker
from controller.app.history import HISTORY_FILE
from controller.app.http import StatusServer, readiness
from controller.app.node import curve_from, on_loopback, snapshot_endpoint, subscribe
from controller.app.plan import EXIT_BUSY
from controller.app.schedulers import simulators
from controller.app.simulated import SimulatedCluster, embedded_desired
from controller.app.status import render_nodes, render_table
from controller.app.text import for_terminal
from controller.app.web import WebView
from controller.app.webconfig import load_web_config
from controller.bus.agent import Agent, AgentConfig
from controller.bus.console import RequestRefused, console_endpoint, request
from controller.bus.keys import Curve
from controller.engine.audit import AuditLog
from controller.engine.capacity import FailoverChecker
from controller.engine.desired_store import DesiredStore
from controller.engine.history import History
from controller.engine.ledger import DEFAULT_STATE_DIR, LedgerFile
from controller.engine.loop import Controller, PassResult
from controller.engine.observe import Source, pacemaker_source, with_local_libvirt
from controller.engine.oob import OutOfBandWatcher
from controller.engine.preview import BackgroundPreviewer
from controller.engine.store import Store
from controller.engine.writer import WriterBusy, WriterLock, lock_path, state_dir_beside
from controller.model.actions import describe
from controller.model.desired import load_desired
from controller.model.errors import ActuatorError, DesiredStateError, WardenError
from controller.model.overview import DesiredInfo, PassSummary, StatusDoc, node_rows
from controller.threads import Lifecycle
from probes.pacemaker.alerts import AlertReceiver
from probes.pacemaker.read import query_status


@dataclass
class RunOptions:
    """What `run`/`controller` were asked for (cli.py builds it from the arguments)."""

    desired_path: str | None = None
    cib_file: str | None = None
    libvirt_uri: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 9810
    simulate: bool = False
    passes: int = 0
    agents: list[str] = field(default_factory=list)
    local_agent: bool = False
    alerts: str | None = None
    keys: str | None = None
    allow: str | None = None
    insecure: bool = False
    node: str | None = None
    watch_endpoint: str | None = None
    state_dir: str | None = None  # the ledger's home (default /var/lib/kvm-warden)
    web_config: str | None = None  # TLS + basic auth (exporter-toolkit's format)


def run_service(opts: RunOptions) -> int:
    logs.configure(sys.stderr)
    with ExitStack() as stack:
        store = Store()
        # Every long-lived part of the service, stopped in reverse, answered for by /healthz.
        parts = Lifecycle()
        stack.callback(parts.close)
        agents = _listen(opts, stack, store, parts)
        sim = _simulated(opts) if opts.simulate else None
        if sim is not None:  # a demo leaves nothing behind (the ledger, the history: all in it)
            stack.callback(shutil.rmtree, sim.workdir, ignore_errors=True)
            if opts.web_config is None and opts.http_port >= 0:
                opts.web_config = str(demo_web_config(sim.workdir))
        if not _desired_valid(opts):
            return 1
        cib_file = str(sim.cib_file) if sim else opts.cib_file
        state_dir = opts.state_dir or (
            str(sim.workdir / "state") if sim else
            str(state_dir_beside(opts.cib_file)) if opts.cib_file else DEFAULT_STATE_DIR)
        # One writer per cluster: a second controller, or a plan --apply, is refused while
        # this one runs (and names it).
        lock = WriterLock(lock_path(cib_file, state_dir), "controller",
                          http=f"{opts.http_host}:{opts.http_port}" if opts.http_port >= 0
                          else None)
        try:
            lock.acquire()
        except WriterBusy as exc:
            print(f"kvm-warden: error: {exc}", file=sys.stderr)
            return EXIT_BUSY
        stack.callback(lock.release)
        history = History(Path(state_dir) / HISTORY_FILE)
        stack.callback(history.close)
        controller = _controller(opts, sim, agents, store, state_dir, history)
        stack.callback(parts.close)  # (again: now before the history closes; closing is once)
        _watch_history_and_out_of_band(controller, history, store, parts, cib_file)
        view = WebView(controller, history,
                       broker=_console_broker(opts, agents, controller))
        server = _serve_http(opts, controller, view)
        if server is not None:
            stack.callback(server.stop)
        signal.signal(signal.SIGTERM, lambda *_: controller.stop())
        try:
            controller.run_forever(passes=opts.passes,
                                   on_pass=lambda r: _passed(r, controller, view))
        except KeyboardInterrupt:
            pass
    return 0


def _listen(opts: RunOptions, stack: ExitStack, store: Store, parts: Lifecycle) -> list[str]:
    """The agents subscribed to (the local one too, unless --no-agent) and the alert
    receiver, folding into the store; returns the agents."""
    agents = list(opts.agents)
    agents += _local_agent(opts, stack)
    if agents:
        parts.add("subscriber", subscribe(zmq.Context.instance(), agents, store, opts.keys,
                                          opts.allow, opts.insecure), started=True)
    if opts.alerts and not opts.simulate:
        receiver = AlertReceiver(opts.alerts, store.fold)
        parts.add("alerts", receiver, started=True)
        print(f"alerts:            {receiver.endpoint} (recipient value for kvm-warden-alert)")
    return agents


def _desired_valid(opts: RunOptions) -> bool:
    if opts.desired_path is None:
        print("kvm-warden: error: --desired FILE is required (or --simulate)", file=sys.stderr)
        return False
    try:
        load_desired(opts.desired_path)
    except DesiredStateError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return False
    return True


def _controller(opts: RunOptions, sim: SimulatedCluster | None, agents: list[str],
                store: Store, state_dir: str, history: History) -> Controller:
    """The controller with its actuator, records, scheduler's preview and N+1 checker."""
    assert opts.desired_path is not None  # _desired_valid
    controller = Controller(
        source=_source(opts, sim, bool(agents)),
        actuator=PacemakerActuator(str(sim.cib_file) if sim else opts.cib_file,
                                   exporter=_exporter(opts, agents)),
        desired=DesiredStore(opts.desired_path), store=store,
        after_apply=sim.settle if sim else None,
        ledger_file=LedgerFile(state_dir), audit=AuditLog(state_dir),
        history=history)
    # The scheduler's preview runs on its own thread: passes go on while it computes.
    relays, curve = _relays(opts, agents)
    controller.simulator = simulators(lambda: controller.last_observed, relays, curve)
    controller.previewer = BackgroundPreviewer(controller.current_cib,
                                               controller.preview_ready,
                                               controller.simulator)
    controller.failover = FailoverChecker(controller.current_cib)  # N+1, beside the loop
    return controller


def _watch_history_and_out_of_band(controller: Controller, history: History, store: Store,
                                   parts: Lifecycle, cib_file: str | None) -> None:
    """The history taps the event stream; libvirt events of cluster VMs that no Pacemaker
    operation explains are found and audited (engine/oob.py)."""
    store.taps.append(lambda env: history.tap(env, _vms(controller), controller.vm_names))
    oob = OutOfBandWatcher(query=lambda: query_status(cib_file),
                           vms=lambda: _vms(controller),
                           audit=controller.audit, found=controller.out_of_band)
    parts.add("out-of-band", oob)
    controller.on_transition = oob.poke
    store.taps.append(oob.offer)


def _vms(controller: Controller) -> Mapping[str, str]:
    """libvirt domain name -> resource id of every cluster VM as of the last pass; before the
    first pass, the desired file's VMs."""
    if controller.vms:
        return controller.vms
    desired = controller.desired.current
    return {vm.name: vm.resource_id for vm in desired.vms} if desired is not None else {}


def _local_agent(opts: RunOptions, stack: ExitStack) -> list[str]:
    """`kvm-warden run`: the node agent in the same process, over inproc (no network, no keys).
    The simulated default runs it only when asked for a libvirt URI (e.g. test:///default)."""
    if not opts.local_agent or (opts.simulate and not opts.libvirt_uri):
        return []
    me = opts.node or socket.gethostname()
    agent = Agent(AgentConfig(node=me, pub_endpoint="inproc://agent",
                              snapshot_endpoint="inproc://agent-snapshot",
                              libvirt_uri=opts.libvirt_uri or "qemu:///system",
                              console_endpoint="inproc://agent-console"),
                  zmq.Context.instance())
    if opts.watch_endpoint:
        if not on_loopback(opts.watch_endpoint):
            # The in-process agent's sockets carry no CURVE (inproc needs none): what they
            # also serve must stay on this host. Remote watchers subscribe to `kvm-warden agent`.
            raise WardenError(f"--watch-endpoint {opts.watch_endpoint}: must be on loopback "
                              "(tcp://127.0.0.1:PORT or ipc://PATH); it serves without CURVE")
        snapshots = snapshot_endpoint(opts.watch_endpoint)
        if opts.watch_endpoint.startswith("ipc://"):
            Path(opts.watch_endpoint[6:]).parent.mkdir(parents=True, exist_ok=True)
        agent.publisher.also_bind(opts.watch_endpoint, snapshots)
        for endpoint in (opts.watch_endpoint, snapshots):
            if endpoint.startswith("ipc://"):
                # No CURVE here: the file's owner is who may read the events (and flood).
                Path(endpoint[6:]).chmod(0o600)
        print(f"events:            kvm-warden watch --controller {opts.watch_endpoint}")
    agent.start()
    stack.callback(agent.stop)
    return [f"{me}=inproc://agent"]


def _simulated(opts: RunOptions) -> SimulatedCluster:
    workdir = Path(tempfile.mkdtemp(prefix="kvm-warden-demo-")).resolve()
    sim = SimulatedCluster(workdir)
    try:
        sim.create()
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)  # a failed start leaves nothing either
        raise
    if opts.desired_path is None:
        opts.desired_path = str(workdir / "desired.yaml")
        Path(opts.desired_path).write_text(embedded_desired())
    print(f"simulated cluster: {sim.cib_file} (Pacemaker's tools with CIB_file=; "
          f"crm_simulate plays the scheduler)")
    print(f"desired state:     {opts.desired_path}  (edit it: reloaded on save)")
    return sim


def _source(opts: RunOptions, sim: SimulatedCluster | None, has_agents: bool) -> Source:
    """What a full pass reads itself; agents deliver the rest through the store."""
    if sim is not None:
        return sim.read
    source = pacemaker_source(opts.cib_file)
    if opts.libvirt_uri and not has_agents:
        source = with_local_libvirt(source, opts.libvirt_uri, socket.gethostname())
    return source


def _relays(opts: RunOptions, agents: list[str]) -> tuple[dict[str, str], Curve | None]:
    """Each named agent's relay endpoint (its PUB port + 2, same CURVE keys): consoles and
    the controller's requests must know whose node they reach."""
    relays: dict[str, str] = {}
    curve = None
    for spec in agents:
        name, _, endpoint = spec.rpartition("=")
        if not name:
            continue
        relays[name] = console_endpoint(endpoint)
        curve = curve_from(opts.keys, opts.allow, endpoint, opts.insecure) or curve
    return relays, curve


def _console_broker(opts: RunOptions, agents: list[str], controller: Controller
                    ) -> ConsoleBroker | None:
    relays, curve = _relays(opts, agents)
    return ConsoleBroker(controller, relays, curve) if relays else None


def _exporter(opts: RunOptions, agents: list[str]) -> Exporter | None:
    """ExportConfig's way to a node: the `export` request over its agent's relay."""
    relays, curve = _relays(opts, agents)
    if not relays:
        return None

    def export(node: str, domain: str, path: str) -> str:
        if node not in relays:
            raise ActuatorError(["kvm-warden", "export"], f"no agent known on {node}")
        key = curve.peer_key(node) if curve is not None else None
        try:
            return request(relays[node], curve, key, b"export", domain.encode(),
                           path.encode()).decode()
        except (RequestRefused, TimeoutError, zmq.ZMQError) as exc:
            raise ActuatorError(["kvm-warden", "export", node], str(exc)) from None

    return export


def _passed(result: PassResult, controller: Controller, view: WebView) -> None:
    print(for_terminal(summarize(result, controller)), flush=True)
    view.passed()


def _serve_http(opts: RunOptions, controller: Controller, view: WebView) -> StatusServer | None:
    if opts.http_port < 0:
        return None

    def status_doc() -> StatusDoc:
        return status_document(controller, opts.desired_path)

    if not 0 <= opts.http_port <= 65535:
        raise WardenError(f"--http-port {opts.http_port}: must be 0..65535")
    web = load_web_config(opts.web_config) if opts.web_config else None
    if not on_loopback(f"tcp://{opts.http_host}:0") and (
            web is None or not web.users or web.tls is None):
        raise WardenError(f"--http-host {opts.http_host}: off loopback the HTTP port needs "
                          "--web-config FILE with basic_auth_users and tls_server_config: "
                          "cluster state, metrics and consoles are not served to anyone who "
                          "asks, nor in clear text")
    try:
        # The console needs users to audit and agents to relay to.
        view.console = web is not None and web.users and view.broker is not None
        view.console_reason = "" if view.console else console_reason(view.broker)
        if web is not None and view.broker is not None:
            view.broker.limits = web.console_limits
        server = StatusServer(opts.http_host, opts.http_port, status_doc,
                              lambda: ready_state(controller), web, view)
    except (OSError, OverflowError) as exc:
        raise WardenError(f"cannot listen on {opts.http_host}:{opts.http_port}: {exc}") from None
    server.start()
    scheme = "https" if web is not None and web.tls is not None else "http"
    print(f"metrics:           {scheme}://{opts.http_host}:{server.port}/metrics  "
          f"(/healthz /readyz /status)")
    return server


def demo_web_config(workdir: Path) -> Path:
    """The simulated cluster's web user: an operator named `demo` with a password made now and
    printed, so the demo's buttons work -- and are audited with a name -- while the port stays
    read-only to every other local user (nothing changes a cluster without a named user)."""
    password = secrets.token_urlsafe(12)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    path = workdir / "web.yml"
    path.write_text(f"basic_auth_users:\n  demo: '{hashed}'\n"
                    "kvm_warden:\n  roles: {demo: operator}\n  anonymous_viewers: true\n")
    path.chmod(0o600)
    print(f"web user:          demo  password: {password}  (an operator; others only look)")
    return path


def console_reason(broker: ConsoleBroker | None) -> str:
    if broker is None:
        return ("no node agents to relay to (the console reaches a guest's VNC through the "
                "kvm-warden agent on its node: run with --agent NODE=ENDPOINT)")
    return ("the controller has no web users (--web-config with basic_auth_users): every "
            "console session is audited with the user who opened it")


def ready_state(controller: Controller) -> tuple[bool, str]:
    """/readyz: a valid desired state and a successful pass recently (its own end time)."""
    last = controller.last
    return readiness(last.finished_at if last and not last.error else None,
                     not controller.desired.errors and controller.desired.current is not None)


def status_document(controller: Controller, desired_path: str | None) -> StatusDoc:
    last, store = controller.last, controller.desired
    return StatusDoc(
        vms=controller.last_rows if controller.last_observed else (),
        nodes=(node_rows(controller.last_observed, controller.desired.current)
               if controller.last_observed else ()),
        desired=DesiredInfo(path=desired_path, generation=store.generation,
                            valid=not store.errors, errors=tuple(store.errors)),
        last_pass=None if last is None else PassSummary(
            actions=tuple(describe(d.action) for d in last.decisions),
            findings=tuple(f.message for f in last.findings), error=last.error,
            duration_s=round(last.duration, 4)))


HELD_REASONS = frozenset({"previewing", "cooldown"})


def summarize(result: PassResult, controller: Controller) -> str:
    stamp = time.strftime("%H:%M:%S")
    if result.error:
        return f"[{stamp}] pass failed: {result.error}"
    lines = []
    applied = [o for o in result.outcomes if o.applied]
    not_made = [d for d in result.decisions if not d.verdict.admitted]
    # Held: waits on its own (the preview running, a cooldown); refused: the guard says no.
    held = [d for d in not_made if d.verdict.reason in HELD_REASONS]
    refused = [d for d in not_made if d.verdict.reason not in HELD_REASONS]
    counts = f"{len(applied)} applied, {len(refused)} refused" + (
        f", {len(held)} held" if held else "")
    head = (f"[{stamp}] pass {result.duration * 1000:.0f} ms: {len(result.decisions)} action(s), "
            f"{counts}, {len(result.findings)} finding(s)")
    lines.append(head)
    for o in result.outcomes:
        lines.append(f"    {'applied' if o.applied else 'FAILED '} {describe(o.action)}  "
                     f"({o.action.reconciler}: {o.action.why})")
    for d in not_made:
        word = "held   " if d.verdict.reason in HELD_REASONS else "refused"
        lines.append(f"    {word} {describe(d.action)}: {d.verdict.reason}: {d.verdict.detail}")
    for f in result.findings:
        lines.append(f"    ! {f.severity}: {f.message}")
    if controller.last_observed is not None and (applied or not result.decisions):
        lines.append(render_table(controller.last_rows))
        drains = render_nodes(node_rows(controller.last_observed, controller.desired.current))
        if drains:
            lines.append(drains)
    return "\n".join(lines)
