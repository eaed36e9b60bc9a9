"""The bus-side processes: `agent`, `controller` (the subscriber side of `run`), and `watch`."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import zmq

from controller import logs
from controller.bus.agent import Agent, AgentConfig
from controller.bus.keys import Curve, start_authenticator
from controller.bus.subscriber import Peer, Subscriber
from controller.bus.wire import to_json
from controller.engine.store import Store, mark_stale
from controller.model.errors import WardenError
from controller.model.events import Envelope
from probes.pacemaker.alerts import AlertReceiver


def snapshot_endpoint(endpoint: str) -> str:
    """Our convention: the snapshot ROUTER listens on the PUB port + 1 (or "<path>-snapshot")."""
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[6:].rpartition(":")
        if not port.isdigit():
            raise WardenError(f"{endpoint}: a tcp endpoint needs an explicit port")
        return f"tcp://{host}:{int(port) + 1}"
    return endpoint + "-snapshot"


def curve_from(keys: str | None, allow: str | None, endpoint: str, insecure: bool) -> Curve | None:
    if endpoint.startswith("inproc://"):
        return None
    if keys and allow:
        return Curve.load(Path(keys), Path(allow))
    if not insecure:
        raise WardenError("CURVE keys are required on the network: --keys SECRET_FILE --allow DIR "
                          "(kvm-warden keys generate DIR NAME), or --insecure for a lab")
    return None


def _wait_for_signal() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()


def run_agent(node: str, bind: str, libvirt_uri: str | None, corosync: bool, keys: str | None,
              allow: str | None, insecure: bool) -> int:
    logs.configure(sys.stderr)
    curve = curve_from(keys, allow, bind, insecure)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    auth = start_authenticator(ctx, curve) if curve else None
    agent = Agent(AgentConfig(node=node, pub_endpoint=bind, snapshot_endpoint=snapshot_endpoint(bind),
                              libvirt_uri=libvirt_uri, corosync=corosync), ctx, curve)
    agent.start()
    logs.logger(component="agent").info("agent_started", node=node, endpoint=bind,
                                         curve=curve is not None)
    try:
        _wait_for_signal()
    finally:
        agent.stop()
        if auth:
            auth.stop()
    return 0


def subscribe(ctx: zmq.Context[zmq.Socket[bytes]], agents: list[str], store: Store,
              keys: str | None, allow: str | None, insecure: bool) -> Subscriber:
    peers = []
    curve = None
    for spec in agents:
        name, _, endpoint = spec.rpartition("=")
        curve = curve_from(keys, allow, endpoint, insecure) or curve
        peers.append(Peer(endpoint, snapshot_endpoint(endpoint), name=name or None))
    sub = Subscriber(ctx, peers, store.fold, curve=curve,
                     on_stale=lambda src: store.update(lambda s: mark_stale(s, src)))
    sub.start()
    return sub


def run_watch(agents: list[str], keys: str | None, allow: str | None, insecure: bool,
              count: int, alerts: str | None) -> int:
    """Print the live event stream as JSON lines (like `virsh event --loop`)."""
    logs.configure(sys.stderr)  # stdout carries only the events
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    printed = threading.Semaphore(0)
    lock = threading.Lock()

    def show(env: Envelope) -> None:
        with lock:
            sys.stdout.write(to_json(env).decode() + "\n")
            sys.stdout.flush()
        printed.release()

    class Printer(Store):
        def fold(self, env: Envelope) -> frozenset[str]:
            show(env)
            return frozenset()

    store = Printer()
    sub = subscribe(ctx, agents, store, keys, allow, insecure) if agents else None
    receiver = AlertReceiver(alerts, store.fold) if alerts else None
    try:
        if count:
            for _ in range(count):
                printed.acquire()
        else:
            _wait_for_signal()
    except KeyboardInterrupt:
        pass
    finally:
        if sub:
            sub.close()
        if receiver:
            receiver.close()
    time.sleep(0.05)
    return 0
