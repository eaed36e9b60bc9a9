"""One lifecycle (issue "One observation, one pass", 5): every long-lived component of the
agent and of the controller's side of the bus is registered with a Lifecycle, and /healthz
fails, naming it, when any one of them dies while the process lives. Each is killed in turn
(its threads end without it being stopped: what an unhandled error in its loop does), real
parts throughout: libvirt's test driver, the mounts and XML-directory probes, corosync's
probe (no corosync here: it retries, alive), Pacemaker's alert socket, the console relay,
the publisher's two threads, the controller's subscriber and out-of-band judge."""

from __future__ import annotations

import typing
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import zmq

from controller.app.http import StatusServer
from controller.app.node import subscribe
from controller.bus.agent import Agent, AgentConfig
from controller.engine.audit import AuditLog
from controller.engine.oob import OutOfBandWatcher
from controller.engine.store import Store
from controller.metrics import dead_threads
from controller.model.overview import StatusDoc
from controller.threads import Lifecycle
from probes.pacemaker.alerts import AlertReceiver
from tests.waiting import wait_for

ANY = "tcp://127.0.0.1:*"
CIB = b"<cib epoch='1' num_updates='1' admin_epoch='0'><configuration/><status/></cib>"


@pytest.fixture
def ctx() -> typing.Iterator[zmq.Context[zmq.Socket[bytes]]]:
    c: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield c
    c.term()


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_healthz_fails_naming_each_component_that_dies_while_the_process_lives(
        ctx: zmq.Context[zmq.Socket[bytes]], tmp_path: Path) -> None:
    (tmp_path / "xml").mkdir()
    agent = Agent(AgentConfig(node="kvm1", pub_endpoint=ANY, snapshot_endpoint=ANY,
                              libvirt_uri="test:///default", corosync=True, storage=True,
                              alerts=str(tmp_path / "alerts.sock"),
                              console_endpoint="inproc://lifecycle-console",
                              config_dirs=(str(tmp_path / "xml"),)), ctx=ctx)
    agent.start()
    controller = Lifecycle()  # the controller's side, as run_service registers it
    server = StatusServer("127.0.0.1", 0, StatusDoc, lambda: (True, "ready"))
    server.start()
    try:
        store = Store()
        controller.add("subscriber", subscribe(ctx, [f"kvm1={agent.publisher.pub_endpoint}"],
                                               store, None, None, True), started=True)
        controller.add("alerts", AlertReceiver(str(tmp_path / "ctl-alerts.sock"), store.fold),
                       started=True)
        controller.add("out-of-band", OutOfBandWatcher(query=lambda: CIB, vms=lambda: {},
                                                       audit=AuditLog(None), found=print))
        parts = {**{f"agent {n}": (agent.lifecycle, c)
                    for n, c in agent.lifecycle.components.items()},
                 **{f"controller {n}": (controller, c)
                    for n, c in controller.components.items()}}
        assert set(parts) == {
            "agent publisher", "agent libvirt", "agent corosync", "agent mounts",
            "agent configs", "agent alerts", "agent console-relay", "controller subscriber",
            "controller alerts", "controller out-of-band"}
        mine = {bg.name for _, c in parts.values() for bg in c.backgrounds}
        wait_for("every component running", lambda: not mine & set(dead_threads()), 10)
        assert healthz(server.port)[0] == 200
        killed: set[str] = set()
        for label, (lifecycle, component) in parts.items():
            name = label.split(" ", 1)[1]
            for bg in component.backgrounds:
                bg.stopping.set()  # its loop ends; nobody called stop()
            wait_for(f"{label} dead", lambda c=component: not any(  # type: ignore[misc]
                bg.alive for bg in c.backgrounds), 10)
            killed |= {bg.name for bg in component.backgrounds}
            assert name in lifecycle.unhealthy(), label
            assert killed <= {d.split(" (", 1)[0] for d in dead_threads()}, label
            status, body = healthz(server.port)
            assert status == 503, label
            assert all(bg.name in body for bg in component.backgrounds), (label, body)
    finally:
        controller.close()
        agent.stop()
        server.stop()
    # stopped on purpose: none of them counts against /healthz any more
    assert not mine & {d.split(" (", 1)[0] for d in dead_threads()}
