"""The embedded simulated cluster and a desired-state store on it, for the loop's tests."""

from __future__ import annotations

from pathlib import Path

from controller.app.simulated import SimulatedCluster, embedded_desired
from controller.engine.desired_store import DesiredStore


def simulated(tmp_path: Path, desired_text: str | None = None, poll: bool = True
              ) -> tuple[SimulatedCluster, DesiredStore, Path]:
    """A fresh simulated 3-node cluster, its desired file (the embedded one by default) and a
    DesiredStore on it (already loaded unless `poll=False`)."""
    sim = SimulatedCluster(tmp_path.resolve() / "sim")
    sim.create()
    desired = tmp_path / "desired.yaml"
    desired.write_text(embedded_desired() if desired_text is None else desired_text)
    store = DesiredStore(str(desired))
    if poll:
        store.poll()
    return sim, store, desired


def add_outside_domain(node_xml: Path, name: str) -> str:
    """A domain `name` running in one simulated node's libvirt (test driver) with no resource:
    a domain outside the cluster. Returns the file as it was, to put back."""
    kept = node_xml.read_text()
    node_xml.write_text(kept.replace("</node>", (
        f"<domain type='test'><name>{name}</name><memory>1048576</memory><vcpu>1</vcpu>"
        "<os><type>hvm</type></os><devices><disk type='file' device='disk'>"
        f"<source file='/kvm/storage/images/{name}.qcow2'/><target dev='vda' bus='virtio'/>"
        "</disk></devices></domain></node>")))
    return kept
