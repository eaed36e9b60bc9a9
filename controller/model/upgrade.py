"""A rolling upgrade, node by node, as the desired file declares it (`upgrade:`).

Where the upgrade stands is read from the cluster every pass, never stored: the first node in
the declared order that is not yet verified on the target release is the one being worked on,
so a controller that fails over (or restarts) resumes exactly where the last one was. For that
node, in turn: drained through Pacemaker (standby; the room check and the migration limit are
the drain's own), "ready to upgrade" once empty, awaited while it is down, brought back
(standby cleared) once it reports the target release, then verified -- online, its storage
clones running, no failed actions -- before the next node starts. Never two nodes out: the
step that takes a node out waits while any other node is offline, unclean, in standby or in
maintenance, and says so; a failed action anywhere stops it where it is too.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from controller.model.desired import DesiredState, NodeSpec
from controller.model.index import ClusterIndex
from controller.model.vms import is_vm_agent

Step = Literal["waiting", "draining", "ready", "upgrading", "returning", "verifying", "done",
               "held"]


class NodeProgress(msgspec.Struct, frozen=True, kw_only=True):
    node: str
    step: Step
    detail: str  # what it waits for, in an operator's words
    release: str = ""  # what the node's agent last reported ("Debian 12.12")
    reason: str = ""  # why it is held, for machines (a CamelCase word); "" when not held


class UpgradeProgress(msgspec.Struct, frozen=True, kw_only=True):
    to: str
    nodes: tuple[NodeProgress, ...]

    @property
    def current(self) -> NodeProgress | None:
        """The node being worked on (None: every node is done)."""
        return next((p for p in self.nodes if p.step != "done"), None)

    @property
    def finished(self) -> bool:
        return self.current is None

    def step_of(self, node: str) -> Step | None:
        return next((p.step for p in self.nodes if p.node == node), None)


def on_release(reported: str, to: str) -> bool:
    """Whether a node's reported release ("Debian 13.8") is the target ("Debian 13", or
    "Debian 13.8"): the target followed by the end or a finer version part."""
    return bool(reported) and re.fullmatch(re.escape(to) + r"(\.[0-9A-Za-z.~+-]*)?",
                                           reported) is not None


def progress(desired: DesiredState, index: ClusterIndex) -> UpgradeProgress | None:
    """Each declared node's step (None: the file declares no upgrade)."""
    up = desired.upgrade
    if up is None:
        return None
    out: list[NodeProgress] = []
    working = False
    for node in up.order:
        release = index.observed.hosts[node].os if node in index.observed.hosts else ""
        if working:
            out.append(NodeProgress(node=node, step="waiting", release=release,
                                    detail=f"after {out[-1].node if out else 'the others'}"))
            continue
        p = _step(node, release, up.to, desired, index)
        working = p.step != "done"
        out.append(p)
    return UpgradeProgress(to=up.to, nodes=tuple(out))


def _step(node: str, release: str, to: str, desired: DesiredState,
          index: ClusterIndex) -> NodeProgress:
    st = index.nodes.get(node)

    def at(step: Step, detail: str, reason: str = "") -> NodeProgress:
        return NodeProgress(node=node, step=step, detail=detail, release=release, reason=reason)

    if st is None:
        return at("held", f"{node} is not a node of the cluster", "UnknownNode")
    upgraded = on_release(release, to)
    if not st.online:
        return at("upgrading", f"{node} is down: waiting for it to come back on {to}"
                  + (f" (it reported {release})" if release else ""))
    if st.unclean:
        return at("held", f"{node} is unclean: waiting for fencing", "NodeUnclean")
    if not release:
        return at("held", f"no report of {node}'s release from its kvm-warden agent yet",
                  "ReleaseUnknown")
    if upgraded:
        if st.standby:
            return at("returning", f"{node} is back on {release}: taking it out of standby")
        unverified = _unverified(node, desired, index)
        if unverified:
            return at("verifying", f"{node} is back on {release}: waiting for {unverified}")
        return at("done", f"{node} runs {release}, verified")
    if desired.cluster.node_states().get(node, "online") != "online":
        return at("held", f"the file keeps {node} {desired.cluster.node_states()[node]}: "
                  "the upgrade takes a node out itself (set it online)", "FileKeepsNodeOut")
    vms = _vms_on(node, index)
    if st.standby and not vms:
        return at("ready", f"{node} is ready to upgrade: in standby and empty. Upgrade it to "
                  f"{to} and restart it; kvm-warden brings it back when it reports {to}")
    others = _others_out(node, index)
    if others:  # held where it is: neither drained further nor brought back
        return at("held", f"not draining {node}: {others} (never two nodes out)",
                  "AnotherNodeOut")
    failed = sorted({f"{f.resource} on {f.node}" for f in index.observed.status.failures})
    if failed:  # a fault anywhere stops the upgrade where it is, until it is dealt with
        return at("held", f"not draining {node}: failed actions ({', '.join(failed)}); "
                  "clean them up (or fix their cause) and the upgrade goes on", "FailedActions")
    return at("draining", f"draining {node} (standby) before its upgrade to {to}"
              + (f": {', '.join(vms)} still on it" if vms else ""))


def _vms_on(node: str, index: ClusterIndex) -> list[str]:
    return sorted(rid for rid, cfg in index.configured.items()
                  if is_vm_agent(cfg.agent) and node in index.running.get(rid, ()))


def _others_out(node: str, index: ClusterIndex) -> str:
    """The other nodes that are out, said ("kvm2 offline")."""
    out = []
    for name, st in sorted(index.nodes.items()):
        if name == node:
            continue
        why = ("unclean" if st.unclean else "offline" if not st.online else
               "in standby" if st.standby else "in maintenance" if st.maintenance else "")
        if why:
            out.append(f"{name} {why}")
    return ", ".join(out)


def _unverified(node: str, desired: DesiredState, index: ClusterIndex) -> str:
    """What is not yet right on a node back from its upgrade ('' when all is)."""
    missing = sorted({rid for st in desired.storage for rid in (*st.requires, st.resource)
                      if rid in index.exists and node not in index.running.get(rid, ())})
    failed = sorted({f.resource for f in index.observed.status.failures if f.node == node})
    parts = []
    if missing:
        parts.append(f"{', '.join(missing)} to run on it")
    if failed:
        parts.append(f"its failed actions ({', '.join(failed)}) to be cleaned up")
    return " and ".join(parts)


def effective(desired: DesiredState, up: UpgradeProgress | None) -> DesiredState:
    """The desired state the reconcilers enforce while an upgrade runs: the node being
    drained (or awaited) in standby, the node back on the target release online."""
    cur = up.current if up is not None else None
    if cur is None or cur.step not in ("draining", "ready", "upgrading", "returning"):
        return desired
    if cur.step == "upgrading":
        return desired  # down: nothing to write; its standby stays in the CIB until it is back
    state = "online" if cur.step == "returning" else "standby"
    entries = [n for n in desired.cluster.nodes or () if
               (n if isinstance(n, str) else n.name) != cur.node]
    nodes = (*entries, NodeSpec(name=cur.node, state=state))
    cluster = desired.cluster.model_copy(update={"nodes": nodes})
    return desired.model_copy(update={"cluster": cluster})
