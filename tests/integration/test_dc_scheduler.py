"""A preview by the DC's scheduler while a cluster is mixed (issue "Rolling upgrade", 2): the
controller sends the CIB pair to a node of the DC's version through its agent's relay (real
ZeroMQ with CURVE, the agent's own `simulate` handler, real crm_simulate); what comes back is
what that node's scheduler computes, and a preview without a faithful scheduler fails (the
patch is held) instead of trusting another version."""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import pytest
import zmq

from controller.app.schedulers import AgentSimulator, simulators
from controller.bus.agent import Agent, AgentConfig
from controller.bus.console import RequestRefused, request
from controller.bus.keys import start_authenticator
from controller.bus.simulate import MAX_CIB
from controller.engine.preview import LOCAL, NoFaithfulScheduler, preview
from controller.model.actions import SetNodeAttribute
from controller.model.observed import ClusterStatus, Node, ObservedState
from probes.pacemaker.simulate import local_scheduler, run_pair
from tests.cibs import SEED
from tests.integration.test_console_relay import keys

DRAIN = SetNodeAttribute(reconciler="nodes", node="kvm1", name="standby", value="on",
                         why="the desired state has kvm1 standby")


@pytest.fixture
def ctx():  # type: ignore[no-untyped-def]
    c = zmq.Context()
    yield c
    c.term()


@pytest.fixture
def agent(ctx: zmq.Context, tmp_path: Path):  # type: ignore[no-untyped-def]
    """kvm2's agent with its relay only (no probes), and the controller's keys."""
    agent_curve, ctl_curve = keys(tmp_path)
    auth = start_authenticator(ctx, agent_curve)
    a = Agent(AgentConfig(node="kvm2", pub_endpoint="tcp://127.0.0.1:*",
                          snapshot_endpoint="tcp://127.0.0.1:*", libvirt_uri=None,
                          corosync=False, storage=False,
                          console_endpoint="tcp://127.0.0.1:*"), ctx, agent_curve)
    assert a.console is not None
    a.console.start()
    try:
        yield a.console.endpoint, ctl_curve
    finally:
        a.stop()
        auth.stop()


def test_the_agent_previews_with_its_own_scheduler(agent: tuple[str, object],
                                                   tmp_path: Path) -> None:
    endpoint, curve = agent
    remote = AgentSimulator("kvm2", "3.16.1", endpoint, curve)  # type: ignore[arg-type]
    cib = SEED.read_bytes()
    by_agent = preview(cib, (DRAIN,), 60, simulator=remote)
    here = preview(cib, (DRAIN,), 60, simulator=LOCAL)
    assert by_agent.error is None, by_agent.error
    # the same scheduler binary here: the agent's answer is exactly the local one
    assert by_agent.steps == here.steps and by_agent.steps
    assert {s.action for s in by_agent.steps if s.resource.startswith("vm-")} == {"migrate"}
    assert by_agent.scheduler == "the Pacemaker of kvm2 (feature set 3.16.1, the DC's)"
    assert here.scheduler == f"{local_scheduler()} on this node"
    assert by_agent.simulations == 2
    assert run_pair(None, cib, timeout=60)[0] is None  # no baseline asked: none run


def test_bad_requests_are_refused_with_the_reason(agent: tuple[str, object]) -> None:
    endpoint, curve = agent
    key = curve.peer_key("kvm2")  # type: ignore[attr-defined]

    def ask(*frames: bytes) -> str:
        with pytest.raises(RequestRefused) as err:
            request(endpoint, curve, key, b"simulate", *frames, timeout=30)  # type: ignore[arg-type]
        return str(err.value)

    assert "3 frames" in ask(b"x")
    assert "not zlib data" in ask(b"", b"not zlib", b"10")
    bomb = zlib.compress(b"<" * (MAX_CIB + 1), 9)
    assert "more than 256 MiB inflated" in ask(b"", bomb, b"10")
    assert "crm_simulate" in ask(b"", zlib.compress(b"not xml"), b"10")
    # the relay lives on: a good request after the bad ones is answered
    good = AgentSimulator("kvm2", "3.16.1", endpoint, curve)  # type: ignore[arg-type]
    assert good(None, SEED.read_bytes(), 30)[1] == ()


def test_the_choice_follows_the_dc_and_holds_without_one(tmp_path: Path) -> None:
    local = local_scheduler()
    other = "3.20.0" if local.feature_set != "3.20.0" else "3.16.1"

    def status(dc: str, fs: dict[str, str]) -> ObservedState:
        return ObservedState(status=ClusterStatus(dc=dc, nodes={
            n: Node(name=n, online=True, feature_set=f) for n, f in fs.items()}))

    relays = {"kvm1": "tcp://127.0.0.1:1", "kvm2": "tcp://127.0.0.1:2"}
    same = status("kvm1", {"kvm1": local.feature_set, "kvm2": other})
    assert simulators(lambda: same, relays, None)() is LOCAL
    mixed = status("kvm2", {"kvm1": local.feature_set, "kvm2": other})
    pick = simulators(lambda: mixed, relays, None)()
    assert isinstance(pick, AgentSimulator) and pick.node == "kvm2"
    lone = simulators(lambda: mixed, {"kvm1": relays["kvm1"]}, None)()
    assert isinstance(lone, NoFaithfulScheduler)
    held = preview(SEED.read_bytes(), (DRAIN,), 30, simulator=lone)
    assert held.error is not None and "not previewed by the DC's scheduler" in held.error
    assert simulators(lambda: None, relays, None)() is LOCAL
    shutil.rmtree(tmp_path, ignore_errors=True)
