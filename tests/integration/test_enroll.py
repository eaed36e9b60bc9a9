"""Enrollment and retirement on real Pacemaker tools (CIB_file=, crm_simulate as the cluster's
scheduler and executor). The agents' reports (libvirt listings, config-file hashes) are folded
in as the bus would deliver them; the real lab runs the same steps in tests/e2e/test_enroll.py.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from lxml import etree

from controller.actuators.pacemaker import PacemakerActuator
from controller.engine.desired_store import DesiredStore
from controller.engine.loop import Controller
from controller.engine.observe import pacemaker_source
from controller.engine.store import Store
from controller.model.events import ConfigFilesSeen, DomainSeen, envelope
from controller.model.observed import ConfigFile, Domain
from controller.model.pcmk import HOLD_MARK, ORPHANS_SET
from tests import cibs
from tests.cibs import NODES, STORAGE_CHAIN, STORAGE_CONSTRAINTS, cib, simulate

pytestmark = pytest.mark.usefixtures("pacemaker_tools")
CONFIG = "/kvm/storage/web03.xml"
DESIRED = f"""version: 1
storage:
  - name: gfs2
    resource: gfs2_res01-clone
    mountpoint: /kvm/storage
vms:
  - name: web03
    config: {CONFIG}
    migration_transport: tcp
    storage: [gfs2]
"""
GOOD = ConfigFile(path=CONFIG, sha256="a" * 64, domain="web03", name_on_own_line=True,
                  disks=("/kvm/storage/web03.qcow2",))


class Cluster:
    """A CIB file the real scheduler runs, the controller on it, and what agents report."""

    def __init__(self, tmp_path: Path, desired: str = DESIRED):
        self.cib_file = simulate(tmp_path / "cib.xml", cib(
            STORAGE_CHAIN, STORAGE_CONSTRAINTS, properties={"no-quorum-policy": "freeze"}))
        self.desired = tmp_path / "desired.yaml"
        self.desired.write_text(desired)
        store = DesiredStore(str(self.desired))
        store.poll()
        self.store = Store()
        self.ctl = Controller(source=pacemaker_source(str(self.cib_file)),
                              actuator=PacemakerActuator(str(self.cib_file)), desired=store,
                              store=self.store)
        self.seq = 0
        self.t = time.time()

    def report(self, running_on: tuple[str, ...] = ("kvm2",),
               files: dict[str, ConfigFile | None] | None = None, autostart: bool = False,
               disks: tuple[str, ...] = ("/kvm/storage/web03.qcow2",)) -> None:
        for node in NODES:
            doms = (Domain(name="web03", state="running", disks=disks, persistent=autostart,
                           autostart=autostart),) if node in running_on else ()
            f = files[node] if files is not None and node in files else GOOD
            self.seq += 1
            self.store.fold(envelope(node, self.seq, DomainSeen(node=node, domains=doms)))
            self.seq += 1
            self.store.fold(envelope(node, self.seq, ConfigFilesSeen(
                node=node, dirs=("/kvm/storage",), files=(f,) if f is not None else ())))

    def step(self):  # type: ignore[no-untyped-def]
        self.t += 11.0  # past the guard's cooldown
        return self.ctl.run_pass(now=self.t)

    def configuration(self) -> bytes:
        root = etree.parse(str(self.cib_file)).getroot()
        return etree.tostring(root.find("configuration"), method="c14n")

    def run_scheduler(self, *inject: str) -> str:
        """crm_simulate executes the transition (with the given probe results) in place."""
        argv = ["crm_simulate", "-x", str(self.cib_file), "-S", "-O", str(self.cib_file)]
        for op in inject:
            argv += ["-i", op]
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
        if inject:
            self._digests()
        return out.stdout[out.stdout.find("Transition Summary"):]

    def _digests(self) -> None:
        """crm_simulate records an injected result without the op-digest (the hash of the
        parameters it ran with) that a real executor writes, and the scheduler then sees
        changed parameters (and plans a restart). Give it the digest crm_simulate computed for
        the same operation of the same resource on another node: what the executor records."""
        tree = etree.parse(str(self.cib_file))
        ops = list(tree.getroot().iter("lrm_rsc_op"))
        digests = {op.get("operation_key"): op.get("op-digest") for op in ops
                   if op.get("op-digest")}
        for op in ops:
            if not op.get("op-digest") and digests.get(op.get("operation_key")):
                op.set("op-digest", str(digests[op.get("operation_key")]))
        tree.write(str(self.cib_file))


def actions(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [type(d.action).__name__ for d in result.decisions if d.verdict.admitted]


def findings(result, kind: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [f.message for f in result.findings if f.kind == kind]


def reasons(result, kind: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The machine reasons of a kind's findings (what code reads; the message is for people)."""
    return [f.reason for f in result.findings if f.kind == kind]


