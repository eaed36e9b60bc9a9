"""`kvm-warden` entry point: parses arguments and calls one function per command.
    from controller.bus.keys import generate_keys

Errors a user can act on (bad files, failing tools) are printed as one line and exit 1;
tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from controller.model.errors import DesiredStateError, WardenError
from controller.version import describe as describe_version


def _cmd_observe(args: argparse.Namespace) -> int:
    from controller.app.observe import observe_document, observe_summary
    from probes.pacemaker.crm_mon import parse_crm_mon
    from probes.pacemaker.read import read_both, read_status

    cib = None
    if args.crm_mon_xml:
        try:
            with open(args.crm_mon_xml, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise WardenError(f"{args.crm_mon_xml}: cannot read: {exc.strerror}") from None
        status = parse_crm_mon(data, source=args.crm_mon_xml)
    elif args.cib:
        status, cib = read_both(args.cib)
    else:
        status = read_status()
    if args.json:
        json.dump(observe_document(status, cib), sys.stdout, separators=(",", ":"))
        sys.stdout.write("\n")
    else:
        print(observe_summary(status, cib))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from controller.model.desired import load_desired

    try:
        desired = load_desired(args.file)
    except DesiredStateError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1
    print(
        f"{args.file}: valid (version {desired.version}: {len(desired.vms)} VMs, "
        f"{len(desired.storage)} storage, {len(desired.cluster.properties)} properties, "
        f"dry_run={'on' if desired.policy.dry_run else 'off'})"
    )
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from controller.model.desired import desired_json_schema

    json.dump(desired_json_schema(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from controller import logs
    from controller.app.plan import plan_command

    logs.configure(sys.stderr, logging.WARNING)  # stdout carries the plan (or its JSON) only
    return plan_command(
        desired_path=args.desired, cib_file=args.cib, as_json=args.json, apply=args.apply,
        state_dir=args.state_dir, allow_disruption=args.allow_disruption,
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from controller.app.run import RunOptions, run_service

    return run_service(RunOptions(
        desired_path=args.desired, cib_file=args.cib, libvirt_uri=args.libvirt_uri,
        http_port=args.http_port, http_host=args.http_host, simulate=args.simulate,
        passes=args.passes, agents=list(args.agent),
        local_agent=args.command == "run" and not args.no_agent, alerts=args.alerts,
        keys=args.keys, allow=args.allow, insecure=args.insecure, node=args.node,
        watch_endpoint=getattr(args, "watch_endpoint", None), state_dir=args.state_dir,
        web_config=args.web_config))


def _cmd_agent(args: argparse.Namespace) -> int:
    import socket

    from controller.app.node import run_agent

    return run_agent(node=args.node or socket.gethostname(), bind=args.bind,
                     libvirt_uri=None if args.libvirt_uri == "none" else args.libvirt_uri,
                     corosync=not args.no_corosync, keys=args.keys, allow=args.allow,
                     insecure=args.insecure, alerts=args.alerts,
                     config_dirs=tuple(args.config_dir))


def _cmd_watch(args: argparse.Namespace) -> int:
    from controller.app.node import run_watch

    agents = list(args.agent)
    insecure = args.insecure
    if args.controller:
        agents.append(args.controller)  # unnamed: it speaks for whatever node runs it
        # `run` publishes its local agent on loopback without CURVE (local users only).
        insecure = insecure or args.controller.startswith(("tcp://127.", "ipc://"))
    if not agents and not args.alerts:
        raise WardenError("watch needs --controller ENDPOINT, --agent NAME=ENDPOINT or --alerts")
    return run_watch(agents, args.keys, args.allow, insecure, args.count, args.alerts)


def _cmd_keys(args: argparse.Namespace) -> int:
    from pathlib import Path

    from controller.bus.keys import generate_keys

    public, secret = generate_keys(Path(args.dir), args.name, force=args.force, owner=args.owner)
    print(f"public key: {public}  (copy into the peers' allow-list directories)")
    print(f"secret key: {secret}  (keep on this host only, mode 0600)")
    return 0


def _bus_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keys", metavar="SECRET_FILE", help="this side's CURVE secret key file")
    p.add_argument("--allow", metavar="DIR", help="directory of the peers' public keys allowed")
    p.add_argument("--insecure", action="store_true",
                   help="plain tcp without CURVE (labs only; inproc never needs keys)")


def _state_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", metavar="DIR",
                   help="where the ledger (rate limits, cooldowns, breakers), the audit log and "
                   "the writer lock are kept: default /var/lib/kvm-warden; with --cib FILE, "
                   "FILE.kvm-warden beside it (plan --apply --cib: a private one for the run); "
                   "--simulate: its work directory. On shared storage when the controller runs "
                   "as a cluster resource: plan --apply must be given the controller's")


def _cmd_export(args: argparse.Namespace) -> int:
    from controller.app.export import export_command

    libvirt = {}
    for spec in args.libvirt:
        node, sep, uri = spec.partition("=")
        if not sep or not node or not uri:
            raise WardenError(f"--libvirt {spec!r}: expected NODE=URI, e.g. "
                              "kvm2=qemu+ssh://kvm2/system")
        libvirt[node] = uri
    return export_command(args.cib, args.output, libvirt)


def _cmd_capacity(args: argparse.Namespace) -> int:
    from controller.app.capacity import capacity_command

    return capacity_command(args.cib, args.json, args.tolerate)


def _cmd_audit(args: argparse.Namespace) -> int:
    from controller.app.audit import audit_command

    return audit_command(args.state_dir, args.since, args.vm, args.json)


def _cmd_history(args: argparse.Namespace) -> int:
    from controller.app.history import history_command

    return history_command(args.state_dir, args.vm, args.since, args.json, args.limit)


def _cmd_status(args: argparse.Namespace) -> int:
    from controller.app.status import status_command

    return status_command(url=args.url, desired_path=args.desired, cib_file=args.cib,
                          libvirt_uri=args.libvirt_uri, as_json=args.json, cacert=args.cacert)


class _Defaults(argparse.HelpFormatter):
    """Help that shows an option's default, when it has one its text does not already say."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kvm-warden",
        description="Keeps a Pacemaker/Corosync KVM cluster (GFS2 shared storage) in the state "
        "its operators declared, acting only through Pacemaker.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {describe_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in (_reading_commands, _desired_commands, _status_command, _plan_command,
                   _run_command, _controller_command, _node_commands, _export_command,
                   _record_commands):
        family(sub)
    for command in sub.choices.values():
        command.formatter_class = _Defaults
    return p


