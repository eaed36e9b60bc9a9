"""The observed cluster, as immutable typed values.

Names follow Pacemaker's own vocabulary (crm_mon's XML API and the CIB schema) so that a
field can be looked up in `/usr/share/pacemaker/api/crm_mon-*.rng` or `pacemaker-*.rng`.
Frozen structs make "did anything change?" an equality check and keep folds pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import msgspec


class Node(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    id: str | None = None
    online: bool = False
    standby: bool = False
    standby_onfail: bool = False
    maintenance: bool = False
    pending: bool = False
    unclean: bool = False
    shutdown: bool = False
    expected_up: bool = False
    is_dc: bool = False
    resources_running: int = 0
    type: str = "member"
    feature_set: str | None = None  # its Pacemaker's CRM feature set (3.16.1: 2.1, 3.20.0: 3.0)


class Resource(msgspec.Struct, frozen=True, kw_only=True):
    """One `<resource>` element of crm_mon: a primitive, or one instance of a clone/bundle.

    Anonymous clone instances repeat with the same id, as crm_mon prints them.
    """

    id: str
    parent: str | None = None
    agent: str = ""
    role: str = "Stopped"
    target_role: str | None = None
    active: bool = False
    orphaned: bool = False
    blocked: bool = False
    managed: bool = True
    failed: bool = False
    failure_ignored: bool = False
    pending: str | None = None
    nodes: tuple[str, ...] = ()

    @property
    def migrating(self) -> bool:
        """A live migration in flight, as crm_mon shows it: role "Migrating", or a pending
        migrate_to/migrate_from ("Migrating")."""
        return self.role == "Migrating" or (self.pending or "").startswith("Migrat")


class Collective(msgspec.Struct, frozen=True, kw_only=True):
    """A clone, group or bundle: the containers crm_mon nests resources in."""

    id: str
    kind: str  # "clone" | "group" | "bundle"
    parent: str | None = None
    promotable: bool = False
    unique: bool = False
    managed: bool = True
    disabled: bool = False
    failed: bool = False
    target_role: str | None = None


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    resource: str
    node: str
    task: str | None
    rc: int
    status: str
    exitreason: str = ""
    interval_ms: int | None = None
    call: int | None = None
    last_rc_change: str | None = None


class OpHistory(msgspec.Struct, frozen=True, kw_only=True):
    """A resource's history on one node (crm_mon's node_history)."""

    node: str
    resource: str
    fail_count: int = 0
    migration_threshold: int | None = None
    last_failure: str | None = None
    tasks: tuple[str, ...] = ()


class ResourceSet(msgspec.Struct, frozen=True, kw_only=True):
    id: str | None
    resources: tuple[str, ...]
    sequential: bool | None = None
    role: str | None = None


class Expression(msgspec.Struct, frozen=True, kw_only=True):
    attribute: str
    operation: str
    value: str | None = None


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """A location rule (only node-attribute expressions are kept; date rules are opaque)."""

    score: str | None = None
    boolean_op: str = "and"
    expressions: tuple[Expression, ...] = ()
    opaque: bool = False  # has date or nested rules kvm-warden does not interpret


class LocationConstraint(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    rsc: str | None = None
    rsc_pattern: str | None = None
    node: str | None = None
    score: str | None = None
    role: str | None = None
    rule: bool = False
    rules: tuple[Rule, ...] = ()
    sets: tuple[ResourceSet, ...] = ()


class OrderConstraint(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    first: str | None = None
    then: str | None = None
    first_action: str | None = None
    then_action: str | None = None
    kind: str | None = None
    symmetrical: bool | None = None
    sets: tuple[ResourceSet, ...] = ()


class ColocationConstraint(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    rsc: str | None = None
    with_rsc: str | None = None
    score: str | None = None
    rsc_role: str | None = None
    with_rsc_role: str | None = None
    sets: tuple[ResourceSet, ...] = ()


class Constraints(msgspec.Struct, frozen=True, kw_only=True):
    location: tuple[LocationConstraint, ...] = ()
    order: tuple[OrderConstraint, ...] = ()
    colocation: tuple[ColocationConstraint, ...] = ()


class ResourceConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A resource as configured in the CIB (what crm_mon does not print)."""

    id: str
    kind: str  # primitive | clone | master | group | bundle
    parent: str | None = None
    agent: str | None = None  # class:provider:type for primitives
    params: Mapping[str, str] = msgspec.field(default_factory=dict)
    meta: Mapping[str, str] = msgspec.field(default_factory=dict)
    utilization: Mapping[str, str] = msgspec.field(default_factory=dict)


