#!/usr/bin/python3
"""kvm-warden's Pacemaker alert agent: forwards one alert to the controller, never blocks.

Pacemaker runs alert agents as `hacluster` on the node where the event happened and waits for
them, so this file is standard-library Python only (it cannot use root's virtualenv) and sends
one JSON datagram without waiting: to a unix datagram socket (recipient value `/run/...sock`)
or over UDP (`udp://HOST:PORT`). If the controller is not listening the alert is dropped; its
next crm_mon poll sees the cluster anyway.

Install (on every node):
  install -m 0755 probes/pacemaker/kvm_warden_alert.py /usr/local/libexec/kvm-warden-alert
  pcs alert create id=kvm-warden path=/usr/local/libexec/kvm-warden-alert
  pcs alert recipient add kvm-warden value=/run/kvm-warden/alerts.sock
"""

import json
import os
import socket
import sys

FIELDS = ("kind", "node", "rsc", "task", "rc", "desc", "status", "target_rc", "interval",
          "timestamp_epoch", "node_sequence", "version", "attribute_name", "attribute_value")
MAX_DATAGRAM = 4096


FIELD_MAX = 200  # characters per field, desc excepted; 14 fields stay well inside a datagram


def message(env):
    """One JSON datagram. Fields are cut, never the document: cut JSON is an alert lost."""
    msg = {f: env.get("CRM_alert_" + f, "")[:FIELD_MAX] for f in FIELDS}
    msg["desc"] = env.get("CRM_alert_desc", "")
    data = json.dumps(msg, separators=(",", ":")).encode()
    while len(data) > MAX_DATAGRAM and msg["desc"]:
        msg["desc"] = msg["desc"][: len(msg["desc"]) - (len(data) - MAX_DATAGRAM) - 16]
        data = json.dumps(msg, separators=(",", ":")).encode()
    return data


def send(recipient, data):
    if recipient.startswith("udp://"):
        host, _, port = recipient[len("udp://"):].rpartition(":")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            s.sendto(data, (host, int(port)))
    else:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            s.sendto(data, recipient)


def main():
    recipient = os.environ.get("CRM_alert_recipient", "")  # noqa: SIM112 - Pacemaker's name
    if not recipient or not os.environ.get("CRM_alert_kind"):  # noqa: SIM112
        sys.stderr.write("kvm-warden-alert: run by Pacemaker as an alert agent\n")
        return 0
    try:
        send(recipient, message(os.environ))
    except (OSError, ValueError):
        pass  # controller down, socket full or a bad recipient: drop, never block Pacemaker
    return 0


if __name__ == "__main__":
    sys.exit(main())
