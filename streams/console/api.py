"""``/api/v1``: the review desk for tools, as JSON, with bearer tokens (`borderline users token`).
The reviewer is the token's user: a ``reviewer_id`` in a request body is ignored. The OpenAPI
schema is served at ``/api/v1/openapi.json``."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from streams.console.desk import BENIGN, LabelOutcome
from streams.console.web import Console, Viewer, guarded

__all__ = ["OPENAPI", "routes"]


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


async def _viewer(request: Request) -> Viewer | Response:
    viewer = await _console(request).from_token(request)
    if viewer is None:
        return JSONResponse(
            {"error": "a valid bearer token is needed"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return viewer


bearer = guarded(_viewer)  # the handler gets the token's user


@bearer
async def next_task(request: Request, got: Viewer) -> Response:
    console = _console(request)
    task = await console.desk.next(got.user.name)
    if task is None and await console.desk.excluded(got.user.name):
        return JSONResponse({"detail": EXCLUDED}, status_code=403)
    if task is None:
        return Response(status_code=204)
    r = task.request
    shown = await console.desk.policies.shown(r.policy_version)
    body: dict[str, Any] = {
        "item_id": r.item_id,
        "request_id": r.request_id,
        "policy_version": r.policy_version,
        "reason": r.reason.value,
        "text": r.text,
        "priority": r.priority,
        "pair_item_id": r.pair_item_id,
        "evidence": [e.model_dump() for e in r.evidence],
        "answers": [BENIGN, *(c.name for c in shown.categories)],
        "lease_until": task.lease_until,
    }
    if console.show_score or got.user.is_lead:
        body["probabilities"] = r.probabilities
    return JSONResponse(body)


async def _body(request: Request) -> dict[str, Any] | Response:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return JSONResponse({"error": "the body is not JSON"}, status_code=400)
    if not isinstance(body, dict):
        return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
    return body


@bearer
async def submit_label(request: Request, got: Viewer) -> Response:
    body = await _body(request)
    if isinstance(body, Response):
        return body
    item, label = body.get("item_id"), body.get("label")
    if not isinstance(item, str) or not isinstance(label, str):
        return JSONResponse({"error": "item_id and label are strings"}, status_code=400)
    outcome = await _console(request).desk.label(got.user.name, item, label)
    status = {
        LabelOutcome.ACCEPTED: 202,
        LabelOutcome.NOT_HELD: 409,
        LabelOutcome.UNKNOWN_LABEL: 422,
    }[outcome]
    return JSONResponse({"status": outcome.value, "reviewer_id": got.user.name}, status)


@bearer
async def release_task(request: Request, got: Viewer) -> Response:
    item = request.path_params["item_id"]
    released = await _console(request).desk.release(got.user.name, item)
    return JSONResponse({"released": released}, status_code=200 if released else 409)


@bearer
async def stats(request: Request, got: Viewer) -> Response:
    console = _console(request)
    if not got.user.is_lead:
        return JSONResponse({"error": "stats are for leads"}, status_code=403)
    return JSONResponse((await console.lead_stats()).as_json())


async def openapi(request: Request) -> Response:
    return JSONResponse(OPENAPI)


def _op(summary: str, responses: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": {code: {"description": d} for code, d in responses.items()},
        **extra,
    }


_AUTH = {"401": "no valid bearer token"}
EXCLUDED = (
    "excluded: your labels are not counted now (your agreement with the trusted reviewers is "
    "evidently below the threshold), so you get no tasks; a lead can clear you"
)
OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "borderline reviewer console", "version": "1"},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "paths": {
        "/api/v1/tasks/next": {
            "get": _op(
                "Claim the next task (leased to the token's user; the same task until answered)",
                {
                    "200": "the task",
                    "204": "the queue is empty",
                    "403": "you are excluded by the agreement check: no tasks until a lead "
                    "clears you",
                    **_AUTH,
                },
            )
        },
        "/api/v1/labels": {
            "post": _op(
                "Answer the task you hold: {item_id, label}; the reviewer is the token's user",
                {
                    "202": "accepted (sent after the undo time)",
                    "400": "not a JSON object with string item_id and label",
                    "409": "you hold no live lease on that item",
                    "422": "not a category of the policy, nor benign",
                    **_AUTH,
                },
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["item_id", "label"],
                                "properties": {
                                    "item_id": {"type": "string"},
                                    "label": {"type": "string"},
                                },
                            }
                        }
                    },
                },
            )
        },
        "/api/v1/tasks/{item_id}/release": {
            "post": _op(
                "Give a task back to the queue",
                {"200": "released", "409": "you held no lease on it", **_AUTH},
                parameters=[
                    {
                        "name": "item_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
            )
        },
        "/api/v1/stats": {
            "get": _op(
                "Queue, reviewers, agreement and gate history (leads)",
                {"200": "figures", "403": "not a lead", **_AUTH},
            )
        },
    },
}

routes: list[tuple[str, Any, list[str]]] = [
    ("/api/v1/tasks/next", next_task, ["GET"]),
    ("/api/v1/labels", submit_label, ["POST"]),
    ("/api/v1/tasks/{item_id}/release", release_task, ["POST"]),
    ("/api/v1/stats", stats, ["GET"]),
    ("/api/v1/openapi.json", openapi, ["GET"]),
]
