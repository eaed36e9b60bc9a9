"""Parse and watch `corosync-quorumtool` (-s -p for a snapshot, -m -p for a stream of changes).

`-p` makes the output stable to parse (no padding of the Qdevice column). In monitor mode the
tool prints a whole status block on every change; its stdout is block-buffered into a pipe, so
it runs under `stdbuf -oL` (LAB.md). A missing or dead corosync is a state, "unknown".
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import IO

from controller import commands
from controller.model.errors import ToolError
from controller.model.events import QuorumChanged
from controller.threads import Background

HEADER = "Quorum information"


def parse_quorumtool(text: str, node: str) -> QuorumChanged:
    """One status block of corosync-quorumtool (-s or -m, with -p)."""
    fields: dict[str, str] = {}
    members: list[str] = []
    in_members = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith("Membership information"):
            in_members = True
            continue
        if in_members:
            parts = line.split()
            # "    Nodeid      Votes    Qdevice Name" header, then "1 1 NR node1 (local)"
            if parts and parts[0].isdigit():
                names = [p for p in parts[2:] if p not in ("(local)", "NR", "A,V,NMW", "NA")
                         and not p.startswith(("A,", "NA,"))]
                members.append(names[-1] if names else parts[0])
            continue
        if ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    if "Quorate" not in fields:
        return QuorumChanged(node=node, state="unknown")

    def num(key: str) -> int | None:
        try:
            return int(fields[key].split()[0])
        except (KeyError, ValueError, IndexError):
            return None

    return QuorumChanged(
        node=node, state="ok", quorate=fields["Quorate"].lower().startswith("yes"),
        members=tuple(sorted(members)), expected_votes=num("Expected votes"),
        total_votes=num("Total votes"),
    )


def read_quorum(node: str, prefix: Sequence[str] = (), timeout: float = 10.0) -> QuorumChanged:
    """A snapshot. Exit 2 means "not quorate" and still prints the block."""
    try:
        out = commands.run([*prefix, "corosync-quorumtool", "-s", "-p"], timeout=timeout,
                       ok_codes=(0, 2))
    except ToolError:
        return QuorumChanged(node=node, state="unknown")
    return parse_quorumtool(out.stdout.decode(errors="replace"), node)


def split_blocks(lines: Iterator[str]) -> Iterator[str]:
    block: list[str] = []
    for line in lines:
        if line.startswith(HEADER) and block:
            yield "".join(block)
            block = []
        block.append(line)
        if line.startswith("Membership information"):
            continue
        if not line.strip() and any(b.startswith("Membership information") for b in block):
            yield "".join(block)
            block = []
    if block:
        yield "".join(block)


class QuorumWatcher:
    """Publishes QuorumChanged on every change, and "unknown" while corosync is away."""

    def __init__(self, node: str, publish: Callable[[QuorumChanged], object],
                 prefix: Sequence[str] = (), retry_seconds: float = 2.0,
                 poll_seconds: float = 2.0):
        self.node = node
        self.publish = publish
        self.prefix = list(prefix)
        self.retry_seconds = retry_seconds
        self.poll_seconds = poll_seconds
        self.last: QuorumChanged | None = None
        self._lock = threading.Lock()
        self._proc: commands.Process[str] | None = None
        self._bg = Background("corosync-quorum", lambda _: self._run())
        self._stop = self._bg.stopping

    @property
    def backgrounds(self) -> tuple[Background, ...]:
        return (self._bg,)

    def start(self) -> None:
        self._bg.start()

    def _emit(self, q: QuorumChanged) -> None:
        with self._lock:
            if q == self.last:
                return
            self.last = q
        self.publish(q)

    def _run(self) -> None:
        # `-m` prints a block when membership changes (a node joins or leaves: the fast path),
        # but not when only votequorum changes (`corosync-quorumtool -e`, a qdevice): a cheap
        # `-s` poll covers those, and notices a corosync that died.
        while not self._stop.is_set():
            self._emit(read_quorum(self.node, self.prefix))
            if self.last is not None and self.last.state == "ok":
                follower = threading.Thread(target=self._follow, name="corosync-monitor",
                                            daemon=True)
                follower.start()
                while follower.is_alive() and not self._stop.wait(self.poll_seconds):
                    q = read_quorum(self.node, self.prefix)
                    self._emit(q)
                    if q.state != "ok":
                        break
                if self._proc is not None and self._proc.poll() is None:
                    self._proc.kill()
                follower.join(timeout=5)
            self._stop.wait(self.retry_seconds)

    def _follow(self) -> None:
        try:
            # quorumtool block-buffers into a pipe: stdbuf makes each block arrive as it is made.
            self._proc = commands.stream(
                [*self.prefix, "stdbuf", "-oL", "corosync-quorumtool", "-m", "-p"])
        except ToolError:
            return
        stdout: IO[str] | None = self._proc.stdout
        if stdout is None:
            return
        with stdout:  # closed with the process: a corosync restart must not leak a descriptor
            for block in split_blocks(iter(stdout.readline, "")):
                if self._stop.is_set():
                    break
                q = parse_quorumtool(block, self.node)
                if q.state == "ok":
                    self._emit(q)
            self._proc.wait()
        if not self._stop.is_set():
            self._emit(QuorumChanged(node=self.node, state="unknown"))  # corosync went away

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self._bg.stop()
