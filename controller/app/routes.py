"""Every route of the HTTP port, in one table with the role it needs, and their handlers.

Handlers read held state only (the controller's published view, the web view's cached JSON):
never a crm_mon per request. Roles: `open` (liveness, no login), `viewer` (see everything),
`operator` (open consoles), `ticket` (the console WebSocket: its single-use ticket, minted for
an operator, is the credential).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from controller import metrics
from controller.app.edits import Edit, Stale
from controller.app.limits import Limits
from controller.app.pages import refusal
from controller.app.policy import CSRF_HEADER, ROLE, USER, Policy, Route
from controller.app.web import Busy
from controller.model.errors import WardenError
from controller.model.overview import StatusDoc

if TYPE_CHECKING:
    from controller.app.web import WebView

WEB_DIR = Path(__file__).resolve().parent / "web"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
# Every script, style sheet and image of web/ under /static/ (a page's HTML has its route):
# adding a page's script is adding its file.
STATIC = {p.name: STATIC_TYPES[p.suffix] for p in sorted(WEB_DIR.iterdir())
          if p.suffix in STATIC_TYPES}
NOVNC_DIR = Path("/usr/share/novnc")  # Debian's novnc package
NOVNC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
               ".png": "image/png", ".html": "text/html; charset=utf-8"}
NAME = r"{name:[A-Za-z0-9_.-]{1,64}}"
KEEPALIVE_SECONDS = 15.0
JSON = "application/json"


def _json(status: int, doc: object) -> web.Response:
    return web.Response(status=status, body=json.dumps(doc).encode() + b"\n", content_type=JSON)


HISTORY_PAGE = 1000  # events per /api/history page at most
EDIT_WAIT_SECONDS = 30.0  # a review waits this long for its turn, then 503


async def _body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; ValueError for anything else -- nesting too deep for the
    parser included (a RecursionError would be a 500)."""
    raw = await request.read()
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise ValueError("the body is not a JSON object")
    return doc