def _http_options(p: argparse.ArgumentParser) -> None:
    """The controller's HTTP port (run and controller)."""
    p.add_argument("--http-host", default="127.0.0.1",
                   help="address of the HTTP port; off loopback it needs --web-config")
    p.add_argument("--http-port", type=int, default=9810,
                   help="the HTTP port: metrics, health, status, web view (default %(default)s; "
                   "0: any free port, printed; -1: none)")
    p.add_argument("--web-config", metavar="FILE",
                   help="TLS and basic auth for the HTTP port (Prometheus exporter format: "
                        "tls_server_config, basic_auth_users with bcrypt hashes); required off "
                        "loopback")


def _reading_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """observe and capacity: the cluster as it is."""
    o = sub.add_parser(
        "observe",
        help="print the cluster as kvm-warden observes it",
        description="Read the cluster through crm_mon (live, or a CIB file with CIB_file=, or "
        "saved crm_mon XML) and print it; --json prints the documented observe document.",
    )
    src = o.add_mutually_exclusive_group()
    src.add_argument("--crm-mon-xml", metavar="FILE", help="saved `crm_mon --output-as=xml`")
    src.add_argument("--cib", metavar="FILE", help="a CIB file: runs crm_mon with CIB_file=FILE")
    o.add_argument("--json", action="store_true", help="print the observe JSON document")
    o.set_defaults(func=_cmd_observe)

    cp = sub.add_parser(
        "capacity",
        help="if any one node dies, does every VM have room on the others?",
        description="For each online node, Pacemaker's scheduler (crm_simulate --node-fail) on "
        "the cluster as it is: where its VMs would run, and which would be left stopped. Sizes "
        "and capacity count only when the CIB has them (the desired file's capacity:). Exit 0 "
        "when every VM has room after any one node's loss, 2 when not.",
    )
    cp.add_argument("--cib", metavar="FILE", help="a CIB file instead of the live cluster")
    cp.add_argument("--json", action="store_true", help="one object per node (or group)")
    cp.add_argument("--tolerate", metavar="K", type=int, default=1,
                    help="also every group of K nodes failing at once (N+K; default 1)")
    cp.set_defaults(func=_cmd_capacity)


