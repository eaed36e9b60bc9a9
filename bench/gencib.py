"""Generate large CIBs for benchmarks: N nodes x M VirtualDomain VMs on a GFS2 chain.

The status section is written directly (node_state + lrm_resource with a successful start and
a monitor), as LAB.md recommends: crm_simulate needs more than 12 minutes at 16 x 1,000.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

CHAIN = ("dlm", "clvmd", "gfs2_res01")
AGENTS = {"dlm": ("ocf", "pacemaker", "controld"), "clvmd": ("ocf", "heartbeat", "clvm"),
          "gfs2_res01": ("ocf", "heartbeat", "Filesystem")}


def _op(rid: str, task: str, interval: int, call: int) -> str:
    key = f"{rid}_{task}_{interval}"
    op_id = f"{rid}_last_0" if interval == 0 else f"{rid}_monitor_{interval}"
    return (
        f'<lrm_rsc_op id="{op_id}" operation_key="{key}" operation="{task}" '
        f'crm-debug-origin="bench" crm_feature_set="3.16.1" '
        f'transition-key="{call}:1:0:00000000-0000-0000-0000-000000000000" '
        f'transition-magic="0:0;{call}:1:0:00000000-0000-0000-0000-000000000000" exit-reason="" '
        f'call-id="{call}" rc-code="0" op-status="0" interval="{interval}" '
        f'last-rc-change="1795548000" exec-time="10" queue-time="0"/>'
    )


def _lrm(rid: str, cls: str, prov: str, typ: str) -> str:
    return (f'<lrm_resource id="{rid}" class="{cls}" provider="{prov}" type="{typ}">'
            f'{_op(rid, "start", 0, 2)}{_op(rid, "monitor", 10000, 3)}</lrm_resource>')


def _utilization(owner: str, mib: int) -> str:
    return (f'<utilization id="{owner}-utilization"><nvpair id="{owner}-utilization-memory" '
            f'name="memory" value="{mib}"/></utilization>')


def generate(nodes: int, vms: int, *, constraints: bool = True, sizes: Sequence[int] = (),
             node_mib: int = 0, apart: Sequence[tuple[int, int]] = ()) -> str:
    """With `sizes` (MiB per VM, cycled), a cluster sized as kvm-warden's `capacity:` makes it:
    each VM's memory utilization and resource-stickiness 100, each node offering `node_mib`,
    placement-strategy balanced; `apart`: pairs of VMs kept on different nodes."""
    names = [f"kvm{i}" for i in range(1, nodes + 1)]
    strategy = ('<nvpair id="cib-bootstrap-options-placement-strategy" '
                'name="placement-strategy" value="balanced"/>') if sizes else ""
    out = ['<cib crm_feature_set="3.16.1" validate-with="pacemaker-3.8" epoch="100" '
           'num_updates="0" admin_epoch="0" have-quorum="1" dc-uuid="1"><configuration>'
           '<crm_config><cluster_property_set id="cib-bootstrap-options">'
           '<nvpair id="cib-bootstrap-options-stonith-enabled" name="stonith-enabled" '
           'value="false"/><nvpair id="cib-bootstrap-options-no-quorum-policy" '
           f'name="no-quorum-policy" value="freeze"/>{strategy}</cluster_property_set>'
           '</crm_config><nodes>']
    out += [f'<node id="{i}" uname="{n}">{_utilization(n, node_mib)}</node>' if sizes
            else f'<node id="{i}" uname="{n}"/>' for i, n in enumerate(names, 1)]
    out.append("</nodes><resources>")
    for rid in CHAIN:
        cls, prov, typ = AGENTS[rid]
        out.append(f'<clone id="{rid}-clone"><meta_attributes id="{rid}-clone-meta">'
                   f'<nvpair id="{rid}-clone-meta-interleave" name="interleave" value="true"/>'
                   f'</meta_attributes><primitive id="{rid}" class="{cls}" provider="{prov}" '
                   f'type="{typ}"><operations><op id="{rid}-monitor" name="monitor" '
                   f'interval="10s"/></operations></primitive></clone>')
    for v in range(vms):
        rid = f"vm-{v:05d}"
        out.append(
            f'<primitive id="{rid}" class="ocf" provider="heartbeat" type="VirtualDomain">'
            f'<instance_attributes id="{rid}-ia"><nvpair id="{rid}-ia-config" name="config" '
            f'value="/kvm/storage/xml/{v:05d}.xml"/></instance_attributes>'
            f'<meta_attributes id="{rid}-meta"><nvpair id="{rid}-meta-allow-migrate" '
            f'name="allow-migrate" value="true"/>'
            + (f'<nvpair id="{rid}-meta-stickiness" name="resource-stickiness" value="100"/>'
               if sizes else "")
            + '</meta_attributes>'
            + (_utilization(rid, sizes[v % len(sizes)]) if sizes else "")
            + f'<operations><op id="{rid}-monitor" name="monitor" interval="10s"/></operations>'
            "</primitive>")
    out.append("</resources><constraints>")
    out.append('<rsc_order id="o-dlm-clvmd" first="dlm-clone" then="clvmd-clone"/>'
               '<rsc_colocation id="c-clvmd-dlm" rsc="clvmd-clone" with-rsc="dlm-clone" '
               'score="INFINITY"/><rsc_order id="o-clvmd-gfs2" first="clvmd-clone" '
               'then="gfs2_res01-clone"/><rsc_colocation id="c-gfs2-clvmd" '
               'rsc="gfs2_res01-clone" with-rsc="clvmd-clone" score="INFINITY"/>')
    if constraints:
        for v in range(vms):
            rid = f"vm-{v:05d}"
            out.append(f'<rsc_order id="o-gfs2-{rid}" first="gfs2_res01-clone" then="{rid}"/>'
                       f'<rsc_colocation id="c-{rid}-gfs2" rsc="{rid}" '
                       'with-rsc="gfs2_res01-clone" score="INFINITY"/>')
    out += [f'<rsc_colocation id="apart-{a}-{b}" rsc="vm-{a:05d}" with-rsc="vm-{b:05d}" '
            'score="-INFINITY"/>' for a, b in apart]
    out.append("</constraints></configuration><status>")
    for i, n in enumerate(names, 1):
        out.append(f'<node_state id="{i}" uname="{n}" in_ccm="true" crmd="online" '
                   f'crm-debug-origin="bench" join="member" expected="member"><lrm id="{i}">'
                   "<lrm_resources>")
        for rid in CHAIN:
            out.append(_lrm(rid, *AGENTS[rid]))
        for v in range(i - 1, vms, nodes):
            out.append(_lrm(f"vm-{v:05d}", "ocf", "heartbeat", "VirtualDomain"))
        out.append("</lrm_resources></lrm></node_state>")
    out.append("</status></cib>")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("nodes", type=int)
    p.add_argument("vms", type=int)
    p.add_argument("out", type=Path)
    args = p.parse_args()
    args.out.write_text(generate(args.nodes, args.vms))


if __name__ == "__main__":
    main()
