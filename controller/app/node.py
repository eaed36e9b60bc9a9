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
from controller.bus.console import console_endpoint
from controller.bus.keys import Curve, start_authenticator
from controller.bus.subscriber import Peer, Subscriber
from controller.bus.wire import to_json
from controller.engine.store import Store, mark_stale
from controller.model.errors import WardenError
from controller.model.events import Dirty, Envelope
from probes.pacemaker.alerts import AlertReceiver


def snapshot_endpoint(endpoint: str) -> str:
    """Our convention: the snapshot ROUTER listens on the PUB port + 1 (or "<path>-snapshot")."""
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[6:].rpartition(":")
        if not port.isdigit() or not host:
            raise WardenError(f"{endpoint}: a tcp endpoint needs a host and an explicit port")
        if not 1 <= int(port) <= 65534:
            raise WardenError(f"{endpoint}: port must be 1..65534 (the snapshot port is one more)")
        return f"tcp://{host}:{int(port) + 1}"
    if not endpoint.startswith(("ipc://", "inproc://")):
        raise WardenError(f"{endpoint}: not a ZeroMQ endpoint (tcp://HOST:PORT, ipc://PATH)")
    return endpoint + "-snapshot"


def on_loopback(endpoint: str) -> bool:
    """Endpoints only this host can reach: inproc, ipc, and tcp on 127.0.0.0/8 or [::1]."""
    if endpoint.startswith(("inproc://", "ipc://")):
        return True
    host = endpoint.removeprefix("tcp://").rpartition(":")[0]
    return host.startswith("127.") or host in ("localhost", "[::1]", "::1")


def curve_from(keys: str | None, allow: str | None, endpoint: str, insecure: bool) -> Curve | None:
    if endpoint.startswith("inproc://"):
        return None
    if keys and allow:
        return Curve.load(Path(keys), Path(allow))
    if keys or allow:
        raise WardenError("CURVE needs both --keys SECRET_FILE and --allow DIR")
    if not insecure:
        raise WardenError("CURVE keys are required on the network: --keys SECRET_FILE --allow DIR "
                          "(kvm-warden keys generate DIR NAME), or --insecure on loopback")
    if not on_loopback(endpoint):
        raise WardenError(f"{endpoint}: --insecure is refused off loopback; use CURVE keys")
    return None


def _wait_for_signal() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()


def run_agent(node: str, bind: str, libvirt_uri: str | None, corosync: bool, keys: str | None,
              allow: str | None, insecure: bool, alerts: str | None = None,
              config_dirs: tuple[str, ...] = ()) -> int:
    logs.configure(sys.stderr)
    snapshots = snapshot_endpoint(bind)  # validates the endpoint first
    curve = curve_from(keys, allow, bind, insecure)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    auth = start_authenticator(ctx, curve) if curve else None
    try:
        agent = Agent(AgentConfig(node=node, pub_endpoint=bind, snapshot_endpoint=snapshots,
                                  libvirt_uri=libvirt_uri, corosync=corosync, alerts=alerts,
                                  console_endpoint=console_endpoint(bind),
                                  config_dirs=config_dirs),
                      ctx, curve)
    except zmq.ZMQError as exc:
        if auth:
            auth.stop()
        raise WardenError(f"{bind}: cannot listen: {exc}") from None
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
        this = curve_from(keys, allow, endpoint, insecure)
        if this is not None:
            if not name:
                raise WardenError(f"--agent {endpoint}: give it as NAME={endpoint}: NAME.key in "
                                  "--allow is the agent's public key, without which CURVE cannot "
                                  "authenticate it")
            curve = this
            curve.peer_key(name)  # fails now, with the path, if the allow-list lacks it
        peers.append(Peer(endpoint, snapshot_endpoint(endpoint), name=name or None,
                          secure=this is not None))
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
        def fold(self, env: Envelope) -> frozenset[Dirty]:
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