def _desired_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """validate and schema: the desired file."""
    v = sub.add_parser(
        "validate",
        help="check a desired-state file",
        description="Validate a desired-state YAML file; every problem is printed as "
        "file:line: field: message. Exit 0 when valid, 1 otherwise.",
    )
    v.add_argument("file", help="the desired-state YAML file")
    v.set_defaults(func=_cmd_validate)

    s = sub.add_parser("schema", help="print the desired-state JSON schema")
    s.set_defaults(func=_cmd_schema)


def _status_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """status: the VM overview."""
    st = sub.add_parser(
        "status", help="each VM: node, state, desired placement, drift, console tunnel",
        description="The VM overview. With --url it asks a running controller's /status; "
        "otherwise it reads the cluster itself (crm_mon, or --cib FILE) and, with "
        "--libvirt-uri, this node's consoles.")
    st.add_argument("--url", help="a running controller, e.g. http://127.0.0.1:9810 (behind a "
                    "web configuration: KVM_WARDEN_USER, KVM_WARDEN_PASSWORD and --cacert)")
    st.add_argument("--cacert", metavar="FILE", help="the CA (or certificate) of an https URL")
    st.add_argument("--desired", metavar="FILE",
                    help="a desired-state file: adds the desired placement and the drift")
    st.add_argument("--cib", metavar="FILE", help="read a CIB file (CIB_file=) instead")
    st.add_argument("--libvirt-uri", help="this node's libvirt, for the consoles (VNC ports)")
    st.add_argument("--json", action="store_true", help="print the rows as JSON")
    st.set_defaults(func=_cmd_status)


def _plan_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """plan: what kvm-warden would change."""
    pl = sub.add_parser(
        "plan",
        help="show the changes kvm-warden would make",
        description="Compare the cluster with a desired-state file and print the actions, "
        "grouped by reconciler, with the guard's verdict. Exit 0: nothing to do; 2: changes "
        "pending; 1: error; 3: another writer (a running controller) holds the cluster. "
        "--apply makes the admitted changes (one CIB patch) through the same pass and ledger "
        "as the service.",
    )
    pl.add_argument("--desired", required=True, metavar="FILE", help="the desired-state file")
    pl.add_argument("--cib", metavar="FILE", help="work on a CIB file (CIB_file=), like pcs -f")
    pl.add_argument("--json", action="store_true",
                    help="print the plan document (stdout holds only the JSON)")
    pl.add_argument("--apply", action="store_true", help="apply the admitted actions")
    pl.add_argument("--allow-disruption", action="store_true",
                    help="apply even if Pacemaker would stop, restart or cold-move a running VM")
    _state_option(pl)
    pl.set_defaults(func=_cmd_plan)


