"""Issue "Safe by default", 7: one operator could hold all 16 console sessions of a node for
hours. Sessions are limited per user as well (`console.sessions_per_user`)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from controller.app.console import ConsoleBroker, Ticket
from controller.app.webconfig import ConsoleLimits
from controller.model.overview import VmRow

ROW = VmRow(vm="web01", resource="vm-web01", nodes=("kvm1",), state="Started",
            desired_state=None, desired_node=None, drift=(), vnc_port=5901, console=None)


def broker(limit: int) -> ConsoleBroker:
    controller: Any = SimpleNamespace(last_rows=(ROW,))
    return ConsoleBroker(controller=controller, agents={"kvm1": "inproc://unused"}, curve=None,
                         limits=ConsoleLimits(sessions_per_user=limit))


def test_a_user_past_their_sessions_is_refused_and_others_are_not_counted() -> None:
    b = broker(2)
    b._open = {"ops": 2, "other": 1}
    ticket = Ticket(vm="web01", user="ops", expires=time.monotonic() + 30)
    resp = asyncio.run(b.serve(None, ticket))  # type: ignore[arg-type]
    assert resp.status == 429 and b"2 console sessions open already" in resp.body  # type: ignore[attr-defined]
    assert b._open == {"ops": 2, "other": 1}  # a refusal takes no slot
    assert b.last_reason("ops", "web01").endswith("open already")
