"""The lab's stand-in for systemd: start an installed unit as its [Service] section says.

These machines have no systemd as PID 1, so `systemctl start` cannot run here. This reads the
unit file the package installed (on the node, in the node's view) and does what systemd does
for the settings kvm-warden's units use, so that a wrong setting fails where it would fail in
production:

- `EnvironmentFile=` (a leading `-`: optional) and `Environment=`; `ExecStart=` expanded as
  systemd.service(5) says: `${VAR}` becomes one word, a word that is exactly `$VAR` is split
  on whitespace (empty: no word at all); the specifier `%H` is the host name;
- `User=`, `Group=`, `SupplementaryGroups=`, `UMask=`, `WorkingDirectory=`;
- `RuntimeDirectory=`, `StateDirectory=`, `LogsDirectory=` (made, given to the user, with their
  `...Mode=`);
- the sandbox, in a mount namespace of the service's own: `ProtectSystem=strict` (every mount
  read-only but the API file systems), `ReadWritePaths=`, `ReadOnlyPaths=`, `PrivateTmp=`,
  `ProtectHome=`, `ProtectKernelTunables=` / `ProtectControlGroups=` (/proc/sys and /sys
  read-only), `NoNewPrivileges=`, an empty `CapabilityBoundingSet=`.

Not applied (said here, not hidden): `PrivateDevices=`, `MemoryDenyWriteExecute=`,
`RestrictAddressFamilies=`, `LockPersonality=`, `RestrictSUIDSGID=`, `ProtectKernelModules=`
(seccomp and device policies systemd sets up itself), and `Restart=`: the lab (or its nemesis)
starts a killed service again itself.

Standard library only: it runs with the node's own python3, inside the node's namespaces.
    python3 lab/unit.py start kvm-warden-agent
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ReadFile = Callable[[str], "str | None"]
UNIT_DIR = Path("/lib/systemd/system")
API_FS = ("/proc", "/sys", "/dev")  # ProtectSystem= leaves these to their own Protect* settings


def parse_unit(text: str) -> dict[str, list[str]]:
    """The [Service] section: each key with its values in order (continuation lines joined).
    An empty assignment resets a list setting, as in systemd."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section != "Service" or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if value == "":
            settings[key] = [""]
        else:
            settings.setdefault(key, []).append(value)
    return settings


def one(settings: dict[str, list[str]], key: str, default: str = "") -> str:
    values = settings.get(key)
    return values[-1] if values else default


def many(settings: dict[str, list[str]], key: str) -> list[str]:
    """A space-separated list setting, all its assignments together ("" resets it)."""
    words: list[str] = []
    for value in settings.get(key, []):
        words = [] if value == "" else words + value.split()
    return words


def yes(settings: dict[str, list[str]], key: str) -> bool:
    return one(settings, key).lower() in ("yes", "true", "1", "on")


def read_environment_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines; comments and blank lines skipped; one level of quotes removed."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def environment(settings: dict[str, list[str]], read: ReadFile) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in settings.get("EnvironmentFile", []):
        optional, path = entry.startswith("-"), entry.lstrip("-")
        text = read(path)
        if text is None:
            if optional:
                continue
            raise SystemExit(f"unit: EnvironmentFile {path} is missing")
        env.update(read_environment_file(text))
    for entry in settings.get("Environment", []):
        for word in shlex.split(entry):
            key, _, value = word.partition("=")
            env[key] = value
    return env


def specifiers(text: str, hostname: str) -> str:
    return re.sub(r"%(.)", lambda m: {"H": hostname, "%": "%"}.get(m.group(1), m.group(0)), text)


def exec_argv(settings: dict[str, list[str]], env: dict[str, str], hostname: str) -> list[str]:
    """ExecStart= as systemd expands it (systemd.service(5), "Command lines")."""
    (line,) = [v for v in settings.get("ExecStart", []) if v] or [""]
    if not line:
        raise SystemExit("unit: no ExecStart=")
    line = line.lstrip("-@:+!")  # prefixes that change how systemd treats the command
    argv: list[str] = []
    for word in shlex.split(specifiers(line, hostname)):
        whole = re.fullmatch(r"\$(\w+)", word)
        if whole:
            argv += env.get(whole.group(1), "").split()
        else:
            argv.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return None


def directories(settings: dict[str, list[str]]) -> list[tuple[str, int]]:
    """The directories systemd makes for the service, with their modes."""
    made = []
    for key, root in (("RuntimeDirectory", "/run"), ("StateDirectory", "/var/lib"),
                      ("LogsDirectory", "/var/log")):
        mode = int(one(settings, f"{key}Mode", "0755"), 8)
        made += [(f"{root}/{name}", mode) for name in many(settings, key)]
    return made


@dataclass
class Plan:
    """Everything needed to start a unit, as plain data (tested without running anything)."""
    argv: list[str]
    user: str
    group: str
    groups: list[str]
    env: dict[str, str]
    dirs: list[tuple[str, int]]
    workdir: str = "/"
    umask: int = 0o022
    strict: bool = False
    writable: list[str] = field(default_factory=list)
    readonly: list[str] = field(default_factory=list)
    private_tmp: bool = False
    protect_home: bool = False
    no_new_privs: bool = False
    no_caps: bool = False