# A CIB's configuration version, (admin_epoch, epoch): what a configuration change moves.
# num_updates moves with every status update and is not part of it.
ConfigVersion = tuple[int, int]


class CibConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The configuration section of a CIB, with its version counters."""

    epoch: int = 0
    admin_epoch: int = 0
    num_updates: int = 0
    properties: Mapping[str, str] = msgspec.field(default_factory=dict)
    nodes: tuple[str, ...] = ()
    # node -> its <utilization> (capacity: cpu, memory in MiB, as kvm-warden writes them)
    node_utilization: Mapping[str, Mapping[str, str]] = msgspec.field(default_factory=dict)
    resources: Mapping[str, ResourceConfig] = msgspec.field(default_factory=dict)
    constraints: Constraints = msgspec.field(default_factory=Constraints)
    # From the status section: each live migration a node's history still holds, as
    # (resource, source, target) of its migrate_to record. Cleaning the target's history
    # alone would leave this half and make Pacemaker restart the VM (health.py).
    migrations: tuple[tuple[str, str, str], ...] = ()
    # From the status section, for the resources kvm-warden holds unmanaged (enrollment):
    # (resource, node, rc) of each finished probe -- 0 running there, 7 not running.
    probes: tuple[tuple[str, str, int], ...] = ()
    held_orphans: bool = False  # kvm-warden's stop-orphan-resources=false set is in place
    # From the status section: resources with a history there but no configuration (deleted,
    # not forgotten yet). A resource created again under such an id would have its probes
    # answered from that old history.
    histories: tuple[str, ...] = ()

    @property
    def version(self) -> ConfigVersion:
        return self.admin_epoch, self.epoch


class FenceEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of crm_mon's fencing history (fence-event rng): who fenced whom, how it went.
    `completed` is crm_mon's own text ("2026-12-05 04:31:02 +00:00"), shown as it is."""

    target: str
    action: str
    status: str  # success | failed | pending
    origin: str = ""
    delegate: str | None = None
    completed: str | None = None
    exit_reason: str | None = None


class ClusterStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What one run of `crm_mon --output-as=xml` says."""

    dc: str | None = None
    dc_version: str | None = None  # the DC's Pacemaker version (current_dc version=)
    mixed_version: bool = False  # nodes run different Pacemaker versions (a rolling upgrade)
    with_quorum: bool = False
    properties: Mapping[str, str] = msgspec.field(default_factory=dict)
    nodes: Mapping[str, Node] = msgspec.field(default_factory=dict)
    resources: tuple[Resource, ...] = ()
    collectives: Mapping[str, Collective] = msgspec.field(default_factory=dict)
    failures: tuple[Failure, ...] = ()
    history: tuple[OpHistory, ...] = ()
    fencing: tuple[FenceEvent, ...] = ()  # crm_mon's fence history, newest first

    def instances(self, resource_id: str) -> tuple[Resource, ...]:
        """Every crm_mon entry for a resource id (clone instances repeat)."""
        return tuple(r for r in self.resources if r.id == resource_id)


class OpRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One `lrm_rsc_op` of the CIB's status: an operation Pacemaker ran (or runs: op_status -1,
    recorded when it starts, record-pending) on one node. Times: `last_rc_change` is epoch
    seconds, `exec_ms` the run time."""

    resource: str
    node: str
    task: str
    call_id: int = 0
    op_status: int = 0  # PCMK_EXEC_*: -1 pending, 0 done, ...
    rc: int = 0
    interval_ms: int = 0
    last_rc_change: int = 0
    exec_ms: int = 0
    migrate_source: str | None = None
    migrate_target: str | None = None