def _run_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """run: the whole service in one process."""
    r = sub.add_parser(
        "run",
        help="run the controller (observe, plan, guard, apply, metrics) until Ctrl-C",
        description="Run the reconcile loop. With --simulate (what `make demo` uses) it runs "
        "against an embedded 3-node CIB copied to a work directory, through Pacemaker's real "
        "tools with CIB_file=, and libvirt's test:/// driver.",
    )
    r.add_argument("--desired", metavar="FILE", help="desired-state file (hot reloaded)")
    r.add_argument("--cib", metavar="FILE", help="work on a CIB file instead of the live cluster")
    r.add_argument("--simulate", action="store_true", help="use the embedded simulated cluster")
    r.add_argument("--libvirt-uri", default=None, help="libvirt URI (default: qemu:///system)")
    _http_options(r)
    r.add_argument("--passes", type=int, default=0, help="stop after N passes (0: run forever)")
    r.add_argument("--agent", action="append", default=[], metavar="NAME=ENDPOINT",
                   help="also subscribe to a remote agent (repeatable)")
    r.add_argument("--no-agent", action="store_true",
                   help="do not run the node agent in this process")
    r.add_argument("--node", help="this node's name (default: the host name)")
    r.add_argument("--watch-endpoint", default="ipc:///run/kvm-warden/watch.sock",
                   metavar="ENDPOINT",
                   help="also publish the local agent's events here for `kvm-warden watch "
                   "--controller` (an ipc socket only its owner may use, by default; or "
                   "tcp://127.0.0.1:PORT; '' to disable)")
    _state_option(r)
    r.add_argument("--alerts", default=None, metavar="ENDPOINT",
                   help="receive kvm-warden-alert datagrams here: a socket path or udp://H:P")
    _bus_options(r)
    r.set_defaults(func=_cmd_run)


def _controller_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """controller: the service without a local agent."""
    c = sub.add_parser(
        "controller", help="the controller alone: subscribe to agents, reconcile",
        description="Like run, without a local agent: subscribes to every --agent.")
    c.add_argument("--desired", metavar="FILE", help="desired-state file (hot reloaded)")
    c.add_argument("--cib", metavar="FILE", help="work on a CIB file instead of the live cluster")
    c.add_argument("--agent", action="append", default=[], metavar="NAME=ENDPOINT",
                   help="a node agent to subscribe to (repeat for every node)")
    # No default: each node's agent owns its /run/kvm-warden/alerts.sock and publishes the
    # alerts on the bus; a controller binding it too would take it from the agent.
    c.add_argument("--alerts", default=None, metavar="ENDPOINT",
                   help="also receive Pacemaker alerts here (a unix datagram socket or "
                        "udp://HOST:PORT); normally the agents deliver them (default: none)")
    _http_options(c)
    _state_option(c)
    c.add_argument("--passes", type=int, default=0, help="stop after N passes (0: run forever)")
    _bus_options(c)
    c.set_defaults(func=_cmd_run, simulate=False, libvirt_uri=None, no_agent=True, node=None,
                   watch_endpoint=None)


def _node_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """agent and watch: the bus."""
    a = sub.add_parser(
        "agent", help="the node agent: probes libvirt, corosync and mounts, publishes events",
        description="Publishes typed events (PUB on --bind, snapshots on its port + 1).")
    a.add_argument("--node", help="node name (default: the host name)")
    a.add_argument("--bind", default="tcp://127.0.0.1:9820", metavar="ENDPOINT",
                   help="where the controller subscribes: this node's cluster address")
    a.add_argument("--libvirt-uri", default="qemu:///system", help="'none' to skip libvirt")
    a.add_argument("--no-corosync", action="store_true", help="do not watch corosync quorum")
    a.add_argument("--alerts", metavar="PATH",
                   help="receive this node's Pacemaker alerts here (the kvm-warden-alert "
                        "recipient, e.g. /run/kvm-warden/alerts.sock) and publish them")
    a.add_argument("--config-dir", action="append", default=[], metavar="DIR",
                   help="a shared-storage directory of domain XML files (VirtualDomain's "
                        "config=): their hashes are published for enrollment's checks, and "
                        "enrollment writes a running VM's XML there (repeatable; default: none)")
    _bus_options(a)
    a.set_defaults(func=_cmd_agent)

    w = sub.add_parser(
        "watch", help="print the live event stream as JSON lines",
        description="Subscribe to agents (and/or receive alerts) and print every event, like "
        "`virsh event --loop`.")
    w.add_argument("--controller", metavar="ENDPOINT",
                   help="the events of a `kvm-warden run` (its --watch-endpoint)")
    w.add_argument("--agent", action="append", default=[], metavar="NAME=ENDPOINT",
                   help="an agent to watch (repeatable)")
    w.add_argument("--alerts", metavar="ENDPOINT", help="also receive alerts here (path or udp://)")
    w.add_argument("--count", type=int, default=0, help="exit after N events")
    _bus_options(w)
    w.set_defaults(func=_cmd_watch)