def _resource_xml(cib_file: Path, rid: str) -> str:
    return cibs.tool(["cibadmin", "--query", "--xpath", f"//primitive[@id='{rid}']"], cib_file)


def test_a_running_vm_is_enrolled_unmanaged_probed_then_managed_without_a_restart(
        tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    c.report(running_on=("kvm2",))
    first = c.step()
    assert sorted(actions(first)) == ["AddColocation", "AddOrder", "CreateVm", "SetLocation"]
    prim = _resource_xml(c.cib_file, "vm-web03")
    assert 'name="is-managed" value="false"' in prim and HOLD_MARK in prim
    assert f'name="config" value="{CONFIG}"' in prim
    assert 'name="migration_transport" value="tcp"' in prim
    constraints = cibs.tool(["cibadmin", "--query", "--scope", "constraints"], c.cib_file)
    assert 'id="warden-order-gfs2_res01-clone-vm-web03"' in constraints
    assert 'id="warden-colo-vm-web03-gfs2_res01-clone"' in constraints
    assert re.search(r'id="warden-enroll-vm-web03"[^>]*node="kvm2"|node="kvm2"[^>]*'
                     r'id="warden-enroll-vm-web03"', constraints)
    # Before its probes answer nothing is handed over.
    waiting = c.step()
    assert "ManageVm" not in actions(waiting)
    assert findings(waiting, "enroll-waiting")
    # Pacemaker probes the new resource on every node: running on kvm2 only. Unmanaged, the
    # scheduler starts and stops nothing.
    summary = c.run_scheduler("vm-web03_monitor_0@kvm2=0")
    assert not re.search(r"\* (Start|Stop|Restart|Move|Migrate|Recover)\s+vm-web03", summary)
    assert cibs.locate(c.cib_file, "vm-web03") == ["kvm2"]
    managed = c.step()
    assert actions(managed) == ["ManageVm"]
    prim = _resource_xml(c.cib_file, "vm-web03")
    assert "is-managed" not in prim and HOLD_MARK not in prim
    # Managed now: the scheduler leaves it running where it is.
    summary = c.run_scheduler()
    assert "vm-web03" not in summary.split("Executing Cluster Transition")[0]
    assert cibs.locate(c.cib_file, "vm-web03") == ["kvm2"]
    assert not [f for f in c.step().findings if f.rsc == "vm-web03" and f.kind.startswith("enroll")]


def test_probes_that_find_it_on_two_nodes_roll_the_enrollment_back_leaving_it_running(
        tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    before = c.configuration()
    c.report(running_on=("kvm2",))
    assert "CreateVm" in actions(c.step())
    # The agents missed a second copy; Pacemaker's probes find it on kvm2 and kvm3.
    c.run_scheduler("vm-web03_monitor_0@kvm2=0", "vm-web03_monitor_0@kvm3=0")
    back = c.step()
    assert actions(back) == ["RemoveVm"]
    assert findings(back, "enroll-rolled-back")
    # The orphan is held: Pacemaker stops neither copy.
    config = cibs.tool(["cibadmin", "--query", "--scope", "crm_config"], c.cib_file)
    assert ORPHANS_SET in config
    summary = c.run_scheduler()
    assert "Stop" not in summary.split("Executing Cluster Transition")[0], summary
    assert actions(c.step()) == ["ForgetResource"]
    assert actions(c.step()) == ["ReleaseOrphans"]
    assert c.configuration() == before  # the CIB's configuration as it was
    # and it is not tried again at once
    again = c.step()
    assert "CreateVm" not in actions(again)
    assert findings(again, "enroll-rolled-back")


@pytest.mark.parametrize(("what", "report", "reason"), [
    ("running on two nodes", {"running_on": ("kvm2", "kvm3")}, "RunsTwice"),
    ("the XML missing on one node", {"files": {"kvm3": None}}, "ConfigMissing"),
    ("the XML differing", {"files": {"kvm1": ConfigFile(
        path=CONFIG, sha256="b" * 64, domain="web03", name_on_own_line=True)}}, "ConfigDiffers"),
    ("<name> not on its own line", {"files": {n: ConfigFile(
        path=CONFIG, sha256="a" * 64, domain="web03", name_on_own_line=False) for n in NODES}},
     "NameNotOnOwnLine"),
    ("another domain's XML", {"files": {n: ConfigFile(
        path=CONFIG, sha256="a" * 64, domain="web99", name_on_own_line=True) for n in NODES}},
     "WrongDomain"),
    ("a disk off the shared storage", {"disks": ("/var/lib/libvirt/images/web03.qcow2",)},
     "DiskNotShared"),
    ("libvirt autostart", {"autostart": True}, "Autostart"),
])
def test_each_pitfall_is_refused_before_any_change(tmp_path: Path, what: str,
                                                   report: dict[str, object],
                                                   reason: str) -> None:
    c = Cluster(tmp_path)
    before = c.configuration()
    c.report(**report)  # type: ignore[arg-type]
    result = c.step()
    assert actions(result) == [], what
    assert reasons(result, "enroll-refused") == [reason], findings(result, "enroll-refused")
    assert c.configuration() == before


def test_without_a_migration_transport_or_storage_it_is_refused(tmp_path: Path) -> None:
    text = DESIRED.replace("    migration_transport: tcp\n", "").replace(
        "    storage: [gfs2]\n", "")
    c = Cluster(tmp_path, text)
    c.report()
    result = c.step()
    assert reasons(result, "enroll-refused") == ["NoMigrationTransport"]  # the first cause
    assert "no storage declared" in findings(result, "enroll-refused")[0]  # every cause is told


def test_a_missing_xml_is_exported_from_the_node_it_runs_on(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    c.report(files={n: None for n in NODES})
    asked: list[tuple[str, str, str]] = []
    c.ctl.actuator.exporter = lambda node, dom, path: asked.append((node, dom, path)) or "x"
    result = c.step()
    assert actions(result) == ["ExportConfig"]
    assert asked == [("kvm2", "web03", CONFIG)]


def _enrolled(tmp_path: Path) -> Cluster:
    c = Cluster(tmp_path)
    c.report(running_on=("kvm2",))
    c.step()
    c.run_scheduler("vm-web03_monitor_0@kvm2=0")
    assert actions(c.step()) == ["ManageVm"]
    c.run_scheduler()
    return c


def test_retirement_keep_running_leaves_the_domain_running_and_no_resource(
        tmp_path: Path) -> None:
    c = _enrolled(tmp_path)
    c.desired.write_text(DESIRED + "    state: absent\n    keep_running: true\n")
    c.ctl.desired.poll()
    assert actions(c.step()) == ["HoldVm"]
    c.run_scheduler()
    assert actions(c.step()) == ["RemoveVm"]
    assert "vm-web03" not in cibs.tool(["cibadmin", "--query", "--scope", "constraints"],
                                        c.cib_file)
    summary = c.run_scheduler()
    assert "Stop" not in summary.split("Executing Cluster Transition")[0], summary
    assert actions(c.step()) == ["ForgetResource"]
    assert actions(c.step()) == ["ReleaseOrphans"]
    status = cibs.tool(["cibadmin", "--query"], c.cib_file)
    assert "vm-web03" not in status and ORPHANS_SET not in status


def test_retirement_without_keep_running_stops_it_through_pacemaker_first(
        tmp_path: Path) -> None:
    c = _enrolled(tmp_path)
    c.desired.write_text(DESIRED + "    state: absent\n")
    c.ctl.desired.poll()
    assert actions(c.step()) == ["SetMeta"]  # target-role=Stopped
    summary = c.run_scheduler()
    assert re.search(r"\* Stop\s+vm-web03", summary), summary
    assert actions(c.step()) == ["RemoveVm"]
    c.run_scheduler()
    assert "vm-web03" not in cibs.tool(["cibadmin", "--query", "--scope", "configuration"],
                                        c.cib_file)


def test_a_foreign_constraint_blocks_retirement_and_is_not_removed(tmp_path: Path) -> None:
    c = _enrolled(tmp_path)
    cibs.tool(["cibadmin", "--create", "--scope", "constraints", "--xml-text",
               '<rsc_location id="ops-pin" rsc="vm-web03" node="kvm2" score="50"/>'],
              c.cib_file)
    c.desired.write_text(DESIRED + "    state: absent\n    keep_running: true\n")
    c.ctl.desired.poll()
    result = c.step()
    assert actions(result) == []
    assert "ops-pin" in findings(result, "retire-blocked")[0]
    assert "ops-pin" in cibs.tool(["cibadmin", "--query", "--scope", "constraints"], c.cib_file)


def test_a_resource_deleted_by_hand_is_enrolled_again_only_once_pacemaker_forgot_it(
        tmp_path: Path) -> None:
    """`pcs resource delete --force` while the file still declares the VM: created again at
    once, the new primitive would inherit the orphan's stop and its old probe results."""
    c = _enrolled(tmp_path)
    for xpath in ("//constraints/*[@rsc='vm-web03' or @then='vm-web03']",
                  "//primitive[@id='vm-web03']"):
        cibs.tool(["cibadmin", "--delete-all", "--force", "--xpath", xpath], c.cib_file)
    waiting = c.step()
    assert "CreateVm" not in actions(waiting)
    assert reasons(waiting, "enroll-waiting") == ["OrphanStopping"]
    summary = c.run_scheduler()  # Pacemaker stops the orphan...
    assert re.search(r"\* Stop\s+vm-web03", summary), summary
    c.report(running_on=())
    stopped = c.step()
    assert "CreateVm" not in actions(stopped)
    assert reasons(stopped, "enroll-waiting") == ["OrphanHistory"]
    # ...then forgets its history: the scheduler's delete on every node, which crm_simulate
    # predicts but does not carry out -- done here as the executor does it.
    assert len(re.findall(r"Resource action: vm-web03\s+delete on kvm", c.run_scheduler())) == 3
    cibs.tool(["cibadmin", "--delete-all", "--force", "--xpath",
               "//lrm_resource[@id='vm-web03']"], c.cib_file)
    again = c.step()
    assert "CreateVm" in actions(again)


def test_an_enrollment_goes_whole_or_not_at_all(tmp_path: Path) -> None:
    """The location that says where it runs is in its cooldown (kvm-warden removed one of that
    id seconds ago): the primitive waits with it, or its hand-over would find no node to
    expect it on and roll back."""
    c = Cluster(tmp_path)
    c.report(running_on=("kvm2",))
    before = c.configuration()
    c.t += 11.0
    c.ctl.ledger.last_change["constraint:warden-enroll-vm-web03"] = c.t - 2.0
    held = c.ctl.run_pass(now=c.t)
    verdicts = {type(d.action).__name__: d.verdict for d in held.decisions}
    assert sorted(verdicts) == ["AddColocation", "AddOrder", "CreateVm", "SetLocation"]
    assert {v.reason for v in verdicts.values()} == {"cooldown"}
    assert "constraint:warden-enroll-vm-web03" in verdicts["CreateVm"].detail
    assert c.configuration() == before
    assert sorted(actions(c.step())) == ["AddColocation", "AddOrder", "CreateVm", "SetLocation"]
