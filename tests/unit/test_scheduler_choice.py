"""Whose scheduler previews while a cluster is mixed: the DC's version, read from the real
`pacemakerd --features` of Debian 12 and 13 (tests/fixtures/regen.sh) and crm_mon's feature
sets; the DC itself first, never an offline node or one without an agent."""

from __future__ import annotations

from pathlib import Path

from controller.engine.preview import choose_scheduler
from controller.model.observed import Node
from probes.pacemaker.simulate import parse_features

FIX = Path(__file__).parent.parent / "fixtures" / "pacemaker"
OLD = parse_features((FIX / "features-2.1.5.xml").read_bytes())
NEW = parse_features((FIX / "features-3.0.0.xml").read_bytes())


def nodes(**fs: str) -> dict[str, Node]:
    return {n: Node(name=n, online=not f.endswith("!"), feature_set=f.rstrip("!"))
            for n, f in fs.items()}


def test_both_releases_pacemaker_is_read() -> None:
    assert (OLD.version, OLD.feature_set) == ("2.1.5", "3.16.1")
    assert (NEW.version, NEW.feature_set) == ("3.0.0", "3.20.0")
    assert str(NEW) == "Pacemaker 3.0.0 (feature set 3.20.0)"


def test_the_dcs_version_previews() -> None:
    mixed = nodes(kvm1="3.20.0", kvm2="3.16.1", kvm3="3.16.1")
    agents = ["kvm1", "kvm2", "kvm3"]
    # this node runs the DC's version: here
    assert choose_scheduler(OLD, "kvm2", mixed, agents).node is None
    # this node is newer than the DC: the DC's own agent, else another node of its version
    assert choose_scheduler(NEW, "kvm3", mixed, agents).node == "kvm3"
    assert choose_scheduler(NEW, "kvm3", mixed, ["kvm1", "kvm2"]).node == "kvm2"
    # an offline node of that version is no choice; none left: the reason, no node
    down = nodes(kvm1="3.20.0", kvm2="3.16.1!", kvm3="3.16.1")
    pick = choose_scheduler(NEW, "kvm3", down, ["kvm1", "kvm2"])
    assert pick.node is None and "DC kvm3 runs Pacemaker feature set 3.16.1" in pick.reason
    # the DC (or its version) unknown: here, as before -- crm_mon's "<3.15.1" is not a version
    older = nodes(kvm1="<3.15.1", kvm2="<3.15.1", kvm3="<3.15.1")
    assert choose_scheduler(OLD, "kvm1", older, agents).node is None
    assert choose_scheduler(OLD, "kvm1", older, agents).reason == ""
    assert choose_scheduler(NEW, None, mixed, agents).node is None
    assert choose_scheduler(NEW, "kvm9", mixed, agents) == choose_scheduler(NEW, None, {}, [])
