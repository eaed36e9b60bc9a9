"""One writer per cluster: the lock a writer (the service, `plan --apply`) holds while it may
change the cluster.

A live cluster's writers share a state directory (the ledger's home, on the shared storage when
the controller is a cluster resource), so the lock is a file there; a CIB file is its own
cluster, so its lock lies next to it, whatever state directory a writer uses. The lock is an
`flock` (released by the kernel when its holder dies, SIGKILL included: no stale lock to clear
by hand; GFS2 makes it cluster-wide through DLM, unless mounted with `localflocks`) and the
file names its holder, so a refused writer can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import time
from pathlib import Path

import msgspec

from controller.model.errors import WardenError

LOCK_NAME = "writer.lock"
# The state directory holds the audit trail, the history and the ledger: the service's user
# and its group (the `kvm-warden audit`/`history` readers) only.
STATE_DIR_MODE = 0o750
STATE_FILE_MODE = 0o640


def make_state_dir(path: Path) -> None:
    """Create the state directory (and parents) as 0750; an existing one is left as it is (an
    operator may have chosen otherwise on purpose)."""
    path.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)


class Holder(msgspec.Struct, frozen=True, kw_only=True):
    role: str  # "controller" | "plan --apply"
    pid: int
    host: str
    since: float  # wall clock
    http: str | None = None  # the controller's local HTTP address, when it serves one

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        where = f", HTTP {self.http}" if self.http else ""
        return f"kvm-warden {self.role} (pid {self.pid} on {self.host}, since {when}{where})"


class WriterBusy(WardenError):
    """Another writer holds the cluster's lock."""

    def __init__(self, path: Path, holder: Holder | None):
        self.path, self.holder = path, holder
        who = holder.describe() if holder is not None else "another process"
        super().__init__(f"{who} is this cluster's writer (lock {path}); "
                         "one writer per cluster: stop it first, or let it make the change")


def lock_path(cib_file: str | None, state_dir: str | Path) -> Path:
    """A CIB file's writers lock next to the file; a live cluster's in the shared state dir."""
    if cib_file is not None:
        p = Path(cib_file).resolve()
        return p.with_name(f".{p.name}.kvm-warden.lock")
    return Path(state_dir) / LOCK_NAME


def state_dir_beside(cib_file: str) -> Path:
    """`run --cib FILE` without --state-dir: the file's own state directory, next to it (a CIB
    file is its own cluster; never the production state directory)."""
    p = Path(cib_file).resolve()
    return p.with_name(f"{p.name}.kvm-warden")


def offline_state_dir() -> Path:
    """`plan --apply --cib FILE` without --state-dir: a private, empty ledger (never the
    production state directory), removed by the caller when done."""
    return Path(tempfile.mkdtemp(prefix="kvm-warden-plan-"))


class WriterLock:
    """`with WriterLock(path, role):` -- held until released or the process ends."""

    def __init__(self, path: Path, role: str, http: str | None = None):
        self.path, self.role, self.http = path, role, http
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            make_state_dir(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, STATE_FILE_MODE)
        except OSError as exc:
            raise WardenError(f"cannot open the writer lock {self.path}: {exc.strerror}"
                              ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WriterBusy(self.path, read_holder(self.path)) from None
        me = Holder(role=self.role, pid=os.getpid(), host=socket.gethostname(),
                    since=time.time(), http=self.http)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, msgspec.json.encode(me) + b"\n", 0)
        except OSError:
            pass  # the lock holds without its label; a refused writer then says "another process"
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder(path: Path) -> Holder | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=Holder)
    except (OSError, msgspec.DecodeError):
        return None
