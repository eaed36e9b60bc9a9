"""A controller that connects after the agents published (an HA takeover, a restart) learns
everything they know: every kind the registry calls state reaches it through the snapshot.

Before the registry, the snapshot kept only domain listings, quorum and mounts: the domain XML
files an operator had put on the shared storage never reached a late controller, and enrollment
planned an export over a file that was there (issue "Enrolling a VM whose XML the operator
already put on the shared storage never completes").
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import zmq

from controller.bus.agent import Agent, AgentConfig
from controller.bus.publisher import Publisher
from controller.bus.subscriber import Peer, Subscriber
from controller.engine.store import Store
from controller.model import events
from controller.model.events import (
    ConfigFilesSeen,
    DomainSeen,
    QuorumChanged,
    Snapshotted,
    envelope,
)
from controller.model.observed import ConfigFile, Domain, SourceKey
from probes.storage.configs import read_config_file
from tests.integration.test_enroll import CONFIG, DESIRED, Cluster, actions, findings, reasons
from tests.waiting import wait_for

ANY = "tcp://127.0.0.1:*"
DOMAIN_XML = """<domain type='kvm'>
  <name>web03</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><source file='/kvm/storage/web03.qcow2'/>
      <target dev='vda' bus='virtio'/></disk>
  </devices>
</domain>
"""


@pytest.fixture
def ctx() -> typing.Iterator[zmq.Context[zmq.Socket[bytes]]]:
    c: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield c
    c.term()


def test_the_snapshot_carries_exactly_the_kinds_the_registry_calls_state() -> None:
    snapshotted = {k.payload for k in events.OBSERVATIONS if k.snapshotted}
    assert snapshotted == set(typing.get_args(Snapshotted))
    # What is not snapshotted is an event whose effect a snapshotted listing carries, or the
    # controller's own reading of Pacemaker (never on the bus).
    assert {k.name for k in events.OBSERVATIONS if not k.snapshotted} == {
        "DomainLifecycle", "Heartbeat", "AlertReceived", "PacemakerSeen"}


def test_a_controller_that_connects_after_the_agent_learns_every_kind_it_holds(
        ctx: zmq.Context[zmq.Socket[bytes]], tmp_path: Path) -> None:
    xml_dir = tmp_path / "xml"
    xml_dir.mkdir()
    (xml_dir / "web03.xml").write_text(DOMAIN_XML)
    agent = Agent(AgentConfig(node="kvm1", pub_endpoint=ANY, snapshot_endpoint=ANY,
                              libvirt_uri="test:///default", corosync=True, storage=True,
                              config_dirs=(str(xml_dir),)), ctx=ctx)
    agent.start()
    store = Store()
    sub: Subscriber | None = None
    try:
        # Everything published before anyone listened.
        wait_for("the agent published its files", lambda: agent.configs is not None
                 and agent.configs.last is not None, 10.0, 0.05)
        wait_for("the agent listed its domains", lambda: agent._listing is not None, 10.0, 0.05)
        # No corosync runs here: its probe says so (state "unknown"), which is state too.
        wait_for("the agent reported quorum",
                 lambda: QuorumChanged in agent.publisher._state, 10.0, 0.05)
        sub = Subscriber(ctx, [Peer(agent.publisher.pub_endpoint,
                                    agent.publisher.snapshot_endpoint)], store.fold)
        sub.start()
        path = str(xml_dir / "web03.xml")
        wait_for("the late controller knows kvm1's XML file",
                 lambda: path in store.state.config_files.get("kvm1", {}), 10.0, 0.05)
        state = store.state
        assert state.config_files["kvm1"][path] == read_config_file(xml_dir / "web03.xml")
        assert state.config_dirs["kvm1"] == (str(xml_dir),)
        assert "test" in state.domains["kvm1"]  # test:///default's own domain
        assert "kvm1" in state.mounts and state.quorum["kvm1"].state == "unknown"
        for kind in events.OBSERVATIONS:
            if kind.snapshotted:
                assert kind.source(kind.payload(node="kvm1"), "kvm1") in state.observed_at, \
                    kind.name
    finally:
        if sub is not None:
            sub.close()
        agent.stop()


def test_an_agent_without_an_xml_directory_says_so_to_a_late_controller(
        ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    agent = Agent(AgentConfig(node="kvm2", pub_endpoint=ANY, snapshot_endpoint=ANY,
                              libvirt_uri=None, corosync=False, storage=False), ctx=ctx)
    agent.start()
    store = Store()
    sub = Subscriber(ctx, [Peer(agent.publisher.pub_endpoint,
                                agent.publisher.snapshot_endpoint)], store.fold)
    sub.start()
    try:
        wait_for("kvm2's directories are known", lambda: "kvm2" in store.state.config_dirs,
                 10.0, 0.05)
        assert store.state.config_dirs["kvm2"] == ()
        assert SourceKey("config", "kvm2") in store.state.observed_at
    finally:
        sub.close()
        agent.stop()


class Agents:
    """Three nodes' agents (real publishers on loopback) that reported before the controller."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], running_on: str = "kvm2"):
        self.ctx = ctx
        self.pubs = {n: Publisher(ctx, n, ANY, ANY) for n in ("kvm1", "kvm2", "kvm3")}
        for n, pub in self.pubs.items():
            doms = (Domain(name="web03", state="running", persistent=False, autostart=False,
                           disks=("/kvm/storage/web03.qcow2",)),) if n == running_on else ()
            pub.publish(DomainSeen(node=n, domains=doms))
            pub.publish(ConfigFilesSeen(node=n, dirs=("/kvm/storage",),
                                        files=(_operator_file(),)))

    def controller(self, c: Cluster) -> Subscriber:
        """A controller (re)starting: a fresh store, subscribed now."""
        c.store = Store()
        c.ctl.store = c.store
        sub = Subscriber(self.ctx, [Peer(p.pub_endpoint, p.snapshot_endpoint)
                                    for p in self.pubs.values()], c.store.fold)
        sub.start()
        wait_for("every agent's files reached the controller",
                 lambda: all(CONFIG in c.store.state.config_files.get(n, {})
                             for n in self.pubs), 10.0, 0.05)
        return sub

    def close(self) -> None:
        for p in self.pubs.values():
            p.close()


