"""Every Prometheus metric kvm-warden exports, defined in one place.

Metrics are served from the state the controller already holds: a scrape never runs crm_mon
(at 32 nodes x 5,000 VMs one crm_mon costs 2.2 s and 420 MB here).
"""

from __future__ import annotations

import platform
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from controller.model.actions import SPLIT_BRAIN_FINDINGS, Finding
from controller.model.names import conventional_name
from controller.model.observed import ObservedState
from controller.model.overview import HEALTH_WORDS, VmRow
from controller.model.upgrade import UpgradeProgress
from controller.version import debian_release, version

# `_created` gauges double the series count and no dashboard or rule reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry()
# Per-VM series (4 x 5,000 at the stress size) change only when a pass sees a change; they
# live in their own registry whose text is rendered once per change and cached, so a scrape
# does not format 20,000 series again (88 ms -> a few ms at 5,000 VMs, bench/scrape.py).
VM_REGISTRY = CollectorRegistry()
_vm_text = b""
_vm_dirty = True
_vm_lock = threading.Lock()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_HOST = socket.gethostname()


BUILD = Info("kvm_warden_build", "The running kvm-warden: its version, Python's and the Debian "
             "release it runs on", registry=REGISTRY)
BUILD.info({"version": version(), "python": platform.python_version(),
            "debian": debian_release()})

QUORATE = Gauge("kvm_warden_cluster_quorate", "1 when the observed partition has quorum",
                registry=REGISTRY)
NODES = Gauge("kvm_warden_nodes", "Nodes by state", ["state"], registry=REGISTRY)
NODE_ONLINE = Gauge("kvm_warden_node_online", "1 when the node is online", ["node"],
                    registry=REGISTRY)
NODE_UNCLEAN = Gauge("kvm_warden_node_unclean", "1 when the node is unclean (fencing pending)",
                     ["node"], registry=REGISTRY)
DC = Gauge("kvm_warden_cluster_dc", "1 for the node that is the designated controller", ["node"],
           registry=REGISTRY)
NODE_STANDBY = Gauge("kvm_warden_node_standby", "1 when the node is in standby", ["node"],
                     registry=REGISTRY)
NODE_MAINTENANCE = Gauge("kvm_warden_node_maintenance", "1 when the node is in maintenance",
                         ["node"], registry=REGISTRY)
NODE_DOMAINS = Gauge("kvm_warden_node_domains_running", "Domains libvirt reports running",
                     ["node"], registry=REGISTRY)
# Per-VM series keep their labels for the VM's life: what changes (where it runs, its health)
# is a value, one series per VM and node or per VM and word, so a migration makes no new series.
VM_INFO = Gauge("kvm_warden_vm_info", "One series per VM, naming its resource (value always 1)",
                ["vm", "resource"], registry=VM_REGISTRY)
VM_NODE = Gauge("kvm_warden_vm_node",
                "1 on the node where the VM's resource is active, 0 on the cluster's other nodes",
                ["vm", "node"], registry=VM_REGISTRY)
VM_DESIRED_NODE = Gauge("kvm_warden_vm_desired_node",
                        "1 on the node the desired file prefers for the VM, 0 on the others "
                        "(no series when it names none)", ["vm", "node"], registry=VM_REGISTRY)
VM_VNC_PORT = Gauge("kvm_warden_vm_vnc_port", "The VM's VNC port on its node (when it has one)",
                    ["vm"], registry=VM_REGISTRY)
VM_UP = Gauge("kvm_warden_vm_up", "1 when the VM's resource is active", ["vm"], registry=VM_REGISTRY)
VM_HEALTH = Gauge("kvm_warden_vm_health",
                  "The VM's truth in one word: 1 for its word, 0 for every other (failed, blocked, "
                  "outside, unmanaged, orphaned, paused, migrating, pending, stopped, absent, ok)",
                  ["vm", "health"], registry=VM_REGISTRY)
VM_DESIRED_MATCH = Gauge("kvm_warden_vm_desired_match",
                         "1 when the VM runs as and where the desired state asks", ["vm"],
                         registry=VM_REGISTRY)
VM_FAILCOUNT = Gauge("kvm_warden_vm_failcount", "Pacemaker fail-count of the VM's resource",
                     ["vm", "node"], registry=VM_REGISTRY)
STORAGE_MOUNTED = Gauge("kvm_warden_storage_mounted", "1 per shared filesystem mounted on a node",
                        ["node", "mountpoint"], registry=REGISTRY)
