"""The node-side agent: runs the probes and publishes what they see on the bus."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

import zmq

from controller.bus.keys import Curve
from controller.bus.publisher import Publisher
from probes.corosync.quorum import QuorumWatcher
from probes.libvirt.events import LibvirtWatcher
from probes.pacemaker.alerts import AlertReceiver
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


class Agent:
    def __init__(self, cfg: AgentConfig, ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
                 curve: Curve | None = None):
        self.cfg = cfg
        self.ctx = ctx or zmq.Context.instance()
        self.publisher = Publisher(self.ctx, cfg.node, cfg.pub_endpoint, cfg.snapshot_endpoint,
                                   curve)
        self.watchers: list[Any] = []
        if cfg.libvirt_uri:
            self.watchers.append(LibvirtWatcher(cfg.node, cfg.libvirt_uri, self.publisher.publish,
                                                listing_seconds=cfg.listing_seconds))
        if cfg.corosync:
            self.watchers.append(QuorumWatcher(cfg.node, self.publisher.publish))
        if cfg.storage:
            self.watchers.append(MountWatcher(cfg.node, self.publisher.publish))
        self.alerts: AlertReceiver | None = None

    def start(self) -> None:
        for w in self.watchers:
            w.start()
        if self.cfg.alerts:
            self.alerts = AlertReceiver(self.cfg.alerts,
                                        lambda env: self.publisher.publish(env.payload))

    def stop(self) -> None:
        if self.alerts is not None:
            self.alerts.close()
        for w in self.watchers:
            w.stop()
        self.publisher.close()
