"""The console's pages: sign-in, the review screen (htmx swaps the task in place; keys in
``static/console.js``), the lead's view. A page without a session goes to sign-in; a state change
without the session's CSRF token is refused (403) and changes nothing; a reviewer opening a lead
page gets 403."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from streams.console.desk import LabelOutcome, hotkeys
from streams.console.queue import ClaimedTask
from streams.console.web import LOGIN_COOKIE, SESSION_COOKIE, Console, Viewer, guarded

__all__ = ["routes"]


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def _viewer(request: Request) -> Viewer | Response:
    viewer = await _console(request).from_session(request)
    if viewer is None:
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": "/login"})
        return RedirectResponse("/login", status_code=303)
    return viewer


async def _changing(request: Request) -> tuple[Viewer, dict[str, Any]] | Response:
    """The viewer of a state-changing request and its form, or the refusal."""
    got = await _viewer(request)
    if isinstance(got, Response):
        return got
    form = dict(await request.form())
    sent = request.headers.get("x-csrf-token") or form.get("csrf")
    assert got.session is not None
    if not got.session.csrf_ok(sent if isinstance(sent, str) else None):
        return Response("CSRF token missing or wrong", status_code=403)
    return got, form


async def _leading(request: Request) -> tuple[Viewer, dict[str, Any]] | Response:
    """As `_changing`, for leads only (403 for anyone else)."""
    got = await _changing(request)
    if isinstance(got, Response) or got[0].user.is_lead:
        return got
    return _console(request).page("error.html", 403, message="This action is for leads.")


signed_in = guarded(_viewer)  # the handler gets the viewer
changing = guarded(_changing)  # the handler gets (viewer, form), the CSRF token checked
leading = guarded(_leading)  # the same, and the viewer is a lead


async def login_page(request: Request) -> Response:
    console = _console(request)
    token = console.login_token()
    response = console.page("login.html", token=token, error=None)
    console.set_cookie(response, LOGIN_COOKIE, token, max_age=600)
    return response


async def login(request: Request) -> Response:
    console = _console(request)
    form = await request.form()
    name, password = str(form.get("username", "")), str(form.get("password", ""))
    sent, cookie = str(form.get("csrf", "")), request.cookies.get(LOGIN_COOKIE, "")
    if not cookie or sent != cookie:
        return Response("CSRF token missing or wrong", status_code=403)
    address = _address(request)
    if await console.throttle.blocked(name, address):
        console.metrics.logins_refused.labels(why="throttled").inc()
        token = console.login_token()
        error = "Too many attempts: wait a few minutes and try again."
        response = console.page("login.html", 429, token=token, error=error)
        console.set_cookie(response, LOGIN_COOKIE, token, max_age=600)
        return response
    user = await console.users.check_password(name, password)
    if user is None:
        await console.throttle.failed(name, address)
        console.metrics.logins_refused.labels(why="password").inc()
        token = console.login_token()
        response = console.page("login.html", 401, token=token, error="Wrong name or password.")
        console.set_cookie(response, LOGIN_COOKIE, token, max_age=600)
        return response
    await console.throttle.succeeded(name, address)
    old = await console.sessions.get(request.cookies.get(SESSION_COOKIE))
    if old is not None:
        await console.sessions.end(old)  # a new session id at every sign-in
    session = await console.sessions.create(user.name)
    await console.audit.append(user.name, "login", user.name, now=console.clock())
    home = RedirectResponse("/lead" if user.is_lead else "/review", status_code=303)
    console.set_cookie(home, SESSION_COOKIE, session.session_id, console.sessions.ttl_s)
    home.delete_cookie(LOGIN_COOKIE, path="/")
    return home


@changing
async def logout(request: Request, got: tuple[Viewer, dict[str, Any]]) -> Response:
    viewer, _ = got
    assert viewer.session is not None
    await _console(request).sessions.end(viewer.session)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def _task_context(
    console: Console, viewer: Viewer, task: ClaimedTask | None, flash: str | None
) -> dict[str, Any]:
    context: dict[str, Any] = {"viewer": viewer, "task": task, "flash": flash}
    context["excluded"] = task is None and await console.desk.excluded(viewer.user.name)
    assert viewer.session is not None
    context["csrf"] = viewer.session.csrf
    if task is None:
        return context
    r = task.request
    shown = await console.desk.policies.shown(r.policy_version)
    wanted = [e.item_id for e in r.evidence] + ([r.pair_item_id] if r.pair_item_id else [])
    texts = {i: item.text for i, item in (await console.labels.reviewed_items(wanted)).items()}
    if r.pair_item_id and r.pair_item_id not in texts:  # the partner's own request, if queued
        partner = await console.desk.queue.request(r.policy_version, r.pair_item_id)
        if partner is not None:
            texts[r.pair_item_id] = partner.text
    context.update(
        request=r,
        policy=shown,
        keys=hotkeys([c.name for c in shown.categories], console.desk.keys),
        partner=(r.pair_item_id, texts.get(r.pair_item_id or "", "")) if r.pair_item_id else None,
        evidence=[(e, texts.get(e.item_id, "")) for e in r.evidence],
        show_score=console.show_score or viewer.user.is_lead,
    )
    return context


@signed_in
async def review_page(request: Request, got: Viewer) -> Response:
    console = _console(request)
    task = await console.desk.next(got.user.name)
    return console.page("review.html", **await _task_context(console, got, task, None))


async def _next(request: Request, viewer: Viewer, flash: str | None, status: int = 200) -> Response:
    console = _console(request)
    task = await console.desk.next(viewer.user.name)
    context = await _task_context(console, viewer, task, flash)
    if not request.headers.get("hx-request"):
        return RedirectResponse("/review", status_code=303)
    return console.page("_task.html", status, **context)


@changing
async def label(request: Request, got: tuple[Viewer, dict[str, Any]]) -> Response:
    viewer, form = got
    item, answer = str(form.get("item_id", "")), str(form.get("label", ""))
    console = _console(request)
    outcome = await console.desk.label(viewer.user.name, item, answer)
    if outcome is LabelOutcome.ACCEPTED:
        policy = await console.desk.policies.active_version()
        others = await console.others(viewer.user.name, policy, item)
        said = "; ".join(f"{r} said {label}" for r, label in sorted(others.items()))
        flash = f"Labelled {answer}. Press u to undo." + (f" Others: {said}." if said else "")
        return await _next(request, viewer, flash)
    if outcome is LabelOutcome.UNKNOWN_LABEL:
        return await _next(request, viewer, f"Unknown label {answer!r}: not saved.", 422)
    return await _next(request, viewer, "That task is no longer yours (lease over or answered).")


@changing
async def skip(request: Request, got: tuple[Viewer, dict[str, Any]]) -> Response:
    viewer, form = got
    await _console(request).desk.skip(viewer.user.name, str(form.get("item_id", "")))
    return await _next(request, viewer, "Skipped.")


@changing
async def undo(request: Request, got: tuple[Viewer, dict[str, Any]]) -> Response:
    viewer, _ = got
    undone = await _console(request).desk.undo(viewer.user.name)
    flash = (
        "Undone: label it again."
        if undone
        else "Nothing to undo (labels are sent after a few seconds)."
    )
    return await _next(request, viewer, flash)


@signed_in
async def lead_page(request: Request, got: Viewer) -> Response:
    console = _console(request)
    if not got.user.is_lead:
        return console.page("error.html", 403, message="This page is for leads.")
    stats = await console.lead_stats()
    assert got.session is not None
    reveal = await console.reveal()
    return console.page("lead.html", viewer=got, stats=stats, csrf=got.session.csrf, reveal=reveal)


@leading
async def lead_clear(request: Request, got: tuple[Viewer, dict[str, Any]]) -> Response:
    viewer, form = got
    console = _console(request)
    reviewer = str(form.get("reviewer", ""))
    if reviewer not in await console.labels.registered():
        return console.page("error.html", 404, message="No such reviewer.")
    await console.labels.clear(reviewer)
    await console.audit.append(viewer.user.name, "clear_exclusion", reviewer, now=console.clock())
    return RedirectResponse("/lead", status_code=303)


@leading
async def lead_reveal(request: Request, got: tuple[Viewer, dict[str, Any]]) -> Response:
    viewer, form = got
    console = _console(request)
    on = form.get("reveal") == "on"
    await console.set_reveal(on)
    await console.audit.append(
        viewer.user.name, "set_reveal", "reviewers", now=console.clock(), detail=str(on).lower()
    )
    return RedirectResponse("/lead", status_code=303)


async def home(request: Request) -> Response:
    return RedirectResponse("/review", status_code=303)


async def favicon(request: Request) -> Response:
    return Response(status_code=204)


routes: list[tuple[str, Any, list[str]]] = [
    ("/", home, ["GET"]),
    ("/favicon.ico", favicon, ["GET"]),
    ("/login", login_page, ["GET"]),
    ("/login", login, ["POST"]),
    ("/logout", logout, ["POST"]),
    ("/review", review_page, ["GET"]),
    ("/review/label", label, ["POST"]),
    ("/review/skip", skip, ["POST"]),
    ("/review/undo", undo, ["POST"]),
    ("/lead", lead_page, ["GET"]),
    ("/lead/clear", lead_clear, ["POST"]),
    ("/lead/reveal", lead_reveal, ["POST"]),
]
