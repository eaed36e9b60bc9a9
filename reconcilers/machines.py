"""Machine types (controller/model/machines.py): a VM whose QEMU machine type some node's QEMU
lacks cannot live-migrate there. Findings only: kvm-warden's preview gate holds any change
whose predicted migration would hit it (a failed migration is a restart)."""

from __future__ import annotations

from controller.model.actions import Plan, Subject
from controller.model.context import Context
from controller.model.machines import common_pin, lacks, machine_on
from controller.model.vms import vm_resources
from reconcilers.base import PlanBuilder, Scope

NAME = "machines"
SCOPE: Scope = "cluster"  # full passes only: the engine does not run it on an incremental one


def plan(ctx: Context) -> Plan:
    out = PlanBuilder(NAME)
    index = ctx.index
    for rid in vm_resources(index, ctx.desired):
        where = index.running.get(rid, ())
        if len(where) != 1:
            continue
        machine = machine_on(index, ctx.desired, rid, where[0])
        if machine is None:
            continue
        others = sorted(n for n in index.node_names if n != where[0])
        cannot = [n for n in others if lacks(index, n, machine)]
        if not cannot:
            continue
        can = [n for n in others if n not in cannot]
        pin = common_pin(index, machine)
        fix = (f"pin <type machine='{pin}'> in its domain XML (every node's QEMU has it); it "
               "takes effect when the VM next starts" if pin else
               "pin a machine type every node's QEMU has in its domain XML")
        out.find("machine-type", "warning", Subject(rid, where[0]),
                 f"{rid} runs machine type {machine} on {where[0]}, which the QEMU of "
                 f"{', '.join(cannot)} lacks: it cannot live-migrate there (kvm-warden holds "
                 f"any change that would send it there; a failover would restart it); it can go "
                 f"to {', '.join(can) or 'no other node'}. Fix: {fix}")
    return out.build()