STORAGE_DEPS_MISSING = Gauge("kvm_warden_storage_dependencies_missing",
                             "Order/colocation constraints to shared storage still missing",
                             registry=REGISTRY)
GUARD_REFUSALS = Counter("kvm_warden_guard_refusals_total", "Actions the guard refused, by reason",
                         ["reason"], registry=REGISTRY)
PROBE_LAST_SUCCESS = Gauge("kvm_warden_probe_last_success_timestamp_seconds",
                           "When each source last delivered a good observation, per node",
                           ["probe", "node"], registry=REGISTRY)
SUBPROCESS_DURATION = Histogram("kvm_warden_subprocess_duration_seconds",
                                "Duration of calls to cluster tools", ["tool"],
                                buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                                registry=REGISTRY)
ACTIONS = Counter("kvm_warden_actions_total", "Actions planned, by kind and guard verdict",
                  ["kind", "verdict"], registry=REGISTRY)
APPLIED = Counter("kvm_warden_actions_applied_total", "Actions sent to the cluster, by outcome",
                  ["kind", "outcome"], registry=REGISTRY)
PASSES = Counter("kvm_warden_reconcile_passes_total",
                 "Reconcile passes: full (crm_mon) or incremental (bus events only)",
                 ["result", "scope"], registry=REGISTRY)
PASS_DURATION = Histogram("kvm_warden_reconcile_pass_duration_seconds",
                          "Duration of one reconcile pass (observe, plan, guard, apply)",
                          buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                          registry=REGISTRY)
PREVIEW_DURATION = Histogram("kvm_warden_preview_duration_seconds",
                             "Duration of the scheduler's preview of a patch (crm_simulate)",
                             buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                             registry=REGISTRY)
LAST_PASS = Gauge("kvm_warden_last_pass_timestamp_seconds",
                  "When the last successful pass ended (a failed pass does not move it)",
                  registry=REGISTRY)
DRIFT = Gauge("kvm_warden_drift_objects", "Objects differing from the desired state",
              ["reconciler"], registry=REGISTRY)
FINDINGS = Gauge("kvm_warden_findings", "Open findings (not fixed automatically)",
                 ["reconciler", "kind", "severity"], registry=REGISTRY)
HELD = Gauge("kvm_warden_actions_held",
             "Actions the last full pass wanted and did not make, by the guard's reason",
             ["reason"], registry=REGISTRY)
CIRCUIT_OPEN = Gauge("kvm_warden_circuit_open", "1 when cleanups of a resource are suspended",
                     ["resource"], registry=REGISTRY)
OPERATOR_BAN = Gauge("kvm_warden_operator_ban",
                     "1 per operator ban (cli-ban) that contradicts the desired state (kept)",
                     ["vm", "node"], registry=REGISTRY)
VM_PAUSED = Gauge("kvm_warden_vm_paused",
                  "1 for a domain libvirt reports paused, with libvirt's reason (ioerror, "
                  "watchdog, user, migration...); Pacemaker's monitor counts it as running",
                  ["vm", "node", "reason"], registry=REGISTRY)
OUT_OF_BAND = Counter("kvm_warden_out_of_band_total",
                      "Lifecycle changes of cluster VMs that Pacemaker did not make (virsh "
                      "destroy/suspend/migrate... behind the cluster's back)",
                      ["vm", "node"], registry=REGISTRY)
SPLIT_BRAIN = Gauge("kvm_warden_split_brain_findings",
                    "Domains running where Pacemaker does not place them", registry=REGISTRY)
CIB_CONFLICTS = Counter("kvm_warden_cib_conflicts_total",
                        "CIB patches refused because the CIB changed since it was read",
                        registry=REGISTRY)
ACTUATOR_ERRORS = Counter("kvm_warden_actuator_errors_total", "Failed cluster changes",
                          registry=REGISTRY)
PROBE_ERRORS = Counter("kvm_warden_probe_errors_total", "Failed observations", ["probe"],
                       registry=REGISTRY)
DESIRED_VALID = Gauge("kvm_warden_desired_state_valid", "1 when the desired-state file on disk is valid",
                      registry=REGISTRY)
DESIRED_GENERATION = Gauge("kvm_warden_desired_state_generation",
                           "Number of valid desired states loaded", registry=REGISTRY)
DESIRED_RELOAD_TIME = Gauge("kvm_warden_desired_state_last_reload_timestamp_seconds",
                            "When a valid desired state last took effect", registry=REGISTRY)