def _operator_file() -> ConfigFile:
    """The XML the operator put on the shared storage by hand (`virsh dumpxml`), as read."""
    return ConfigFile(path=CONFIG, sha256="b" * 64, domain="web03", name_on_own_line=True,
                      disks=("/kvm/storage/web03.qcow2",))


@pytest.mark.usefixtures("pacemaker_tools")
def test_enrollment_uses_the_operators_file_and_survives_a_controller_restart(
        ctx: zmq.Context[zmq.Socket[bytes]], tmp_path: Path) -> None:
    c = Cluster(tmp_path, DESIRED)
    agents = Agents(ctx)
    sub = agents.controller(c)
    try:
        first = c.step()
        # The file is there on every node: no export, the primitive is created unmanaged.
        assert "ExportConfig" not in actions(first)
        assert "CreateVm" in actions(first), [f.message for f in first.findings]
        sub.close()
        # The controller restarts mid-enrollment (a takeover): it learns the files again.
        sub = agents.controller(c)
        c.run_scheduler("vm-web03_monitor_0@kvm2=0")
        assert actions(c.step()) == ["ManageVm"]
        assert not findings(c.step(), "enroll-refused")
    finally:
        sub.close()
        agents.close()


@pytest.mark.usefixtures("pacemaker_tools")
def test_an_agent_that_reads_no_directory_holding_the_file_refuses_with_the_reason(
        tmp_path: Path) -> None:
    c = Cluster(tmp_path, DESIRED)
    c.report(running_on=("kvm2",))
    c.seq += 1
    c.store.fold(envelope("kvm3", c.seq, ConfigFilesSeen(node="kvm3", dirs=("/srv/xml",))))
    out = c.step()
    assert not {"ExportConfig", "CreateVm"} & set(actions(out))
    assert reasons(out, "enroll-refused") == ["ConfigUnseen"]
    assert "/srv/xml" in findings(out, "enroll-refused")[0]  # the directory it does read


@pytest.mark.usefixtures("pacemaker_tools")
def test_a_node_whose_agent_has_not_reported_its_files_makes_enrollment_wait(
        tmp_path: Path) -> None:
    """Without a node's report, the file's absence there is unknown: wait, never export."""
    c = Cluster(tmp_path, DESIRED)
    for n in ("kvm1", "kvm2", "kvm3"):
        doms = (Domain(name="web03", state="running", persistent=False, autostart=False,
                       disks=("/kvm/storage/web03.qcow2",)),) if n == "kvm2" else ()
        c.seq += 1
        c.store.fold(envelope(n, c.seq, DomainSeen(node=n, domains=doms)))
    c.seq += 1
    c.store.fold(envelope("kvm1", c.seq, ConfigFilesSeen(node="kvm1", dirs=("/kvm/storage",))))
    out = c.step()
    assert not {"ExportConfig", "CreateVm"} & set(actions(out))
    assert reasons(out, "enroll-waiting") == ["FilesUnreported"]
    assert "kvm2, kvm3" in findings(out, "enroll-waiting")[0]  # which agents


def test_healthz_answers_for_the_publishers_threads(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    """Issue "One observation", 5: the publisher's two threads were not watched by /healthz;
    one that ends while the process lives makes it unhealthy."""
    from controller import metrics

    pub = Publisher(ctx, "kvm1", ANY, ANY, heartbeat_seconds=0.1)
    try:
        assert not {"bus-snapshots", "bus-heartbeat"} & set(metrics.dead_threads())
        for bg in pub.backgrounds:
            bg.stopping.set()  # both threads end; the publisher was not closed
        wait_for("both threads ended", lambda: not any(bg.alive for bg in pub.backgrounds), 5)
        assert {"bus-snapshots", "bus-heartbeat"} <= set(metrics.dead_threads())
    finally:
        pub.close()
    assert not {"bus-snapshots", "bus-heartbeat"} & set(metrics.dead_threads())  # closed: forgotten
