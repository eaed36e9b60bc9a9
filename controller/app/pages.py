"""The pages a browser gets when it cannot have what it asked for (401, 403, 404, 421, 429,
5xx): a real page, with what happened and a way back, instead of a line of text. API clients
(anything not asking for HTML) keep the plain text they can print."""

from __future__ import annotations

from html import escape

from aiohttp import web

TITLES = {401: "Sign in needed", 403: "Not allowed", 404: "Not found", 409: "Changed meanwhile",
          421: "Wrong host", 429: "Too many attempts", 500: "Server error",
          503: "Not available now"}


def wants_html(request: web.Request) -> bool:
    """A browser navigating (not the page's own fetches, not curl, not the API)."""
    if request.path.startswith(("/api/", "/console/", "/metrics", "/healthz", "/readyz")):
        return False
    return "text/html" in request.headers.get("Accept", "")


def error_page(status: int, detail: str) -> str:
    title = TITLES.get(status, "Error")
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>kvm-warden: {status} {escape(title)}</title>"
        "<link rel='stylesheet' href='/static/style.css'>"
        "<link rel='icon' href='/favicon.ico' type='image/svg+xml'></head>"
        f"<body class='error-page' data-status='{status}'><header><h1><a href='/'>kvm-warden</a>"
        "</h1></header><main>"
        f"<h2>{status} &mdash; {escape(title)}</h2><p id='detail'>{escape(detail)}</p>"
        "<p><a href='/'>back to the cluster</a></p></main></body></html>")


def refusal(request: web.Request, status: int, text: str,
            headers: dict[str, str] | None = None) -> web.Response:
    """`text` for API clients, the same words in a page for a browser."""
    if wants_html(request):
        return web.Response(status=status, text=error_page(status, text),
                            content_type="text/html", headers=headers)
    return web.Response(status=status, text=text + "\n", headers=headers)
