"""Scenario CIBs for the tests, given a status by Pacemaker's own scheduler.

Configuration is written by hand (as an operator or `pcs` would write it); the status section
comes from `crm_simulate -S` (the real scheduler) or, where a state cannot be reached by
simulation (an unclean node, a migration half done), from a hand-written `<status>` that
crm_mon then interprets. Expected values in tests come from the scenario or from crm_mon,
crm_resource and crm_simulate themselves, never from kvm-warden's own output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

NODES = ("kvm1", "kvm2", "kvm3")
ROOT = Path(__file__).parent.parent
SEED = ROOT / "tests" / "fixtures" / "seed-settled.cib.xml"
EXAMPLE = ROOT / "config" / "desired-state.example.yaml"


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """`kvm-warden ARGV...` from the repository, output captured."""
    return subprocess.run([sys.executable, "-m", "controller.app.cli", *argv],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def nvpairs(owner: str, kind: str, pairs: dict[str, str]) -> str:
    if not pairs:
        return ""
    body = "".join(
        f'<nvpair id="{owner}-{kind}-{k}" name="{k}" value="{v}"/>' for k, v in pairs.items()
    )
    return f'<{kind} id="{owner}-{kind}">{body}</{kind}>'


def vm(rid: str, config: str | None = None, meta: dict[str, str] | None = None) -> str:
    params = {"config": config or f"/kvm/storage/xml/{rid.removeprefix('vm-')}.xml",
              "hypervisor": "qemu:///system"}
    m = {"allow-migrate": "true", **(meta or {})}
    return (
        f'<primitive id="{rid}" class="ocf" provider="heartbeat" type="VirtualDomain">'
        f"{nvpairs(rid, 'instance_attributes', params)}{nvpairs(rid, 'meta_attributes', m)}"
        f'<operations><op id="{rid}-monitor-10s" name="monitor" interval="10s"/></operations>'
        f"</primitive>"
    )


def dummy(rid: str, agent: str = "ocf:pacemaker:Dummy") -> str:
    cls, prov, typ = agent.split(":")
    return (
        f'<primitive id="{rid}" class="{cls}" provider="{prov}" type="{typ}">'
        f'<operations><op id="{rid}-monitor-10s" name="monitor" interval="10s"/></operations>'
        f"</primitive>"
    )


def clone(cid: str, inner: str, meta: dict[str, str] | None = None) -> str:
    return f'<clone id="{cid}">{nvpairs(cid, "meta_attributes", meta or {})}{inner}</clone>'


STORAGE_CHAIN = (
    clone("dlm-clone", dummy("dlm", "ocf:pacemaker:controld"), {"interleave": "true"})
    + clone("clvmd-clone", dummy("clvmd", "ocf:heartbeat:clvm"), {"interleave": "true"})
    + clone("gfs2_res01-clone", dummy("gfs2_res01", "ocf:heartbeat:Filesystem"),
            {"interleave": "true"})
)
STORAGE_CONSTRAINTS = (
    '<rsc_order id="o-dlm-clvmd" first="dlm-clone" then="clvmd-clone" kind="Mandatory"/>'
    '<rsc_colocation id="c-clvmd-dlm" rsc="clvmd-clone" with-rsc="dlm-clone" score="INFINITY"/>'
    '<rsc_order id="o-clvmd-gfs2" first="clvmd-clone" then="gfs2_res01-clone" kind="Mandatory"/>'
    '<rsc_colocation id="c-gfs2-clvmd" rsc="gfs2_res01-clone" with-rsc="clvmd-clone" '
    'score="INFINITY"/>'
)


def cib(
    resources: str,
    constraints: str = "",
    *,
    nodes: tuple[str, ...] = NODES,
    properties: dict[str, str] | None = None,
    node_attrs: dict[str, dict[str, str]] | None = None,
    have_quorum: bool = True,
    status: str = "",
) -> str:
    props = {"stonith-enabled": "false", **(properties or {})}
    node_xml = "".join(
        f'<node id="{i}" uname="{n}">'
        + nvpairs(f"nodes-{i}", "instance_attributes", (node_attrs or {}).get(n, {}))
        + "</node>"
        for i, n in enumerate(nodes, start=1)
    )
    return (
        f'<cib crm_feature_set="3.16.1" validate-with="pacemaker-3.8" epoch="1" num_updates="0" '
        f'admin_epoch="0" have-quorum="{1 if have_quorum else 0}" dc-uuid="1">'
        f"<configuration><crm_config>"
        f"{nvpairs('cib-bootstrap-options', 'cluster_property_set', props)}"
        f"</crm_config><nodes>{node_xml}</nodes><resources>{resources}</resources>"
        f"<constraints>{constraints}</constraints></configuration><status>{status}</status></cib>"
    )


def simulate(
    path: Path,
    xml: str,
    *,
    up: tuple[str, ...] = NODES,
    down: tuple[str, ...] = (),
    inject: tuple[str, ...] = (),
    run: bool = True,
) -> Path:
    """Write `xml` to path and let the real scheduler bring it to a settled status, in place."""
    src = path.with_suffix(".in.xml")
    src.write_text(xml)
    argv = ["crm_simulate", "-x", str(src), "-O", str(path)]
    for n in up:
        argv += ["-u", n]
    for n in down:
        argv += ["-d", n]
    for op in inject:
        argv += ["-i", op]
    if run:
        argv.append("-S")
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    if run and inject:
        # Failures are injected on top of the settled state; a second pass lets the scheduler
        # react to them (recovery, fail-counts), as the cluster would.
        tmp = path.with_suffix(".2.xml")
        subprocess.run(
            ["crm_simulate", "-x", str(path), "-S", "-O", str(tmp)],
            check=True, capture_output=True, timeout=60,
        )
        tmp.replace(path)
    return path


def write(path: Path, xml: str) -> Path:
    path.write_text(xml)
    return path


def tool(argv: list[str], cib_file: Path) -> str:
    env = {**os.environ, "CIB_file": str(cib_file)}
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=True,
                          timeout=60).stdout


def locate(cib_file: Path, rid: str) -> list[str]:
    """Nodes a resource runs on, according to `crm_resource --locate` (another real tool)."""
    out = tool(["crm_resource", "--locate", "--resource", rid], cib_file)
    nodes = []
    for line in out.splitlines():
        # "resource vm-web01 is running on: kvm1" (optionally followed by " Promoted")
        if "is running on:" in line:
            nodes.append(line.split("is running on:", 1)[1].split()[0])
    return sorted(nodes)
