"""The node-side agent: runs the probes and publishes what they see on the bus."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

import zmq

from controller.bus.console import ConsoleRelay, RequestRefused
from controller.bus.keys import Curve
from controller.bus.publisher import Publisher
from controller.bus.simulate import SimulateResult, encode_result, parse_request
from controller.model import names
from controller.model.errors import WardenError
from controller.model.events import ConfigFilesSeen, DomainSeen
from controller.threads import Component, Lifecycle
from probes.corosync.quorum import QuorumWatcher
from probes.libvirt.events import LibvirtWatcher
from probes.pacemaker.alerts import AlertReceiver
from probes.pacemaker.simulate import local_scheduler, run_pair
from probes.storage.configs import ConfigWatcher, ExportRefused, export_domain_xml
from probes.storage.mounts import MountWatcher


@dataclass
class AgentConfig:
    node: str = field(default_factory=socket.gethostname)
    pub_endpoint: str = "tcp://127.0.0.1:9820"
    snapshot_endpoint: str = "tcp://127.0.0.1:9821"
    libvirt_uri: str | None = "qemu:///system"
    corosync: bool = True
    storage: bool = True
    listing_seconds: float = 30.0
    # Pacemaker runs alert agents on the node where the event happened: each node's agent
    # receives its own node's alerts (a unix socket) and publishes them on the bus.
    alerts: str | None = None
    # The console relay (bus/console.py): the controller reaches this node's guests' VNC
    # (bound to loopback) through here, over CURVE.
    console_endpoint: str | None = None
    # Shared-storage directories of domain XML files (e.g. /kvm/storage/xml): hashed and
    # published for enrollment's checks; the only places an export may write.
    config_dirs: tuple[str, ...] = ()


class Agent:
    def __init__(self, cfg: AgentConfig, ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
                 curve: Curve | None = None):
        self.cfg = cfg
        self.ctx = ctx or zmq.Context.instance()
        self.publisher = Publisher(self.ctx, cfg.node, cfg.pub_endpoint, cfg.snapshot_endpoint,
                                   curve)
        # name -> probe, started in this order (the publisher and relay around them)
        self.watchers: dict[str, Component] = {}
        self._listing: DomainSeen | None = None
        if cfg.libvirt_uri:
            self.watchers["libvirt"] = LibvirtWatcher(cfg.node, cfg.libvirt_uri, self._publish,
                                                      listing_seconds=cfg.listing_seconds)
        if cfg.corosync:
            self.watchers["corosync"] = QuorumWatcher(cfg.node, self.publisher.publish)
        if cfg.storage:
            self.watchers["mounts"] = MountWatcher(cfg.node, self.publisher.publish)
        self.configs: ConfigWatcher | None = None
        if cfg.config_dirs:
            self.configs = ConfigWatcher(cfg.node, cfg.config_dirs, self.publisher.publish)
            self.watchers["configs"] = self.configs
        # Every long-lived part of the agent: started by start(), stopped by stop(), answered
        # for by /healthz.
        self.lifecycle = Lifecycle()
        self.alerts: AlertReceiver | None = None
        self.console = ConsoleRelay(self.ctx, cfg.console_endpoint, curve, self.vnc_ports,
                                    {b"export": self._export, b"simulate": self._simulate}) \
            if cfg.console_endpoint else None

    def _export(self, args: list[bytes]) -> bytes:
        """`export DOMAIN PATH`: write the running domain's XML into a config directory."""
        import libvirt

        if len(args) != 2 or not self.cfg.libvirt_uri:
            raise RequestRefused("export DOMAIN PATH, on an agent with libvirt")
        domain, path = args[0].decode(), args[1].decode()
        try:
            names.domain_name(domain)
            conn = libvirt.open(self.cfg.libvirt_uri)
        except (WardenError, libvirt.libvirtError) as exc:
            raise RequestRefused(str(exc)) from None
        try:
            digest = export_domain_xml(conn, domain, path, self.cfg.config_dirs)
        except (ExportRefused, WardenError, OSError) as exc:
            raise RequestRefused(str(exc)) from None
        finally:
            conn.close()
            if self.configs is not None:
                self.configs.poke()  # written or refused (it exists): publish what is there
        return digest.encode()

    @staticmethod
    def _simulate(args: list[bytes]) -> bytes:
        """`simulate BEFORE AFTER TIMEOUT`: this node's scheduler on the controller's CIB pair
        (a preview by the DC's Pacemaker version while the cluster is mixed)."""
        try:
            before, after, timeout = parse_request(args)
            base, steps = run_pair(before, after, timeout=timeout)
            return encode_result(SimulateResult(base=base, steps=steps,
                                                scheduler=str(local_scheduler())))
        except (WardenError, OSError) as exc:
            raise RequestRefused(str(exc)) from None

    def _publish(self, payload: Any) -> int:
        if isinstance(payload, DomainSeen):
            self._listing = payload
        return self.publisher.publish(payload)

    def vnc_ports(self) -> set[int]:
        """The VNC ports of this node's running guests: the only ports the relay opens."""
        listing = self._listing
        if listing is None or not listing.connected:
            return set()
        return {d.vnc_port for d in listing.domains if d.vnc_port and d.state == "running"
                and (d.vnc_listen or "127.0.0.1") in ("127.0.0.1", "::1", "localhost")}

    def start(self) -> None:
        self.lifecycle.add("publisher", self.publisher)
        if self.configs is None:
            # No XML directory here: say so once (the snapshot keeps it), so the controller
            # knows this node can vouch for no config file rather than waiting to hear.
            self.publisher.publish(ConfigFilesSeen(node=self.cfg.node))
        for name, w in self.watchers.items():
            self.lifecycle.add(name, w)
        if self.cfg.alerts:
            self.alerts = AlertReceiver(self.cfg.alerts,
                                        lambda env: self.publisher.publish(env.payload))
            self.lifecycle.add("alerts", self.alerts)
        if self.console is not None:
            self.lifecycle.add("console-relay", self.console)

    def stop(self) -> None:
        # What the agent owns but start() did not register (a caller that started its relay
        # itself, or never called start()) is closed too: an open socket would keep the
        # ZeroMQ context from terminating.
        unregistered = [p for p in (self.console, self.publisher)
                        if p is not None and not self.lifecycle.holds(p)]
        self.lifecycle.close()  # the relay first, the publisher last
        for part in unregistered:
            part.stop()