class Domain(msgspec.Struct, frozen=True, kw_only=True):
    """A libvirt domain as one node's libvirtd reports it."""

    name: str
    uuid: str = ""
    state: str = "unknown"
    # why it is in that state, as libvirt's virDomain*Reason (for paused: user, ioerror,
    # watchdog, migration, ...); "" when libvirt gave none
    reason: str = ""
    since: float | None = None  # when this state was first observed (set by the store)
    disks: tuple[str, ...] = ()
    vnc_port: int | None = None
    vnc_listen: str | None = None
    persistent: bool | None = None  # defined in libvirt (not only running); None: not known
    autostart: bool | None = None  # libvirt starts it at boot, outside the cluster
    vcpus: int | None = None  # <vcpu>: what the guest takes of its host (the node cards)
    memory_kib: int | None = None  # <currentMemory>, else <memory>
    # <os><type machine=...>: the running guest's QEMU machine type (pc-i440fx-10.0...); a
    # host whose QEMU lacks it cannot take the guest by live migration
    machine: str | None = None
    # load: libvirt's cumulative CPU time (virDomainGetInfo) and when it was read (the agent's
    # clock: a sample carries its own time, whatever delays or replays its envelope), and the
    # CPU cores the guest used between this sample and the one before on the same node (set
    # by the store; None until two samples agree: a migration starts the count again)
    cpu_time_ns: int | None = None
    cpu_at: float | None = None
    cpu_cores: float | None = None


# libvirt's states of a domain whose QEMU process exists (virDomainIsActive; "crashed" is a
# crash kept with on_crash=preserve): it holds its disks there, whatever Pacemaker says.
ACTIVE_STATES = frozenset({"running", "paused", "blocked", "pmsuspended", "crashed"})


def domain_active(dom: Domain) -> bool:
    """The one answer to "is this domain active": the split-brain check, enrollment, the
    storage's users, the node cards and the candidates outside the cluster all ask it."""
    return dom.state in ACTIVE_STATES


class HostInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What one node's libvirtd says the host has (virNodeGetInfo): the cards' capacity."""

    cpus: int
    memory_kib: int
    # every QEMU machine type the host's emulators offer (libvirt capabilities: names and
    # their canonical forms); () when not known
    machines: tuple[str, ...] = ()
    libvirt_version: str = ""  # e.g. 11.3.0 (virConnectGetLibVersion)
    qemu_version: str = ""  # the hypervisor's (virConnectGetVersion)
    os: str = ""  # the node's operating system release, e.g. "Debian 13.8"


class ConfigFile(msgspec.Struct, frozen=True, kw_only=True):
    """A domain XML file in a node's shared configuration directory, as that node reads it:
    what enrollment checks before VirtualDomain may use it (reconcilers/enroll.py)."""

    path: str
    sha256: str = ""
    domain: str = ""  # its <name>
    # VirtualDomain finds the name with a line match: `<name>` alone on its line
    name_on_own_line: bool = False
    disks: tuple[str, ...] = ()
    error: str = ""  # unreadable or not a domain XML: why


class Quorum(msgspec.Struct, frozen=True, kw_only=True):
    """Quorum as one node's corosync reports it; state "unknown" when corosync is away."""

    state: str = "unknown"
    quorate: bool | None = None
    members: tuple[str, ...] = ()
    expected_votes: int | None = None
    total_votes: int | None = None


Probe = Literal["libvirt", "corosync", "storage", "config", "agent", "pacemaker"]


class SourceKey(msgspec.Struct, frozen=True, order=True):
    """Whose reading a freshness time is: a probe on a node, or a cluster-wide one (node None:
    Pacemaker, read where the controller runs). Declared per kind in model/events.py (OBSERVATIONS)."""

    probe: Probe
    node: str | None = None

    def __str__(self) -> str:  # display only; never split again
        return self.probe if self.node is None else f"{self.probe}:{self.node}"


class ObservedState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the controller knows, folded from its sources."""

    status: ClusterStatus = msgspec.field(default_factory=ClusterStatus)
    cib: CibConfig | None = None
    domains: Mapping[str, Mapping[str, Domain]] = msgspec.field(default_factory=dict)
    quorum: Mapping[str, Quorum] = msgspec.field(default_factory=dict)
    mounts: Mapping[str, tuple[str, ...]] = msgspec.field(default_factory=dict)  # node -> GFS2 mountpoints
    # node -> path -> the domain XML files its agent reads in its shared config directories
    config_files: Mapping[str, Mapping[str, ConfigFile]] = msgspec.field(default_factory=dict)
    # node -> the directories its agent reads (`--config-dir`): a path under none is unknown there
    config_dirs: Mapping[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    hosts: Mapping[str, HostInfo] = msgspec.field(default_factory=dict)  # node -> its capacity
    stale: frozenset[str] = frozenset()  # publishers whose heartbeats are missing
    observed_at: Mapping[SourceKey, float] = msgspec.field(default_factory=dict)
