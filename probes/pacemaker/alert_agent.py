"""The Pacemaker alert agent: forwards one alert (CRM_alert_* environment) to the controller.

Install it with `pcs alert create id=kvm-warden path=/path/to/kvm-warden-alert` and
`pcs alert recipient add kvm-warden value=tcp://CONTROLLER:9811` (Pacemaker passes the
recipient's value as CRM_alert_recipient). Pacemaker runs it as hacluster on the node where the
event happened and waits for it, so it never blocks: a 1 s send timeout, no retries, exit 0.
A lost alert only delays the controller until its next crm_mon poll.
"""

from __future__ import annotations

import os
import sys
import time

FIELDS = ("node", "rsc", "task", "rc", "desc", "status", "target_rc", "timestamp")


def main() -> int:
    import zmq

    from controller.events import AlertReceived, encode, envelope

    env = os.environ
    endpoint = env.get("CRM_alert_recipient") or env.get("KVM_WARDEN_ALERTS")
    kind = env.get("CRM_alert_kind")
    if not endpoint or not kind:
        print("kvm-warden-alert: run by Pacemaker as an alert agent (needs CRM_alert_kind and "
              "a recipient value such as tcp://127.0.0.1:9811)", file=sys.stderr)
        return 0
    alert = AlertReceived(
        kind=kind, node=env.get("CRM_alert_node", ""), resource=env.get("CRM_alert_rsc", ""),
        task=env.get("CRM_alert_task", ""), rc=env.get("CRM_alert_rc", ""),
        desc=env.get("CRM_alert_desc", "")[:500], status=env.get("CRM_alert_status", ""),
        target_rc=env.get("CRM_alert_target_rc", ""),
        timestamp=env.get("CRM_alert_timestamp_epoch", str(int(time.time()))),
    )
    seq = int(env.get("CRM_alert_node_sequence", "0") or 0)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.linger = 1000
    sock.sndtimeo = 1000
    sock.sndhwm = 10
    try:
        sock.connect(endpoint)
        sock.send(encode(envelope(f"alert:{alert.node}", seq, alert)))
    except zmq.ZMQError:
        pass  # the controller is down or busy: dropped; its next poll sees the state anyway
    finally:
        sock.close()
        ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
