"""The console's ASGI app: pages, ``/api/v1``, static files (htmx is vendored in ``static/``:
nothing is fetched at run time), ``/healthz``, ``/readyz`` and ``/metrics``. Built from a
`Console` passed in (`build_app`), never configured at import time. Every response carries a
strict Content Security Policy (scripts from this origin only: text injected into a page could
not run even if it escaped the templates' autoescape)."""

from __future__ import annotations

import json
import time

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streams.console import api, pages
from streams.console.web import HERE, Console

__all__ = ["build_app"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


_SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class _Headers:
    """Security headers on every response, and the request duration by route kind (a plain
    ASGI middleware: Starlette's BaseHTTPMiddleware costs a task per request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        route = (
            "api"
            if path.startswith("/api/")
            else "static"
            if path.startswith("/static/")
            else "page"
        )
        started = time.perf_counter()

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + _SECURITY_HEADERS
                if route != "static":
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        finally:
            console: Console = scope["app"].state.console
            console.metrics.request_seconds.labels(route=route).observe(
                time.perf_counter() - started
            )


async def healthz(request: Request) -> Response:
    """Liveness, as every process answers it (`streams.service.health`): 503 only when review
    requests wait and the feed made no progress within the stuck window."""
    console: Console = request.app.state.console
    status, body = console.health.answer("/healthz")
    return Response(body, status_code=int(status[:3]), media_type="application/json")


async def readyz(request: Request) -> Response:
    """Readiness: the feed holds partitions and Redis answers (without it no page can be served;
    a restart would not bring it back, so liveness does not ask)."""
    console: Console = request.app.state.console
    status, body = console.health.answer("/readyz")
    try:
        await console.redis.ping()
    except Exception as exc:  # whatever redis-py raises for a Redis it cannot use
        answer = json.loads(body)
        if answer["ready"]:
            answer.update(ready=False, reason=f"not ready: Redis: {exc}")
        return JSONResponse(answer, status_code=503)
    return Response(body, status_code=int(status[:3]), media_type="application/json")


async def metrics(request: Request) -> Response:
    console: Console = request.app.state.console
    return Response(generate_latest(console.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def build_app(console: Console) -> Starlette:
    routes: list[Route | Mount] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    for path, endpoint, methods in [*pages.routes, *api.routes]:
        routes.append(Route(path, endpoint, methods=methods))
    app = Starlette(routes=routes, middleware=[Middleware(_Headers)])
    app.state.console = console
    return app
