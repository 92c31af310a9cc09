"""What every console route shares: the `Console` (clients and stores, built once by
`streams.console.serve` and passed in), who is asking (a session cookie for pages, a bearer token
for the API; a disabled user is refused at once because both read the user on every request),
CSRF checks, cookies and the templates (Jinja2 with autoescape on: item text is shown as text)."""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from jinja2 import Environment, FileSystemLoader, select_autoescape
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from adapters.labels.store import LabelStore
from adapters.registry.store import AdapterRegistry
from streams.console.audit import AuditLog
from streams.console.desk import ReviewDesk
from streams.console.lead import LeadStats, Verdicts, lead_stats
from streams.console.metrics import ConsoleMetrics
from streams.console.sessions import Session, SessionStore, Throttle
from streams.console.users import User, UserStore
from streams.service.health import Progress
from streams.service.metrics import Health

__all__ = ["LOGIN_COOKIE", "SESSION_COOKIE", "Console", "Viewer", "guarded", "templates"]

SESSION_COOKIE = "borderline_session"
LOGIN_COOKIE = "borderline_login"
HERE = Path(__file__).resolve().parent


def utc_hour(at: float) -> str:
    """A time as the lead view shows it.

    >>> utc_hour(1_900_000_000.0)
    '2030-03-17 17:46 UTC'
    """
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def utc_time(at: float) -> str:
    """A moment as the lead view's audit log shows it, to the second.

    >>> utc_time(1_900_000_000.4)
    '2030-03-17 17:46:40 UTC'
    """
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["utc_hour"] = utc_hour
    env.filters["utc_time"] = utc_time
    return env


T = TypeVar("T")
Endpoint = Callable[[Request], Awaitable[Response]]


def guarded(
    check: Callable[[Request], Awaitable[T | Response]],
) -> Callable[[Callable[[Request, T], Awaitable[Response]]], Endpoint]:
    """Endpoints behind ``check`` (who is asking, a CSRF token): the handler runs with what
    ``check`` found, or the request gets ``check``'s refusal (a redirect to sign-in, 401, 403)."""

    def wrap(handler: Callable[[Request, T], Awaitable[Response]]) -> Endpoint:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            got = await check(request)
            if isinstance(got, Response):
                return got
            return await handler(request, got)

        return endpoint

    return wrap


@dataclass(frozen=True)
class Viewer:
    user: User
    session: Session | None  # None: a bearer token


@dataclass
class Console:
    redis: Redis
    users: UserStore
    sessions: SessionStore
    throttle: Throttle
    audit: AuditLog
    desk: ReviewDesk
    labels: LabelStore
    registry: AdapterRegistry
    verdicts: Verdicts
    metrics: ConsoleMetrics
    secure_cookies: bool
    show_score: bool
    min_shared: int
    clock: Callable[[], float] = time.time
    env: Environment = field(default_factory=templates)
    # the review-request feed's progress (`streams.console.feed`), behind /healthz and /readyz
    health: Health = field(
        default_factory=lambda: Health(Progress(started_at=time.time(), loaded=True), 300.0)
    )

    # --- who is asking --------------------------------------------------------------------
    async def from_session(self, request: Request) -> Viewer | None:
        session = await self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return None
        user = await self.users.get(session.user)
        if user is None or user.disabled:
            await self.sessions.end(session)
            return None
        return Viewer(user, session)

    async def from_token(self, request: Request) -> Viewer | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        user = await self.users.by_token(token.strip())
        return None if user is None else Viewer(user, None)

    # --- responses ------------------------------------------------------------------------
    def page(self, name: str, status: int = 200, **context: object) -> HTMLResponse:
        return HTMLResponse(self.env.get_template(name).render(**context), status_code=status)

    def set_cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            httponly=True,
            samesite="strict",
            secure=self.secure_cookies,
        )

    # --- what leads see and decide --------------------------------------------------------
    async def lead_stats(self) -> LeadStats:
        """The lead's figures for the active policy (the lead page and ``/api/v1/stats``)."""
        return await lead_stats(
            await self.desk.policies.active_version(),
            now=self.clock(),
            queue=self.desk.queue,
            labels=self.labels,
            registry=self.registry,
            verdicts=self.verdicts,
            outbox=self.desk.outbox,
            audit=self.audit,
            min_shared=self.min_shared,
        )

    async def reveal(self) -> bool:
        """Whether reviewers see the others' labels of an item once they submitted theirs
        (off by default: blind review)."""
        return await self.redis.hget(self.users.keys.options, "reveal") == b"1"

    async def set_reveal(self, on: bool) -> None:
        await self.redis.hset(self.users.keys.options, "reveal", "1" if on else "0")

    async def others(self, reviewer: str, policy: str, item_id: str) -> dict[str, str]:
        """The other reviewers' stored labels of an item, when leads let reviewers see them."""
        if not await self.reveal():
            return {}
        votes = await self.labels.votes(policy, item_id)
        return {r: label for r, label in votes.items() if r != reviewer}

    def login_token(self) -> str:
        return secrets.token_urlsafe(24)