LEDGER_ERRORS = Counter("kvm_warden_ledger_errors_total",
                        "Ledger files that could not be read (set aside) or written",
                        registry=REGISTRY)

BUS_EVENTS = Counter("kvm_warden_bus_events_total", "Events received on the bus, by kind", ["kind"],
                     registry=REGISTRY)
BUS_REJECTED = Counter("kvm_warden_bus_rejected_total", "Bus messages dropped as malformed",
                       ["reason"], registry=REGISTRY)
HTTP_REFUSED = Counter("kvm_warden_http_refused_total",
                       "HTTP requests the policy step refused, by reason (host, origin, login, "
                       "role, csrf, budget)", ["reason"], registry=REGISTRY)
BUS_RESYNCS = Counter("kvm_warden_bus_resyncs_total", "Snapshot requests to a publisher, by cause",
                      ["reason"], registry=REGISTRY)
BUS_STALE = Gauge("kvm_warden_bus_publisher_stale", "1 while a publisher's heartbeats are missing",
                  ["source"], registry=REGISTRY)
BUS_AUTH_REFUSED = Counter("kvm_warden_bus_auth_refused_total",
                           "Connections refused because their CURVE key is not allowed",
                           registry=REGISTRY)
BUS_PUBLISHED = Counter("kvm_warden_bus_published_total", "Events published, by kind", ["kind"],
                        registry=REGISTRY)
ALERTS_DROPPED = Counter("kvm_warden_alerts_dropped_total",
                         "Pacemaker alerts the alert agent could not deliver", registry=REGISTRY)


THREAD_ALIVE = Gauge("kvm_warden_thread_alive",
                     "1 while a long-lived thread (bus subscriber, alert receiver, ...) runs "
                     "and, where it reports progress, has not stalled", ["thread"],
                     registry=REGISTRY)
_threads: dict[str, threading.Thread] = {}
_stall_after: dict[str, float] = {}  # thread name -> seconds without a beat that mean "stalled"
_beats: dict[str, float] = {}
_threads_lock = threading.Lock()


def watch_thread(thread: threading.Thread, stall_after: float | None = None) -> None:
    """A long-lived thread /healthz answers for: if it dies -- or, with `stall_after`, stops
    calling beat() for that long -- the process is not healthy."""
    with _threads_lock:
        if _threads.get(thread.name, thread) is not thread:
            # Two components' threads of one name (an agent's and a controller's alert
            # receiver in one process): each answered for under a name of its own.
            base, n = thread.name, 2
            while f"{base}-{n}" in _threads:
                n += 1
            thread.name = f"{base}-{n}"
        _threads[thread.name] = thread
        _beats[thread.name] = time.monotonic()
        if stall_after is not None:
            _stall_after[thread.name] = stall_after
        else:
            _stall_after.pop(thread.name, None)
    THREAD_ALIVE.labels(thread=thread.name).set(1)


def beat(name: str) -> None:
    """A watched thread's loop came round: it is not stuck."""
    _beats[name] = time.monotonic()


def forget_thread(thread: threading.Thread) -> None:
    """A thread stopped on purpose (its component was closed)."""
    with _threads_lock:
        if _threads.get(thread.name) is not thread:
            return
        del _threads[thread.name]
        _stall_after.pop(thread.name, None)
    try:
        THREAD_ALIVE.remove(thread.name)
    except KeyError:
        pass  # never exported


def dead_threads() -> list[str]:
    """Watched threads that died ("name") or stalled ("name (stalled N s)")."""
    now = time.monotonic()
    out = []
    with _threads_lock:
        for name, t in sorted(_threads.items()):
            silent = now - _beats.get(name, now)
            if not t.is_alive():
                out.append(name)
            elif name in _stall_after and silent > _stall_after[name]:
                out.append(f"{name} (stalled {silent:.0f} s)")
            else:
                THREAD_ALIVE.labels(thread=name).set(1)
                continue
            THREAD_ALIVE.labels(thread=name).set(0)
    return out


