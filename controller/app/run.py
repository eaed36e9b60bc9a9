"""`kvm-warden run`: the controller process (loop + HTTP), against the live cluster, a CIB file,
or the embedded simulated cluster (`--simulate`, what `make demo` runs)."""

from __future__ import annotations

import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from controller import logs
from controller.actuators.pacemaker import PacemakerActuator
from controller.app.http import StatusServer, readiness
from controller.app.plan import observe_once
from controller.app.simulated import SimulatedCluster, embedded_desired
from controller.app.status import render_table, vm_rows
from controller.engine.loop import Controller, DesiredStore, PassResult
from controller.model.actions import describe
from controller.model.desired import load_desired
from controller.model.errors import DesiredStateError, ToolError, WardenError
from controller.model.observed import ObservedState
from probes.libvirt.domains import list_domains


def run_service(
    desired_path: str | None, cib_file: str | None, libvirt_uri: str | None, http_port: int,
    http_host: str, simulate: bool, passes: int, agents: list[str] | None = None,
    local_agent: bool = False, alerts: str | None = None, keys: str | None = None,
    allow: str | None = None, insecure: bool = False, node: str | None = None,
    watch_endpoint: str | None = None,
) -> int:
    logs.configure(sys.stderr)
    import zmq

    from controller.app.node import AlertReceiver, subscribe
    from controller.bus.agent import Agent, AgentConfig
    from controller.engine.store import Store

    bus_store = Store()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    closers: list[Any] = []
    agent_specs = list(agents or [])
    # The simulated default runs the agent only when asked for a libvirt URI (e.g. test:///default).
    if local_agent and (not simulate or libvirt_uri):
        # `kvm-warden run`: the agent in the same process, over inproc (no network, no keys).
        me = node or socket.gethostname()
        agent = Agent(AgentConfig(node=me, pub_endpoint="inproc://agent",
                                  snapshot_endpoint="inproc://agent-snapshot",
                                  libvirt_uri=libvirt_uri or "qemu:///system"), ctx)
        if watch_endpoint:
            from controller.app.node import snapshot_endpoint

            if not watch_endpoint.startswith(("tcp://127.", "ipc://")) and not keys:
                raise WardenError("--watch-endpoint off loopback needs CURVE keys")
            agent.publisher.also_bind(watch_endpoint, snapshot_endpoint(watch_endpoint))
            print(f"events:            kvm-warden watch --controller {watch_endpoint}")
        agent.start()
        closers.append(agent.stop)
        agent_specs.append(f"{me}=inproc://agent")
    if agent_specs:
        sub = subscribe(ctx, agent_specs, bus_store, keys, allow, insecure)
        closers.insert(0, sub.close)
    if alerts and not simulate:
        receiver = AlertReceiver(ctx, alerts, bus_store)
        closers.insert(0, receiver.close)
        print(f"alerts:            {receiver.endpoint} (recipient value for kvm-warden-alert)")
    sim: SimulatedCluster | None = None
    if simulate:
        workdir = Path(tempfile.mkdtemp(prefix="kvm-warden-demo-")).resolve()
        sim = SimulatedCluster(workdir)
        sim.create()
        if desired_path is None:
            desired_path = str(workdir / "desired.yaml")
            Path(desired_path).write_text(embedded_desired())
        print(f"simulated cluster: {sim.cib_file} (Pacemaker's tools with CIB_file=; "
              f"crm_simulate plays the scheduler)")
        print(f"desired state:     {desired_path}  (edit it: reloaded on save)")
    if desired_path is None:
        print("kvm-warden: error: --desired FILE is required (or --simulate)", file=sys.stderr)
        return 1
    try:
        load_desired(desired_path)
    except DesiredStateError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1

    store = DesiredStore(desired_path)

    from probes.pacemaker.read import CibCache

    cib_cache = CibCache(cib_file)

    def observe() -> tuple[ObservedState, bytes | None]:
        if sim is not None:
            return sim.observe()
        observed, raw = observe_once(cib_file, cib_cache)
        if agent_specs:
            bus = bus_store.state
            return ObservedState(
                status=observed.status, cib=observed.cib, domains=bus.domains,
                quorum=bus.quorum, mounts=bus.mounts, stale=bus.stale,
                observed_at={**bus.observed_at, **observed.observed_at}), raw
        if libvirt_uri:
            try:
                doms = {socket.gethostname(): list_domains(libvirt_uri)}
                observed = ObservedState(status=observed.status, cib=observed.cib, domains=doms,
                                         observed_at={**observed.observed_at,
                                                      "libvirt": time.time()})
            except ToolError as exc:
                logs.logger(component="libvirt").warning("libvirt_unavailable", error=str(exc))
        return observed, raw

    def refresh(observed: ObservedState) -> ObservedState:
        """The held crm_mon/CIB observation with the bus's newer libvirt/corosync/mounts."""
        bus = bus_store.state
        return ObservedState(status=observed.status, cib=observed.cib, domains=bus.domains,
                             quorum=bus.quorum, mounts=bus.mounts, stale=bus.stale,
                             observed_at={**observed.observed_at, **bus.observed_at})

    controller = Controller(
        observe=observe,
        actuator=PacemakerActuator(str(sim.cib_file) if sim else cib_file),
        desired=store,
        after_apply=sim.settle if sim else None,
        refresh=refresh if agent_specs and sim is None else None,
    )

    def status_doc() -> dict[str, Any]:
        observed = controller.last_observed
        last = controller.last
        return {
            "vms": controller.last_rows if observed else [],
            "desired": {"path": desired_path, "generation": store.generation,
                        "valid": not store.errors, "errors": list(store.errors)},
            "last_pass": None if last is None else {
                "actions": [describe(d.action) for d in last.decisions],
                "findings": [f.message for f in last.findings], "error": last.error,
                "duration_s": round(last.duration, 4)},
        }

    server = None
    if http_port >= 0:
        try:
            server = StatusServer(
                http_host, http_port, status_doc,
                lambda: readiness(time.time() if controller.last and not controller.last.error
                                  else None, not store.errors and store.current is not None))
        except OSError as exc:
            raise WardenError(f"cannot listen on {http_host}:{http_port}: {exc}") from None
        server.start()
        print(f"metrics:           http://{http_host}:{server.port}/metrics  "
              f"(/healthz /readyz /status)")

    def on_pass(result: PassResult) -> None:
        print(summarize(result, controller), flush=True)

    # Events only wake the loop (debounced); the pass re-reads everything (level-triggered).
    bus_store.listeners.append(controller.mark)
    signal.signal(signal.SIGTERM, lambda *_: controller.stop())
    try:
        controller.run_forever(passes=passes, on_pass=on_pass)
    except KeyboardInterrupt:
        pass
    finally:
        if server:
            server.stop()
        for close in closers:
            close()
        if sim:
            print(f"stopped; the simulated cluster is left in {sim.workdir}")
    return 0


def summarize(result: PassResult, controller: Controller) -> str:
    stamp = time.strftime("%H:%M:%S")
    if result.error:
        return f"[{stamp}] pass failed: {result.error}"
    lines = []
    applied = [o for o in result.outcomes if o.applied]
    refused = [d for d in result.decisions if not d.verdict.admitted]
    head = (f"[{stamp}] pass {result.duration * 1000:.0f} ms: {len(result.decisions)} action(s), "
            f"{len(applied)} applied, {len(refused)} refused, {len(result.findings)} finding(s)")
    lines.append(head)
    for o in result.outcomes:
        lines.append(f"    {'applied' if o.applied else 'FAILED '} {describe(o.action)}  "
                     f"({o.action.reconciler}: {o.action.why})")
    for d in refused:
        lines.append(f"    refused {describe(d.action)}: {d.verdict.reason} {d.verdict.detail}")
    for f in result.findings:
        lines.append(f"    ! {f.severity}: {f.message}")
    if controller.last_observed is not None and (applied or not result.decisions):
        lines.append(render_table(vm_rows(controller.last_observed, controller.desired.current)))
    return "\n".join(lines)
