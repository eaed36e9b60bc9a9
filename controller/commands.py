"""The one place that runs external programs: argument lists, a timeout on every call, stderr
kept for errors.

Never through a shell: every argument that comes from a file or the cluster is passed as one
argv element, and names are validated (controller.model.names) before they get here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controller.model.errors import ToolError

DEFAULT_TIMEOUT = 30.0
Process = subprocess.Popen  # what start() and stream() return, for callers' annotations


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: str


# Pacemaker's, corosync's and libvirt's tools live in /usr/sbin, which a login PATH of a user
# other than root lacks (the HA controller runs as its own user: `su -` gives it
# /usr/local/bin:/usr/bin:/bin): they are looked for there too.
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def _resolve(argv: Sequence[str]) -> list[str]:
    args = list(argv)
    if args and "/" not in args[0]:
        path = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN])
        found = shutil.which(args[0], path=path)
        if found:
            args[0] = found
    return args


def tool_env(cib_file: str | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a Pacemaker tool; `CIB_file` makes it work on a file, offline."""
    env = dict(os.environ)
    env.pop("CIB_file", None)
    if cib_file is not None:
        env["CIB_file"] = cib_file
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    input: bytes | None = None,
    ok_codes: Sequence[int] = (0,),
) -> Completed:
    """Run a command and return its output; raise ToolError on timeout or an unexpected code."""
    args = tuple(argv)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            _resolve(args),
            input=input,
            capture_output=True,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise ToolError(args, "not installed (command not found)") from None
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        raise ToolError(args, f"timed out after {timeout:g} s (killed)", stderr=err,
                        timed_out=True) from None
    except OSError as exc:
        raise ToolError(args, f"could not start: {exc}") from None
    finally:
        _observe_duration(args, time.monotonic() - started)
    stderr = proc.stderr.decode(errors="replace")
    if proc.returncode not in ok_codes:
        raise ToolError(
            args, f"exited with status {proc.returncode}", returncode=proc.returncode, stderr=stderr
        )
    return Completed(args, proc.returncode, proc.stdout, stderr)


def _observe_duration(args: tuple[str, ...], seconds: float) -> None:
    from controller import metrics  # lazy: keeps `kvm-warden validate` free of the registry

    tool = args[0].rsplit("/", 1)[-1] if args else "?"
    metrics.SUBPROCESS_DURATION.labels(tool=tool).observe(seconds)


def start(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a command whose output is collected later with `finish` (to overlap work)."""
    try:
        return subprocess.Popen(
            _resolve(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
        )
    except FileNotFoundError:
        raise ToolError(tuple(argv), "not installed (command not found)") from None
    except OSError as exc:
        raise ToolError(tuple(argv), f"could not start: {exc}") from None


def stream(argv: Sequence[str], *, env: Mapping[str, str] | None = None
           ) -> subprocess.Popen[str]:
    """Start a long-running watcher whose stdout is read line by line as it comes (e.g.
    `corosync-quorumtool -m`); stderr is discarded. The caller kills it (`proc.kill()`)."""
    try:
        return subprocess.Popen(_resolve(argv), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, env=dict(env) if env is not None else None)
    except FileNotFoundError:
        raise ToolError(tuple(argv), "not installed (command not found)") from None
    except OSError as exc:
        raise ToolError(tuple(argv), f"could not start: {exc}") from None


def finish(
    proc: subprocess.Popen[bytes], *, timeout: float = DEFAULT_TIMEOUT, ok_codes: Sequence[int] = (0,)
) -> Completed:
    args = tuple(str(a) for a in proc.args)  # type: ignore[union-attr]
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise ToolError(args, f"timed out after {timeout:g} s (killed)", timed_out=True) from None
    stderr = err.decode(errors="replace")
    if proc.returncode not in ok_codes:
        raise ToolError(
            args, f"exited with status {proc.returncode}", returncode=proc.returncode, stderr=stderr
        )
    return Completed(args, proc.returncode, out, stderr)
