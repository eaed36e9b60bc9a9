"""Whose Pacemaker scheduler previews a patch: this node's, or -- while a rolling upgrade
leaves the cluster mixed and this node's version is not the DC's -- a node of the DC's version
through its agent (bus/simulate.py). The choice itself is engine/preview.choose_scheduler."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import zmq

from controller.bus.console import RequestRefused, request
from controller.bus.keys import Curve
from controller.bus.simulate import decode_result, request_frames
from controller.engine.preview import LOCAL, NoFaithfulScheduler, Simulator, choose_scheduler
from controller.model.errors import ToolError, WardenError
from controller.model.observed import ObservedState
from probes.pacemaker.simulate import Steps, local_scheduler


@dataclass(frozen=True)
class AgentSimulator:
    node: str
    feature_set: str
    endpoint: str
    curve: Curve | None

    @property
    def where(self) -> str:
        return f"the Pacemaker of {self.node} (feature set {self.feature_set}, the DC's)"

    def __call__(self, before: bytes | None, after: bytes, timeout: float
                 ) -> tuple[Steps | None, Steps]:
        key = self.curve.peer_key(self.node) if self.curve is not None else None
        try:
            data = request(self.endpoint, self.curve, key, b"simulate",
                           *request_frames(before, after, timeout), timeout=timeout * 2 + 5)
        except (RequestRefused, TimeoutError, zmq.ZMQError) as exc:
            raise ToolError(("kvm-warden", "simulate", self.node), str(exc)) from None
        result = decode_result(data)
        return result.base, result.steps


def simulators(observed: Callable[[], ObservedState | None], relays: dict[str, str],
               curve: Curve | None) -> Callable[[], Simulator]:
    """The previewer's choice, made afresh for each preview from the latest reading."""

    def choose() -> Simulator:
        seen = observed()
        if seen is None:
            return LOCAL
        try:
            local = local_scheduler()
        except WardenError:
            return LOCAL  # its own crm_simulate will say what is wrong
        status = seen.status
        pick = choose_scheduler(local, status.dc, status.nodes, sorted(relays))
        if pick.reason:
            return NoFaithfulScheduler(pick.reason)
        if pick.node is None:
            return LOCAL
        fs = status.nodes[pick.node].feature_set or ""
        return AgentSimulator(pick.node, fs, relays[pick.node], curve)

    return choose
