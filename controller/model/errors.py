"""One exception type per boundary, each carrying what an operator needs to act."""

from __future__ import annotations

from collections.abc import Sequence


class WardenError(Exception):
    """Base of every error kvm-warden reports to the user without a traceback."""


class ParseError(WardenError):
    """A tool's output or a file is not the document we expect (crm_mon XML, CIB, domain XML)."""

    def __init__(self, message: str, *, source: str | None = None, element: str | None = None):
        self.source = source
        self.element = element
        where = f"{source}: " if source else ""
        what = f"<{element}>: " if element else ""
        super().__init__(f"{where}{what}{message}")


class DesiredStateError(WardenError):
    """A desired-state file was rejected; `problems` holds every `file:line: field: message`."""

    def __init__(self, problems: Sequence[str]):
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class ToolError(WardenError):
    """An external command failed, timed out or could not be started."""

    def __init__(
        self, argv: Sequence[str], message: str, *, returncode: int | None = None, stderr: str = "",
        timed_out: bool = False,
    ):
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        self.timed_out = timed_out  # killed at its timeout (it may succeed given longer)
        tail = stderr.strip().splitlines()[-3:]
        detail = f": {' | '.join(tail)}" if tail else ""
        super().__init__(f"{argv[0]}: {message}{detail}")


class ActuatorError(ToolError):
    """A change to the cluster was refused or failed."""


class BusError(WardenError):
    """A bus frame or an alert datagram that is not a valid message; `reason` labels the metric."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