def update_cluster(observed: ObservedState) -> None:
    status = observed.status
    QUORATE.set(1 if status.with_quorum else 0)
    counts = {"online": 0, "offline": 0, "standby": 0, "maintenance": 0, "unclean": 0}
    NODE_ONLINE.clear()
    NODE_UNCLEAN.clear()
    DC.clear()
    for n in status.nodes.values():
        counts["online" if n.online else "offline"] += 1
        counts["standby"] += n.standby
        counts["maintenance"] += n.maintenance
        counts["unclean"] += n.unclean
        NODE_ONLINE.labels(node=n.name).set(1 if n.online else 0)
        NODE_UNCLEAN.labels(node=n.name).set(1 if n.unclean else 0)
        DC.labels(node=n.name).set(1 if n.is_dc else 0)
    for state, value in counts.items():
        NODES.labels(state=state).set(value)
    NODE_STANDBY.clear()
    NODE_MAINTENANCE.clear()
    for n in status.nodes.values():
        NODE_STANDBY.labels(node=n.name).set(1 if n.standby else 0)
        NODE_MAINTENANCE.labels(node=n.name).set(1 if n.maintenance else 0)
    NODE_DOMAINS.clear()
    for node, doms in observed.domains.items():
        NODE_DOMAINS.labels(node=node).set(sum(d.state == "running" for d in doms.values()))
    VM_PAUSED.clear()
    for node, doms in observed.domains.items():
        if node in observed.stale:
            continue
        for d in doms.values():
            if d.state == "paused":
                VM_PAUSED.labels(vm=d.name, node=node, reason=d.reason or "unknown").set(1)
    NODE_INFO.clear()
    for n in status.nodes.values():
        host = observed.hosts.get(n.name)
        NODE_INFO.labels(node=n.name, feature_set=n.feature_set or "",
                         libvirt=host.libvirt_version if host else "",
                         qemu=host.qemu_version if host else "",
                         os=host.os if host else "").set(1)
    STORAGE_MOUNTED.clear()
    for node, mps in observed.mounts.items():
        for mp in mps:
            STORAGE_MOUNTED.labels(node=node, mountpoint=mp).set(1)
    for source, at in observed.observed_at.items():
        # One series per probe and node: one node's dead libvirtd must show. A cluster-wide
        # source (Pacemaker) is read where the controller runs: that node.
        PROBE_LAST_SUCCESS.labels(probe=source.probe, node=source.node or _HOST).set(at)


def update_vms(rows: Iterable[VmRow], fail_counts: Mapping[tuple[str, str], int],
               nodes: Sequence[str] = ()) -> None:
    """Per-VM series from the overview rows (controller.model.overview.vm_rows); `nodes`: the
    cluster's nodes, each VM's per-node series are made for every one of them."""
    global _vm_dirty
    with _vm_lock:
        _update_vms(rows, fail_counts, nodes)
        _vm_dirty = True


def _update_vms(rows: Iterable[VmRow], fail_counts: Mapping[tuple[str, str], int],
                nodes: Sequence[str]) -> None:
    for g in (VM_INFO, VM_NODE, VM_DESIRED_NODE, VM_VNC_PORT, VM_UP, VM_HEALTH, VM_DESIRED_MATCH,
              VM_FAILCOUNT):
        g.clear()
    for r in rows:
        VM_INFO.labels(vm=r.vm, resource=r.resource).set(1)
        for node in sorted({*nodes, *r.nodes}):
            VM_NODE.labels(vm=r.vm, node=node).set(1 if node in r.nodes else 0)
            # Created at 0: `increase()` sees a VM's first out-of-band change.
            OUT_OF_BAND.labels(vm=r.vm, node=node)
            if r.desired_node:
                VM_DESIRED_NODE.labels(vm=r.vm, node=node).set(node == r.desired_node)
        if r.vnc_port:
            VM_VNC_PORT.labels(vm=r.vm).set(r.vnc_port)
        VM_UP.labels(vm=r.vm).set(1 if r.nodes else 0)
        for word in HEALTH_WORDS:
            VM_HEALTH.labels(vm=r.vm, health=word).set(word == r.health)
        VM_DESIRED_MATCH.labels(vm=r.vm).set(0 if r.drift else 1)
    vms = {r.resource: r.vm for r in rows}
    for (rid, node), count in fail_counts.items():
        if rid in vms:  # the storage clones' fail-counts are not a VM's
            VM_FAILCOUNT.labels(vm=vms[rid], node=node).set(count)


UPGRADE_STEP = Gauge("kvm_warden_upgrade_step",
                     "The declared rolling upgrade: each node's step (value 1): waiting, "
                     "draining, ready, upgrading, returning, verifying, done or held",
                     ["node", "step"], registry=REGISTRY)
NODE_INFO = Gauge("kvm_warden_node_info",
                  "What runs on each node (value 1): Pacemaker's feature set, libvirt, QEMU "
                  "and the OS release", ["node", "feature_set", "libvirt", "qemu", "os"],
                  registry=REGISTRY)
