"""The N+1 answers kept by what they depend on, and what a node's failure really does under
`placement-strategy=balanced`: VMs running on the surviving nodes can move too (Pacemaker
assigns the biggest resources first), so the answer for one node is never assumed untouched by
a change on another. Real crm_simulate; expected placements from crm_simulate -S and crm_mon."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest
from lxml import etree

from bench.gencib import generate
from controller.engine.capacity import LossCache, failover_report
from controller.engine.observe import observe_once
from controller.model.index import build_index
from tests import cibs

pytestmark = pytest.mark.usefixtures("pacemaker_tools")


def _at_rest(tmp_path: Path, nodes: int, text: str) -> Path:
    """The generated configuration with every VM placed by the scheduler from nothing."""
    config = text[:text.index("<status>")] + "<status/></cib>"
    return cibs.simulate(tmp_path / "cib.xml", config,
                         up=tuple(f"kvm{i}" for i in range(1, nodes + 1)))


def _where_after(cib_file: Path, node: str) -> dict[str, str]:
    """Pacemaker's own answer: the transition of `node`'s failure executed, read by crm_mon."""
    out = cib_file.with_name(f"failed-{node}.xml")
    subprocess.run(["crm_simulate", "-x", str(cib_file), "--node-fail", node, "-S", "-O",
                    str(out)], check=True, capture_output=True, timeout=60)
    root = etree.fromstring(cibs.tool(["crm_mon", "-1", "--output-as=xml"], out).encode())
    return {str(r.get("id")): str(n.get("name")) for r in root.iter("resource")
            if str(r.get("id")).startswith("vm-") for n in r.iter("node")}


def test_a_failure_moves_vms_on_other_nodes_and_the_answer_says_so(tmp_path: Path) -> None:
    rnd = random.Random(5)  # five nodes, ten VMs of 256 MiB to 3 GiB, one kept apart
    sizes = [rnd.choice((256, 512, 768, 1024, 2048, 3072)) for _ in range(10)]
    text = generate(5, 10, sizes=sizes, node_mib=4117, apart=[(1, 5)])
    cib_file = _at_rest(tmp_path, 5, text)
    observed, raw = observe_once(str(cib_file))
    index = build_index(observed)
    report = {r.node: r for r in failover_report(raw, index)}
    moved_elsewhere = 0
    for node, loss in report.items():
        after = _where_after(cib_file, node)
        now = {r: n[0] for r, n in index.running.items() if r.startswith("vm-") and n}
        expected = {r: n for r, n in after.items() if now.get(r) != n}
        assert loss.placed == expected, node
        assert set(loss.stopped) == {r for r in now if r not in after}, node
        moved_elsewhere += sum(1 for r in loss.placed if now.get(r) != node)
    # Not only the failed node's VMs: running VMs elsewhere moved to make room for them.
    assert moved_elsewhere > 0


def test_only_a_change_the_scheduler_decides_by_asks_again(tmp_path: Path) -> None:
    text = generate(4, 12, sizes=[512], node_mib=4096)
    path = tmp_path / "cib.xml"
    path.write_text(text)
    observed, raw = observe_once(str(path))
    cache = LossCache()
    first = failover_report(raw, build_index(observed), cache=cache)
    assert cache.asked == 4 and all(r.fits for r in first)
    # A status update that changes nothing the scheduler decides by: nothing asked again.
    path.write_text(text.replace('num_updates="0"', 'num_updates="7"')
                    .replace('call-id="3"', 'call-id="9"'))
    observed, raw = observe_once(str(path))
    again = failover_report(raw, build_index(observed), cache=cache)
    assert cache.asked == 4 and again == first
    # kvm4 offers less: every node's question is asked again.
    path.write_text(text.replace('id="kvm4-utilization-memory" name="memory" value="4096"',
                                 'id="kvm4-utilization-memory" name="memory" value="1536"'))
    observed, raw = observe_once(str(path))
    failover_report(raw, build_index(observed), cache=cache)
    assert cache.asked == 8
