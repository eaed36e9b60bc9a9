"""Actions: one idempotent change to the cluster, with the reconciler that wants it and why.

A tagged union of small frozen structs, so that a plan serializes straight to JSON (`plan
--json`, audit records) and "the same action" is an equality check. Only constraints with ids
that kvm-warden owns (prefix `warden-`) are ever created or updated by placement/storage;
RemoveConstraint of a foreign id is only ever planned for `cli-prefer-*`/`cli-ban-*` leftovers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import msgspec

OWNED_PREFIX = "warden-"  # every id kvm-warden creates, and only those, starts so
PREFER_PREFIX = f"{OWNED_PREFIX}prefer-"  # placement's preference: removing it can move a VM
# rebalance's move in progress: INFINITY on the target until the VM runs there, then removed
# (its stickiness keeps it)
BALANCE_PREFIX = f"{OWNED_PREFIX}balance-"


def owned(cid: str) -> bool:
    """Whether kvm-warden made this constraint (DESIGN: it owns exactly the ids it creates)."""
    return cid.startswith(OWNED_PREFIX)


FAIL_MARK = "fail:"


def fail_mark(rsc: str, node: str) -> str:
    """FailResource's key (its cooldown); the once-per-pause memory is the ledger's `failed`."""
    return f"{FAIL_MARK}{rsc}:{node}"


class Action(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    reconciler: str
    why: str
    # Actions that only make sense together (an enrollment's primitive and its constraints)
    # share a unit: the guard and the preview admit all of them or none (engine/decide.py).
    unit: str = ""

    @property
    def key(self) -> str:
        """The object this action changes (for cooldowns, de-duplication and conflicts)."""
        raise NotImplementedError

    @property
    def resource(self) -> str | None:
        """The resource this action is about, if any (for the guard's per-resource checks)."""
        return None


class ConstraintAction(Action, frozen=True, kw_only=True):
    """An action on one constraint, named by its id (the object cooldowns are kept for)."""

    id: str

    @property
    def key(self) -> str:
        return f"constraint:{self.id}"


class SetLocation(ConstraintAction, frozen=True, kw_only=True, tag="SetLocation"):
    """`rsc_location` with a node and a score (prefer: positive score)."""

    rsc: str
    node: str
    score: str

    @property
    def resource(self) -> str | None:
        return self.rsc


class SetAllowedNodes(ConstraintAction, frozen=True, kw_only=True, tag="SetAllowedNodes"):
    """A rule-based `rsc_location`: -INFINITY on every node whose name is not in `nodes`.

    One rule instead of one ban per node, so that a node that joins later is excluded too.
    """

    rsc: str
    nodes: tuple[str, ...]

    @property
    def resource(self) -> str | None:
        return self.rsc


class AddOrder(ConstraintAction, frozen=True, kw_only=True, tag="AddOrder"):
    first: str
    then: str
    order_kind: str = "Mandatory"

    @property
    def resource(self) -> str | None:
        return self.then


class AddColocation(ConstraintAction, frozen=True, kw_only=True, tag="AddColocation"):
    rsc: str
    with_rsc: str
    score: str

    @property
    def resource(self) -> str | None:
        return self.rsc


class RemoveConstraint(ConstraintAction, frozen=True, kw_only=True, tag="RemoveConstraint"):
    rsc: str | None = None

    @property
    def resource(self) -> str | None:
        return self.rsc


class SetMeta(Action, frozen=True, kw_only=True, tag="SetMeta"):
    rsc: str
    name: str
    value: str

    @property
    def key(self) -> str:
        return f"meta:{self.rsc}:{self.name}"

    @property
    def resource(self) -> str | None:
        return self.rsc


class SetProperty(Action, frozen=True, kw_only=True, tag="SetProperty"):
    """A cluster property (crm_config's cib-bootstrap-options); value None removes it
    (Pacemaker's default applies). A drain's setting is undone when the drain ends: `saves`
    keeps the value it replaces (`previous`, None: unset) in the ledger, `restores` puts it
    back and forgets it."""

    name: str
    value: str | None
    previous: str | None = None
    saves: bool = False
    restores: bool = False

    @property
    def key(self) -> str:
        return f"property:{self.name}"


class SetUtilization(Action, frozen=True, kw_only=True, tag="SetUtilization"):
    """A resource's or a node's `<utilization>` (Pacemaker Explained, "Utilization"): what a
    VM takes, what a node offers; the scheduler places by them under placement-strategy."""

    target: Literal["resource", "node"]
    name: str
    values: tuple[tuple[str, str], ...]

    @property
    def key(self) -> str:
        return f"utilization:{self.target}:{self.name}"

    @property
    def resource(self) -> str | None:
        return self.name if self.target == "resource" else None


class SetNodeAttribute(Action, frozen=True, kw_only=True, tag="SetNodeAttribute"):
    """A permanent node attribute (`pcs node standby`/`maintenance`): `standby=on` drains the
    node through Pacemaker, which live-migrates its VMs."""

    node: str
    name: str
    value: str

    @property
    def key(self) -> str:
        return f"node:{self.node}:{self.name}"


class Cleanup(Action, frozen=True, kw_only=True, tag="Cleanup"):
    """`crm_resource --cleanup --resource R --node N`: forget a failure whose cause cleared.

    `sources`: nodes whose history holds a live migration of R *to* N; their history of R is
    refreshed first (`crm_resource --refresh`: they have no failure for --cleanup to act on).
    Erasing N's migrate_from while a source keeps its migrate_to makes Pacemaker's scheduler
    see a half-done migration and restart the running VM ("Forcing recovery ... because it can
    no longer migrate"), as the lab showed."""

    rsc: str
    node: str
    sources: tuple[str, ...] = ()
    # Only reset the fail-count (`attrd_updater --delete` of its fail-count/last-failure
    # attributes; `crm_failcount --delete` would be a --cleanup), keeping the operation history:
    # when no order of erasing it is safe (migrations both ways), the failed action stays visible.
    reset_only: bool = False

    @property
    def key(self) -> str:
        return f"cleanup:{self.rsc}:{self.node}"

    @property
    def resource(self) -> str | None:
        return self.rsc


class FailResource(Action, frozen=True, kw_only=True, tag="FailResource"):
    """`crm_resource --fail --resource R --node N`: tell Pacemaker the resource failed there, so
    that Pacemaker's own recovery (stop, start, its fail-count and migration-threshold) restarts
    it -- the one way kvm-warden restarts a VM (never virsh)."""

    rsc: str
    node: str

    @property
    def key(self) -> str:
        return fail_mark(self.rsc, self.node)

    @property
    def resource(self) -> str | None:
        return self.rsc


class ResourceAction(Action, frozen=True, kw_only=True):
    """An action on a VM resource as a whole (enrollment and retirement, reconcilers/enroll.py)."""

    rsc: str
    # Allowed on a resource kvm-warden itself holds unmanaged (HOLD_MARK) or an orphan: the
    # guard's "resource-unmanaged" refusal is for resources an operator took out of its hands.
    on_held: ClassVar[bool] = True

    @property
    def key(self) -> str:
        return f"resource:{self.rsc}"

    @property
    def resource(self) -> str | None:
        return self.rsc


class CreateVm(ResourceAction, frozen=True, kw_only=True, tag="CreateVm"):
    """A new `ocf:heartbeat:VirtualDomain` primitive. With `node` (where the domain already
    runs) it is created unmanaged and marked HOLD_MARK=enroll, so that Pacemaker's probes find
    it running there and nothing is started, stopped or restarted; ManageVm then hands it over."""

    domain: str
    config: str
    hypervisor: str
    migration_transport: str
    params: tuple[tuple[str, str], ...] = ()
    meta: tuple[tuple[str, str], ...] = ()
    node: str | None = None
    on_held: ClassVar[bool] = False


class ManageVm(ResourceAction, frozen=True, kw_only=True, tag="ManageVm"):
    """Enrollment's last step: drop is-managed=false and the hold mark."""


class HoldVm(ResourceAction, frozen=True, kw_only=True, tag="HoldVm"):
    """Retirement's first step (keep_running): is-managed=false and HOLD_MARK=retire."""

    on_held: ClassVar[bool] = False


ROLLBACK_MARK = "rollback:"


class RemoveVm(ResourceAction, frozen=True, kw_only=True, tag="RemoveVm"):
    """Delete the primitive and kvm-warden's own constraints on it. `keep_running`: with
    stop-orphan-resources=false (ORPHANS_SET) in the same patch, so that Pacemaker leaves the
    running domain alone while its resource is an orphan. `rollback`: an enrollment undone (its
    own key: the ledger's memory that keeps it from being retried at once)."""

    keep_running: bool = False
    rollback: bool = False

    @property
    def key(self) -> str:
        return f"{ROLLBACK_MARK}{self.rsc}" if self.rollback else f"resource:{self.rsc}"


class ForgetResource(ResourceAction, frozen=True, kw_only=True, tag="ForgetResource"):
    """`crm_resource --refresh --resource R` of an orphan: Pacemaker forgets its history (in the
    CIB and in each node's executor), so that no later join brings the orphan back to stop."""

    @property
    def key(self) -> str:
        return f"forget:{self.rsc}"


class ReleaseOrphans(Action, frozen=True, kw_only=True, tag="ReleaseOrphans"):
    """Remove ORPHANS_SET once no orphan kvm-warden left running remains."""

    @property
    def key(self) -> str:
        return "property:stop-orphan-resources"


class ExportConfig(Action, frozen=True, kw_only=True, tag="ExportConfig"):
    """Have the agent on `node` write running domain `domain`'s XML to `path` (never over an
    existing file), for VirtualDomain's `config`."""

    node: str
    domain: str
    path: str

    @property
    def key(self) -> str:
        return f"file:{self.path}"


AnyAction = (
    SetLocation | SetAllowedNodes | AddOrder | AddColocation | RemoveConstraint | SetMeta
    | SetProperty | SetUtilization | SetNodeAttribute | Cleanup | FailResource | CreateVm | ManageVm | HoldVm
    | RemoveVm | ForgetResource | ReleaseOrphans | ExportConfig
)

CIB_ACTIONS = (SetLocation, SetAllowedNodes, AddOrder, AddColocation, RemoveConstraint, SetMeta,
               SetProperty, SetUtilization, SetNodeAttribute, CreateVm, ManageVm, HoldVm, RemoveVm,
               ReleaseOrphans)


@dataclass(frozen=True)
class Outcome:
    """What became of one admitted action: the actuator's answer, for the ledger and the audit."""

    action: AnyAction
    applied: bool
    error: str | None = None
    before: str | None = None
    after: str | None = None
    duration: float = 0.0


TRANSITION_ACTIONS = frozenset(
    {"migrate", "move", "start", "stop", "restart", "recover", "promote", "demote"})


class TransitionStep(msgspec.Struct, frozen=True, kw_only=True, rename={"from_node": "from",
                                                                         "to_node": "to"}):
    """One line of Pacemaker's transition summary: what the scheduler would do to a resource."""

    resource: str
    action: str  # one of TRANSITION_ACTIONS
    from_node: str | None = None
    to_node: str | None = None


Severity = Literal["info", "warning", "critical"]
FindingKind = Literal[
    "stonith-without-device",  # properties: stonith-enabled=true asked for, no device configured
    "missing-resource",  # inventory: a VM of the file has no Pacemaker resource
    "wrong-agent",  # inventory: the VM's resource is not ocf:heartbeat:VirtualDomain
    "unknown-node",  # inventory: the file names a node the cluster does not have
    "missing-storage-resource",  # inventory: a storage entry's resource does not exist
    "circuit-open",  # health: cleanups suspended after repeated failures
    "split-brain",  # health: one domain running on two nodes
    "unplaced-domain",  # health: a domain running where Pacemaker does not have its resource
    "operator-ban",  # placement: a `pcs resource ban` that contradicts the desired state (kept)
    "storage-kept",  # storage: a dependency kept because nothing proves it is no longer needed
    "drain-blocked",  # nodes: a declared drain no node could take a VM from (not started)
    "vm-paused",  # paused: a cluster VM paused (I/O error, watchdog, user...) past the grace
    "out-of-band",  # health: a lifecycle change of a cluster VM that Pacemaker did not make
    "vm-failed",  # health: Pacemaker flags a cluster VM FAILED (until it recovers or is cleaned)
    "unasked-move",  # preview: a patch would move a VM nothing asked to move: its cause is held
    "placement-unsatisfiable",  # placement: Pacemaker does not honour a preference; says why
    "desired-invalid",  # the desired file on disk is invalid: the last good one stays in force
    "enroll-refused",  # enroll: a check before putting a VM under the cluster failed (no change)
    "enroll-waiting",  # enroll: waits for evidence (the agents' view of the config file, probes)
    "enroll-rolled-back",  # enroll: a step failed; the CIB was brought back, the VM runs on
    "retire-blocked",  # enroll: foreign constraints name a VM to retire (reported, not removed)
    "cleanup-in-future",  # health: clean_failures_before names a time still to come
    "vm-undeclared",  # placement: a VM resource the file no longer names: its constraints kept
    "machine-type",  # machines: a VM's QEMU machine type some node lacks (no live migration there)
    "failover-no-room",  # capacity: a node's loss would leave VMs stopped (crm_simulate says)
    "would-break-failover",  # capacity.admission warn: a change made that breaks N+1
    "rebalance-proposed",  # rebalance: one live migration that would even out the CPU load
    "rebalance-moving",  # rebalance: that migration under way (capacity.rebalance: apply)
    "mixed-version",  # versions: nodes run different Pacemaker versions (a rolling upgrade)
    "upgrade-step",  # upgrade: where the declared rolling upgrade stands (one per node in work)
    "upgrade-ready",  # upgrade: a node is drained and empty: the operator may upgrade it now
    "upgrade-held",  # upgrade: the upgrade waits (another node out, no report, a file state)
    "upgrade-done",  # upgrade: every node runs the target release: remove `upgrade:`
]
# Findings about where domains run compare two sources taken at different instants (libvirt's
# events, crm_mon's snapshot); they count only once they persist (engine/ledger.py).
SPLIT_BRAIN_FINDINGS: frozenset[FindingKind] = frozenset({"split-brain", "unplaced-domain"})
PLACEMENT_FINDINGS: frozenset[FindingKind] = SPLIT_BRAIN_FINDINGS | {"placement-unsatisfiable"}
# Findings said only once they persist (the ledger's timers): a reading between two others
# cannot have made them up, and a burst of load that ends proposes no move.
TIMED_FINDINGS: frozenset[FindingKind] = PLACEMENT_FINDINGS | {"rebalance-proposed",
                                                                "rebalance-moving"}


class Subject(msgspec.Struct, frozen=True):
    """What a finding is about: a resource (on a node), a node, or another named object (a
    constraint, a property). A value, never a string to split; `str()` is for display."""

    rsc: str | None = None
    node: str | None = None
    name: str | None = None

    def __str__(self) -> str:
        if self.name is not None:
            return self.name
        if self.rsc is not None and self.node is not None:
            return f"{self.rsc}@{self.node}"
        return self.rsc or self.node or ""


class Finding(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Something an operator must know that kvm-warden will not fix by itself. `rsc` and
    `node` are what code reads; `subject` is their display form (`status`, JSON, alerts)."""

    reconciler: str
    kind: FindingKind
    severity: Severity
    subject: str
    message: str
    rsc: str | None = None
    node: str | None = None
    # Why, for machines (Kubernetes' Condition.reason: one CamelCase word): what code and tests
    # read where a kind has more than one cause; "" where the kind says it all. `message` is
    # for people and may be reworded.
    reason: str = ""
    # Reported at once, not only once it persists: Pacemaker itself vouches for it (a guest on
    # a node it sees unclean), so no race between two readings can have made it up.
    urgent: bool = False


@dataclass(frozen=True)
class Plan:
    """What one or all reconcilers want: actions for the guard, findings for people."""

    actions: tuple[AnyAction, ...] = ()
    findings: tuple[Finding, ...] = ()
    # When a reconciler wants the next pass even if nothing changes (wall clock): a grace
    # period ends then. The scheduler wakes for it without knowing which reconciler asked.
    requeue_at: float | None = None

    def __add__(self, other: Plan) -> Plan:
        times = [t for t in (self.requeue_at, other.requeue_at) if t is not None]
        return Plan(self.actions + other.actions, self.findings + other.findings,
                    min(times) if times else None)


def describe(action: AnyAction) -> str:
    """One line an operator reads in `plan` and in the audit log."""
    match action:
        case SetLocation(id=i, rsc=r, node=n, score=s):
            return f"location {i}: {r} on {n} score {s}"
        case SetAllowedNodes(id=i, rsc=r, nodes=ns):
            return f"location {i}: {r} only on {', '.join(ns)} (-INFINITY elsewhere)"
        case AddOrder(id=i, first=f, then=t, order_kind=k):
            return f"order {i}: {f} then {t} ({k})"
        case AddColocation(id=i, rsc=r, with_rsc=w, score=s):
            return f"colocation {i}: {r} with {w} score {s}"
        case RemoveConstraint(id=i):
            return f"remove constraint {i}"
        case SetMeta(rsc=r, name=n, value=v):
            return f"meta {r}: {n}={v}"
        case SetProperty(name=n, value=None):
            return f"property {n} removed (Pacemaker's default)"
        case SetProperty(name=n, value=v):
            return f"property {n}={v}"
        case SetNodeAttribute(node=n, name=a, value=v):
            return f"node {n}: {a}={v}"
        case SetUtilization(target=t, name=n, values=vs):
            return f"utilization of {t} {n}: " + ", ".join(f"{k}={v}" for k, v in vs)
        case Cleanup(rsc=r, node=n, reset_only=True):
            return f"cleanup {r} on {n} (fail-count reset only: its migration history is kept)"
        case Cleanup(rsc=r, node=n, sources=s):
            return f"cleanup {r} on {n}" + (f" (and its migration history on {', '.join(s)})"
                                            if s else "")
        case FailResource(rsc=r, node=n):
            return f"fail {r} on {n} (Pacemaker recovers it)"
        case CreateVm(rsc=r, config=c, node=None):
            return f"create {r} (VirtualDomain config={c})"
        case CreateVm(rsc=r, config=c, node=n):
            return (f"create {r} unmanaged (VirtualDomain config={c}), where it runs: {n}; "
                    "Pacemaker probes it")
        case ManageVm(rsc=r):
            return f"manage {r} (enrolled: probes found it where it runs)"
        case HoldVm(rsc=r):
            return f"unmanage {r} (to take it out of the cluster running)"
        case RemoveVm(rsc=r, keep_running=True):
            return f"remove {r} and kvm-warden's constraints on it, leaving the domain running"
        case RemoveVm(rsc=r):
            return f"remove {r} and kvm-warden's constraints on it"
        case ForgetResource(rsc=r):
            return f"forget {r}'s history (crm_resource --refresh of the orphan)"
        case ReleaseOrphans():
            return "remove stop-orphan-resources=false (no held orphan is left)"
        case ExportConfig(node=n, domain=d, path=p):
            return f"write {d}'s XML from {n}'s libvirt to {p}"
    return repr(action)