def _export_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """export: adoption of a running cluster."""
    ex = sub.add_parser(
        "export", help="write the desired file of the cluster as it is (adoption)",
        description="Write a desired-state file (v1) from the running cluster (or --cib FILE): "
        "storage from cloned Filesystem resources, every VirtualDomain with the placement its "
        "existing constraints give it. plan with it proposes only missing safety.")
    ex.add_argument("--cib", metavar="FILE", help="read a CIB file (CIB_file=) instead")
    ex.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    ex.add_argument("--libvirt", action="append", default=[], metavar="NODE=URI",
                    help="also list the domains running on NODE's libvirt (e.g. "
                         "kvm2=qemu+ssh://kvm2/system) without a Pacemaker resource, as "
                         "commented enrollment candidates (repeatable)")
    ex.set_defaults(func=_cmd_export)


def _record_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """audit, history and keys: the records and the secrets."""
    au = sub.add_parser(
        "audit", help="the audit trail: every change applied, failed or refused",
        description="Print the audit records of the state directory (the service's and "
        "plan --apply's), oldest first.")
    _state_option(au)
    au.add_argument("--since", metavar="WHEN",
                    help="an ISO time (2026-12-01T10:00) or an age: 30m, 2h, 7d")
    au.add_argument("--vm", metavar="NAME", help="only records about this VM (name or resource)")
    au.add_argument("--json", action="store_true", help="JSON lines, as stored")
    au.set_defaults(func=_cmd_audit)

    hi = sub.add_parser(
        "history", help="what happened to the VMs: lifecycle, migrations, failures, findings",
        description="Print the history database of the state directory (written by the "
        "controller; rows older than history.retention_days are deleted), oldest first.")
    _state_option(hi)
    hi.add_argument("vm", nargs="?", metavar="VM", help="only this VM")
    hi.add_argument("--since", metavar="WHEN",
                    help="an ISO time (2026-12-01T10:00) or an age: 30m, 2h, 7d")
    hi.add_argument("--limit", type=int, default=1000, help="at most this many (the newest)")
    hi.add_argument("--json", action="store_true", help="JSON lines")
    hi.set_defaults(func=_cmd_history)

    k = sub.add_parser("keys", help="CURVE keys for the bus",
                       description="kvm-warden keys generate DIR NAME: writes NAME.key (public) "
                       "and NAME.key_secret.")
    k.add_argument("action", choices=["generate"], help="generate: a new key pair")
    k.add_argument("dir", help="where to write them, e.g. /etc/kvm-warden/keys")
    k.add_argument("name", help="this node's name, or controller")
    k.add_argument("--force", action="store_true", help="replace an existing key pair")
    k.add_argument("--owner", metavar="USER[:GROUP]",
                   help="give the secret key to this user, e.g. kvm-warden, the user the "
                   "packaged services run as (default: whoever runs this)")
    k.set_defaults(func=_cmd_keys)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc: int = args.func(args)
        return rc
    except WardenError as exc:
        print(f"kvm-warden: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `kvm-warden observe --json | head`: the reader went away; say nothing more. Python
        # would otherwise complain again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a process ended by SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
