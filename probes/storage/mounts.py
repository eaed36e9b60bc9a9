"""GFS2 (and other shared) mounts from /proc/self/mountinfo, DLM lockspaces from `dlm_tool ls`.

This kernel has no gfs2/dlm modules, so on these machines the list of GFS2 mounts is empty and
`dlm_tool` is absent; the parser is tested on mountinfo text in the kernel's format.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from controller import commands
from controller.logs import logger
from controller.model.errors import ToolError
from controller.model.events import Mount, MountsSeen
from controller.model.pcmk import SHARED_FS_TYPES
from controller.threads import Background


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \040 \011 \012 \134 (proc(5)).
    return (field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def parse_mountinfo(text: str, fstypes: frozenset[str] = SHARED_FS_TYPES) -> tuple[Mount, ...]:
    """`36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw` (proc(5))."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lparts, rparts = left.split(), right.split()
        if len(lparts) < 5 or len(rparts) < 2:
            continue
        if rparts[0] in fstypes:
            out.append(Mount(mountpoint=_unescape(lparts[4]), fstype=rparts[0],
                             source=_unescape(rparts[1])))
    return tuple(out)


def parse_dlm_ls(text: str) -> tuple[str, ...]:
    """Lockspace names from `dlm_tool ls` ("name          clvmd" lines)."""
    return tuple(line.split()[1] for line in text.splitlines()
                 if line.startswith("name") and len(line.split()) > 1)


def read_mounts(node: str, mountinfo: Path = Path("/proc/self/mountinfo")) -> MountsSeen:
    try:
        mounts = parse_mountinfo(mountinfo.read_text())
    except OSError:
        mounts = ()
    lockspaces: tuple[str, ...] = ()
    if shutil.which("dlm_tool"):
        try:
            lockspaces = parse_dlm_ls(commands.run(["dlm_tool", "ls"], timeout=10).stdout.decode())
        except ToolError:
            pass
    return MountsSeen(node=node, mounts=mounts, lockspaces=lockspaces)


class MountWatcher:
    def __init__(self, node: str, publish: Callable[[MountsSeen], object], seconds: float = 10.0):
        self.node, self.publish, self.seconds = node, publish, seconds
        self.last: MountsSeen | None = None
        self._bg = Background("storage-probe", self._run)

    @property
    def backgrounds(self) -> tuple[Background, ...]:
        return (self._bg,)

    def start(self) -> None:
        self._bg.start()

    def stop(self) -> None:
        self._bg.stop()

    def _run(self, stopping: threading.Event) -> None:
        while True:
            try:
                seen = read_mounts(self.node)
                if seen != self.last:
                    self.last = seen
                    self.publish(seen)
            except Exception:  # noqa: BLE001 - an odd mount table must not end the probe
                logger(component="storage").exception("mounts_probe_failed")
            if stopping.wait(self.seconds):
                return