def plan(name: str, read: ReadFile = _read, hostname: str | None = None) -> Plan:
    text = read(str(UNIT_DIR / f"{name}.service"))
    if text is None:
        raise SystemExit(f"unit: {name}.service is not installed in {UNIT_DIR}")
    settings = parse_unit(text)
    env = environment(settings, read)
    user = one(settings, "User", "root")
    group = one(settings, "Group", user)
    dirs = directories(settings)
    private_tmp = yes(settings, "PrivateTmp")
    return Plan(
        argv=exec_argv(settings, env, hostname or socket.gethostname()),
        user=user, group=group, groups=[group, *many(settings, "SupplementaryGroups")],
        env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "LANG": "C.UTF-8", "USER": user, "LOGNAME": user, **env},
        dirs=dirs, workdir=one(settings, "WorkingDirectory", "/"),
        umask=int(one(settings, "UMask", "0022"), 8),
        strict=one(settings, "ProtectSystem") == "strict",
        writable=[p for p, _ in dirs] + many(settings, "ReadWritePaths")
        + (["/tmp", "/var/tmp"] if private_tmp else []),
        readonly=many(settings, "ReadOnlyPaths")
        + (["/proc/sys", "/sys"] if yes(settings, "ProtectKernelTunables") else [])
        + (["/sys/fs/cgroup"] if yes(settings, "ProtectControlGroups") else []),
        private_tmp=private_tmp, protect_home=yes(settings, "ProtectHome"),
        no_new_privs=yes(settings, "NoNewPrivileges"),
        no_caps="CapabilityBoundingSet" in settings
        and many(settings, "CapabilityBoundingSet") == [],
    )


def mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        points.append(point)
    return points


def mode_of(point: str, strict: bool, rw: list[str], ro: list[str]) -> str | None:
    """"ro", "rw" or None (leave it): the most specific configured path wins, as in systemd."""
    best, mode = "", ("ro" if strict else None)
    if strict and any(point == a or point.startswith(a + "/") for a in API_FS):
        mode = None
    for paths, this in ((rw, "rw"), (ro, "ro")):
        for path in paths:
            if (point == path or point.startswith(path.rstrip("/") + "/")) and len(path) >= len(best):
                best, mode = path, this
    return mode


def sandbox(p: Plan) -> None:
    """In the service's own mount namespace: private /tmp, hidden homes, then every mount
    read-only or read-write as the unit says."""
    def mount(*argv: str) -> None:
        subprocess.run(["mount", *argv], check=True)

    if p.private_tmp:
        for d in ("/tmp", "/var/tmp"):
            mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", d)
    if p.protect_home:
        for d in ("/home", "/root", "/run/user"):
            if os.path.isdir(d):
                mount("-t", "tmpfs", "-o", "ro,mode=0755", "tmpfs", d)
    # ReadWritePaths=-/x: a missing path is skipped; the others exist (made by start()).
    rw = [path.lstrip("-") for path in p.writable if os.path.exists(path.lstrip("-"))]
    ro = [path.lstrip("-") for path in p.readonly if os.path.exists(path.lstrip("-"))]
    for path in sorted({*rw, *ro}, key=lambda s: s.count("/")):
        if path not in ("/tmp", "/var/tmp") or not p.private_tmp:
            mount("--bind", path, path)
    for point in mount_points():
        mode = mode_of(point, p.strict, rw, ro)
        if mode is not None:
            # A mount of a read-only file system cannot be made read-write: left as it is.
            subprocess.run(["mount", "-o", f"remount,bind,{mode}", point], check=False,
                           stderr=subprocess.DEVNULL)


def start(name: str) -> None:
    """Make the unit's directories, then run its command in its own mount namespace."""
    p = plan(name)
    try:
        who = pwd.getpwnam(p.user)
        gid = grp.getgrnam(p.group).gr_gid
    except KeyError:
        raise SystemExit(f"unit: {name}: User={p.user} or Group={p.group} does not exist"
                         " on this node") from None
    p.env = {"HOME": who.pw_dir, **p.env}
    for path, mode in p.dirs:
        os.makedirs(path, exist_ok=True)
        os.chown(path, who.pw_uid, gid)
        os.chmod(path, mode)
    os.execvp("unshare", ["unshare", "-m", "--propagation", "private", sys.executable,
                          os.path.abspath(__file__), "inner", json.dumps(asdict(p))])


def inner(p: Plan) -> None:
    sandbox(p)
    os.chdir(p.workdir)
    os.umask(p.umask)
    priv = ["setpriv", f"--reuid={p.user}", f"--regid={p.group}",
            f"--groups={','.join(p.groups)}", "--inh-caps=-all"]
    if p.no_caps:
        priv.append("--bounding-set=-all")
    if p.no_new_privs:
        priv.append("--no-new-privs")
    env = [f"{k}={v}" for k, v in p.env.items()]
    os.execvp("setpriv", [*priv, "env", "-i", *env, *p.argv])


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "start":
        start(argv[1])
    elif len(argv) == 2 and argv[0] == "inner":
        fields = json.loads(argv[1])
        fields["dirs"] = [tuple(d) for d in fields["dirs"]]
        inner(Plan(**fields))
    elif len(argv) == 2 and argv[0] == "plan":
        print(json.dumps(asdict(plan(argv[1])), indent=1))
        return 0
    print("usage: unit.py start|plan UNIT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