FAILOVER_STOPPED = Gauge("kvm_warden_failover_vms_stopped",
                         "VMs Pacemaker's scheduler would leave stopped if this node failed "
                         "(crm_simulate --node-fail; 0: every VM has room)", ["node"],
                         registry=REGISTRY)


NODE_CPU_LOAD = Gauge("kvm_warden_node_cpu_load",
                      "The CPU cores a node's cluster VMs used over the last listing span, "
                      "over the node's own (libvirt's CPU time; what rebalancing evens out)",
                      ["node"], registry=REGISTRY)


def update_cpu_load(load: Mapping[str, float] | None) -> None:
    """Each usable node's load (model/balance.py), or nothing while a VM's load is unknown."""
    if load is None:
        return  # the last known loads stand until every VM's is known again
    NODE_CPU_LOAD.clear()
    for node, value in load.items():
        NODE_CPU_LOAD.labels(node=node).set(round(value, 4))


def update_failover(report: Iterable[Any]) -> None:
    """The latest N+1 verdict (engine/capacity.py): one series per node."""
    FAILOVER_STOPPED.clear()
    for r in report:
        if r.error is None:
            FAILOVER_STOPPED.labels(node=r.node).set(len(r.stopped))


def update_upgrade(up: UpgradeProgress | None) -> None:
    """Where the declared rolling upgrade stands (model/upgrade.py); no series without one."""
    UPGRADE_STEP.clear()
    for p in up.nodes if up is not None else ():
        UPGRADE_STEP.labels(node=p.node, step=p.step).set(1)


def update_findings(findings: Iterable[Finding], vm_names: Mapping[str, str]) -> None:
    """`vm_names`: resource id -> VM name of every cluster VM (model/vms.py)."""
    FINDINGS.clear()
    CIRCUIT_OPEN.clear()
    OPERATOR_BAN.clear()
    split = 0
    counts: dict[tuple[str, str, str], int] = {}
    for f in findings:
        key = (f.reconciler, f.kind, f.severity)
        counts[key] = counts.get(key, 0) + 1
        if f.kind == "circuit-open" and f.rsc is not None:
            CIRCUIT_OPEN.labels(resource=f.rsc).set(1)
        if f.kind == "operator-ban" and f.rsc is not None and f.node:
            # The file's VM name when it lists the resource (its entry may name any `resource:`)
            vm = vm_names.get(f.rsc) or conventional_name(f.rsc)
            OPERATOR_BAN.labels(vm=vm, node=f.node).set(1)
        if f.kind in SPLIT_BRAIN_FINDINGS:
            split += 1
    for (rec, kind, sev), n in counts.items():
        FINDINGS.labels(reconciler=rec, kind=kind, severity=sev).set(n)
    SPLIT_BRAIN.set(split)


def _count_into(gauge: Gauge, label: str, values: Iterable[str]) -> None:
    """`gauge` cleared, then one series per distinct value: how many times it occurs."""
    gauge.clear()
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    for v, n in counts.items():
        gauge.labels(**{label: v}).set(n)


def update_drift(reconcilers: Iterable[str]) -> None:
    """`reconcilers`: whose object each drifting one is (engine/pipeline.drift, held across
    incremental passes: the gauge counts what the rows and `plan` show)."""
    _count_into(DRIFT, "reconciler", reconcilers)


def update_held(reasons: Iterable[str]) -> None:
    """`reasons`: the guard's reason of each action the last full pass did not make."""
    _count_into(HELD, "reason", reasons)


# Scrapers that arrive together (several Prometheus replicas, a dashboard refresh) share one
# rendering: the cluster-wide text is at most this old. The state behind it changes once per
# pass, seconds apart; the process collector's figures can stand a second's staleness.
RENDER_TTL_SECONDS = 0.5
_body = b""
_body_at = float("-inf")
_body_lock = threading.Lock()


def render() -> bytes:
    global _vm_text, _vm_dirty, _body, _body_at
    with _body_lock:
        now = time.monotonic()
        with _vm_lock:
            fresh = not _vm_dirty and now - _body_at < RENDER_TTL_SECONDS
            if _vm_dirty:
                _vm_text = generate_latest(VM_REGISTRY)
                _vm_dirty = False
            vm_text = _vm_text
        if not fresh:
            _body, _body_at = generate_latest(REGISTRY) + vm_text, now
        return _body