@dataclass
class Handlers:
    status: Callable[[], StatusDoc]
    ready: Callable[[], tuple[bool, str]]
    view: WebView | None
    policy: Policy
    limits: Limits
    stopping: threading.Event = field(default_factory=threading.Event)
    _streams: dict[str, int] = field(default_factory=dict)  # user -> open event streams
    _changed: asyncio.Event = field(default_factory=asyncio.Event)  # replaced on every pass
    # Reviews and confirms of the desired file, one at a time (each runs the scheduler), in
    # the order they came (asyncio's lock is first come, first served): a second operator
    # waits their turn instead of a 503 while a first one reviews again and again.
    _edits: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def _edit_turn(self, fn: Callable[..., dict[str, Any]], *args: object
                         ) -> dict[str, Any]:
        try:
            await asyncio.wait_for(self._edits.acquire(), EDIT_WAIT_SECONDS)
        except TimeoutError:
            raise Busy(f"other reviews have been computed for {EDIT_WAIT_SECONDS:.0f} s: "
                       "try again in a moment") from None
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        finally:
            self._edits.release()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event streams hear of every pass (called from the loop's thread)."""
        def tell() -> None:
            loop.call_soon_threadsafe(self._passed)

        if self.view is not None:
            self.view.listeners.append(tell)

    def _passed(self) -> None:
        old, self._changed = self._changed, asyncio.Event()
        old.set()

    # -- open ----------------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        dead = metrics.dead_threads()
        if dead:
            return web.Response(status=503, text=f"dead threads: {', '.join(dead)}\n")
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        ok, why = self.ready()
        return web.Response(status=200 if ok else 503, text=why + "\n")

    # -- viewer --------------------------------------------------------------------------------
    async def metrics(self, request: web.Request) -> web.Response:
        body = await asyncio.get_running_loop().run_in_executor(None, metrics.render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status_doc(self, request: web.Request) -> web.Response:
        accept = request.headers.get("Accept", "")
        if "text/html" in accept and "application/json" not in accept:
            return await self.status_page(request)
        body = msgspec.json.format(msgspec.json.encode(self.status()), indent=1)
        return web.Response(body=body, content_type=JSON)

    async def status_page(self, request: web.Request) -> web.Response:
        """The old status page is the web view now: one place, one look."""
        raise web.HTTPMovedPermanently("/")

    async def index(self, request: web.Request) -> web.Response:
        self._view()
        return self._file("index.html", "text/html")

    async def vm_page(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        view = self._view()
        # before the first pass nothing is known yet: the page loads and says what it finds
        if view.controller.last is not None and not view.knows(name):
            return refusal(request, 404, f"no VM named {name} (it may have been retired)")
        return self._file("vm.html", "text/html")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["file"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return self._file(name, STATIC[name])

    async def favicon(self, request: web.Request) -> web.Response:
        """What a browser asks for on its own, before any page names its icon."""
        return self._file("favicon.svg", STATIC["favicon.svg"])

    async def novnc(self, request: web.Request) -> web.Response:
        """noVNC's files from Debian's package: only below its directory, known types."""
        try:
            target = (NOVNC_DIR / request.match_info["path"]).resolve()
        except (OSError, ValueError):
            target = NOVNC_DIR
        ctype = NOVNC_TYPES.get(target.suffix)
        if ctype is None or not target.is_relative_to(NOVNC_DIR) or not target.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=target.read_bytes(), headers={"Content-Type": ctype})

    def _file(self, name: str, ctype: str) -> web.Response:
        charset = "; charset=utf-8" if ctype.startswith("text/html") else ""
        return web.Response(body=(WEB_DIR / name).read_bytes(),
                            headers={"Content-Type": ctype + charset})

    def _view(self) -> WebView:
        if self.view is None:
            raise web.HTTPNotFound()
        return self.view

    async def session(self, request: web.Request) -> web.Response:
        """Who the page is, and the token its state-changing requests carry."""
        user = request[USER]
        return _json(200, {"user": user, "role": request[ROLE],
                           "csrf": self.policy.csrf_token(user), "csrf_header": CSRF_HEADER})

    async def vms(self, request: web.Request) -> web.Response:
        return web.Response(body=self._view().vms_json(), content_type=JSON)

    async def vm(self, request: web.Request) -> web.Response:
        detail = self._view().vm_detail(request.match_info["name"])
        if detail is None:
            return _json(404, {"error": "no such VM"})
        return _json(200, detail)

    async def vm_scores(self, request: web.Request) -> web.Response:
        view = self._view()
        try:  # crm_simulate: off the event loop
            doc = await asyncio.get_running_loop().run_in_executor(
                None, view.scores, request.match_info["name"])
        except (WardenError, OSError) as exc:
            return _json(503, {"error": f"cannot compute the scores: {exc}"})
        if doc is None:
            return _json(404, {"error": "no such VM"})
        return _json(200, doc)

    async def history(self, request: web.Request) -> web.Response:
        """A page of the history (newest first as pages go, oldest first within one); the
        query and its encoding run off the event loop (a viewer must not stall the port)."""
        q = request.query
        try:
            since = float(q["since"]) if "since" in q else None
            before = float(q["before"]) if "before" in q else None
            limit = int(q.get("limit", str(HISTORY_PAGE)))
        except ValueError:
            return _json(400, {"error": "since, before: epoch seconds; limit: an integer"})
        if not 1 <= limit <= HISTORY_PAGE:
            return _json(400, {"error": f"limit: 1 to {HISTORY_PAGE} events a page (page "
                                        "back with before=)"})
        body = await asyncio.get_running_loop().run_in_executor(
            None, self._view().history_json, q.get("vm"), since, limit, before)
        return web.Response(body=body, content_type=JSON)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: `update` with the pass version whenever a pass ends. Bounded in
        number (all users, and per user); a reader that stops reading is dropped."""
        view = self._view()
        user = request[USER]
        total = sum(self._streams.values())
        if total >= self.limits.max_streams or \
                self._streams.get(user, 0) >= self.limits.streams_per_user:
            return web.Response(status=503, text="too many open event streams\n")
        self._streams[user] = self._streams.get(user, 0) + 1
        # A stream outlives the request deadline: its slot is claimed (bounded per user, so
        # anonymous loopback viewers hold at most streams_per_user of them).
        self.policy.guard.claim(request.transport)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store"})
        try:
            await resp.prepare(request)
            seen = -1
            while not self.stopping.is_set():
                changed = self._changed  # grabbed before reading the version: no lost wake-up
                version = view.version
                if version == seen:
                    try:
                        await asyncio.wait_for(changed.wait(), KEEPALIVE_SECONDS)
                        continue
                    except TimeoutError:
                        chunk = b": keepalive\n\n"
                else:
                    chunk, seen = f"event: update\ndata: {version}\n\n".encode(), version
                await asyncio.wait_for(resp.write(chunk), self.limits.stream_write_seconds)
        except (ConnectionError, TimeoutError, asyncio.CancelledError):
            pass  # the page went away or stopped reading
        finally:
            self._streams[user] -= 1
        return resp

    # -- operator -------------------------------------------------------------------------------
    async def console_ticket(self, request: web.Request) -> web.Response:
        view = self._view()
        broker = view.broker
        if broker is None or not view.console:
            return _json(403, {"error": "console unavailable: " + (
                view.console_reason or "the controller has no console relay")})
        try:
            token, node = broker.ticket(request.match_info["name"], request[USER])
        except LookupError as exc:
            return _json(409, {"error": str(exc)})
        return _json(200, {"ticket": token, "node": node})

    async def edit_review(self, request: web.Request) -> web.Response:
        """What an action would change: the diff of the desired file, its verdict, the plan
        and Pacemaker's predicted transition. Nothing is written."""
        view = self._view()
        try:
            body = await _body(request)
            e = msgspec.convert(body.get("edit"), Edit)
            doc = await self._edit_turn(view.review, e, request[USER])
        except (ValueError, TypeError, AttributeError, msgspec.ValidationError) as exc:
            return _json(400, {"error": f"not an edit: {exc}"})
        except Busy as exc:
            return _json(503, {"error": str(exc)})
        except (WardenError, OSError) as exc:
            return _json(409, {"error": str(exc)})
        return _json(200, doc)

    async def edit_confirm(self, request: web.Request) -> web.Response:
        """Write what a review showed, by its id only: refused (409, review again) if the
        review is unknown, used, expired or another user's, or the file or the CIB's
        configuration changed since."""
        view = self._view()
        try:
            body = await _body(request)
            review_id = body["review_id"]
            if not isinstance(review_id, str):
                raise TypeError("review_id is not a string")
            doc = await self._edit_turn(view.confirm, review_id, request[USER])
        except (ValueError, TypeError, KeyError, IndexError, AttributeError,
                msgspec.ValidationError) as exc:
            return _json(400, {"error": f"not a reviewed edit: {exc}"})
        except Busy as exc:
            return _json(503, {"error": str(exc)})
        except Stale as exc:
            return _json(409, {"error": str(exc), "stale": True})
        except (WardenError, OSError) as exc:
            return _json(409, {"error": str(exc)})
        return _json(200, doc)

    async def console_last(self, request: web.Request) -> web.Response:
        """Why this user's last console attempt on the VM ended (the page says it)."""
        broker = self._view().broker
        name = request.match_info["name"]
        return _json(200, {"last": broker.last_reason(request[USER], name)
                           if broker is not None else ""})

    # -- ticket ---------------------------------------------------------------------------------
    async def console_ws(self, request: web.Request) -> web.StreamResponse:
        """The WebSocket of a console session: the ticket is its authentication."""
        view = self._view()
        broker = view.broker
        ticket = broker.redeem(request.query.get("ticket", ""), request.match_info["name"]) \
            if broker is not None and view.console else None
        if broker is None or ticket is None:
            return web.Response(status=403, text="console: no valid ticket\n")
        self.policy.guard.claim(request.transport)  # a console: an operator's, by its ticket
        return await broker.serve(request, ticket)


def routes(h: Handlers) -> list[Route]:
    return [
        Route("GET", "/healthz", h.healthz, "open"),
        Route("GET", "/readyz", h.readyz, "open"),
        Route("GET", "/metrics", h.metrics, "viewer"),
        Route("GET", "/status", h.status_doc, "viewer"),
        Route("GET", "/status.html", h.status_page, "viewer"),
        Route("GET", "/", h.index, "viewer"),
        Route("GET", f"/vm/{NAME}", h.vm_page, "viewer"),
        Route("GET", "/static/{file}", h.static, "viewer"),
        Route("GET", "/favicon.ico", h.favicon, "open"),
        Route("GET", "/novnc/{path:.+}", h.novnc, "viewer"),
        Route("GET", "/api/session", h.session, "viewer"),
        Route("GET", "/api/vms", h.vms, "viewer"),
        Route("GET", f"/api/vms/{NAME}", h.vm, "viewer"),
        Route("GET", f"/api/vms/{NAME}/scores", h.vm_scores, "viewer"),
        Route("GET", "/api/history", h.history, "viewer"),
        Route("GET", "/api/events", h.events, "viewer"),
        Route("POST", f"/api/vms/{NAME}/console", h.console_ticket, "operator"),
        Route("GET", f"/api/vms/{NAME}/console", h.console_last, "operator"),
        Route("POST", "/api/edits/review", h.edit_review, "operator"),
        Route("POST", "/api/edits/confirm", h.edit_confirm, "operator"),
        Route("GET", f"/console/{NAME}/ws", h.console_ws, "ticket"),
    ]
