"""Pacemaker's own words for truth, and the filesystems kvm-warden treats as shared storage.

One owner for each fact: the probes, the index, the guard and the reconcilers all read
booleans through here, so `y`/`n` (which Pacemaker accepts) mean the same everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping

# crm_is_true()/crm_str_to_boolean() in Pacemaker's lib/common/strings.c.
TRUE_WORDS = frozenset({"true", "on", "yes", "y", "1"})
FALSE_WORDS = frozenset({"false", "off", "no", "n", "0"})

# Filesystem types (as /proc/self/mountinfo names them) that every node of a cluster can share:
# a VM whose disks lie on one of these can live-migrate. CephFS is `ceph` (kernel client) or
# `fuse.ceph-fuse`; GlusterFS mounts through FUSE as `fuse.glusterfs`.
SHARED_FS_TYPES = frozenset({
    "gfs2", "ocfs2", "nfs", "nfs4", "glusterfs", "fuse.glusterfs", "ceph", "fuse.ceph-fuse",
})


def opt_bool(value: str | None) -> bool | None:
    """A Pacemaker boolean, or None when absent or not one of Pacemaker's words."""
    if value is None:
        return None
    v = value.strip().lower()
    if v in TRUE_WORDS:
        return True
    if v in FALSE_WORDS:
        return False
    return None


def to_bool(value: str | None, *, default: bool = False) -> bool:
    b = opt_bool(value)
    return default if b is None else b


def same_value(a: str | None, b: str) -> bool:
    """Two option values Pacemaker reads alike (`yes`, `on`, `true`); only a real difference is drift."""
    if a is None:
        return False
    if a == b:
        return True
    x, y = opt_bool(a), opt_bool(b)
    return x is not None and x == y


_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 0.001, "msec": 0.001, "us": 1e-6, "usec": 1e-6,
          "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0}


def interval_seconds(value: str | None) -> float | None:
    """A Pacemaker interval ("600", "600s", "10min", "1h") in seconds; None if absent or not
    in that form (crm_get_msec() in lib/common/strings.c: a number, then an optional unit)."""
    if value is None:
        return None
    v = value.strip().lower()
    digits = len(v) - len(v.lstrip("0123456789"))
    if digits == 0:
        return None
    unit = v[digits:].strip()
    return int(v[:digits]) * _UNITS[unit] if unit in _UNITS else None


# OCF agents' exit codes (the OCF resource agent API, Pacemaker Explained "OCF Return Codes").
OCF_RC = {0: "ok", 1: "generic error", 2: "invalid parameter", 3: "unimplemented feature",
          4: "insufficient privileges", 5: "not installed", 6: "not configured",
          7: "not running", 8: "running promoted", 9: "failed promoted"}


def ocf_rc(rc: int) -> str:
    return OCF_RC.get(rc, f"rc {rc}")

# The meta attribute on a VM resource kvm-warden holds unmanaged while it enrolls it
# (`enroll`) or takes it out of the cluster (`retire`), reconcilers/enroll.py. Pacemaker passes
# unknown meta attributes to the agent and otherwise ignores them.
HOLD_MARK = "kvm-warden-hold"
# The cluster_property_set kvm-warden adds while a retired VM's resource is an orphan that
# must keep running (stop-orphan-resources=false), and removes once the orphan is forgotten.
ORPHANS_SET = "warden-keep-orphans"


# Cluster options Pacemaker 3.0.2 renamed: the older name stays a deprecated alias, and when
# both are set the new one wins. Older Pacemaker knows only the old name.
RENAMED = {"stonith-enabled": "fencing-enabled", "stonith-action": "fencing-action",
           "stonith-timeout": "fencing-timeout", "stop-orphan-resources": "stop-removed-resources"}
OLDER = {new: old for old, new in RENAMED.items()}


def property_names(name: str) -> tuple[str, str | None]:
    """(the name every Pacemaker understands, 3.0.2's name or None), from either name."""
    old = OLDER.get(name, name)
    return old, RENAMED.get(old)


def effective_property(properties: Mapping[str, str], name: str) -> str | None:
    """The value Pacemaker uses: 3.0.2's name first, then the older one."""
    old, new = property_names(name)
    if new is not None and new in properties:
        return properties[new]
    return properties.get(old)


def fencing_enabled(properties: Mapping[str, str]) -> bool:
    """Whether the cluster fences (fencing-enabled, or stonith-enabled; default true)."""
    return to_bool(effective_property(properties, "stonith-enabled"), default=True)
