"""The OpenAPI 3.1 document of the HTTP publish API, built in code.

The event's schema comes from the msgspec Struct the workers decode with
(``NotificationPayload``), so the document cannot drift from the stream's schema. `streamer
api` serves it at ``GET /api/openapi.json``; ``docs/openapi.json`` is the same document
rendered (``python -m streamer.api.openapi > docs/openapi.json``), and tests keep both in
step with the routes the server answers.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from typing import Any

import msgspec

from streamer.api.auth import SCHEME
from streamer.contract.event import MAX_USER_IDS, NotificationPayload

_REF = "#/components/schemas/{name}"

EVENT_DESCRIPTION = (
    "One event, exactly as producers XADD it to the stream (field `payload`). It names its "
    "audience in exactly one way: `user_id`, `user_ids` (at most "
    f"{MAX_USER_IDS}), `topic` or `broadcast: true`; push channels need `user_id`. Unknown "
    "fields are ignored. With `id`, publishing the same id again within "
    "PUBLISH_DEDUPE_TTL_S writes nothing and answers the first stream id."
)


def _schema(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _json_body(name: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _schema(name)}}}


def _answer(description: str, schema: str, **headers: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, **_json_body(schema)}
    if headers:
        answer["headers"] = headers
    return answer


def _errors() -> dict[str, Any]:
    retry_after = {
        "description": "seconds to wait before retrying",
        "schema": {"type": "integer"},
    }
    return {
        "400": _answer("invalid JSON or an event breaking the schema; nothing written", "Error"),
        "401": _answer("missing, malformed or unknown API key", "Error"),
        "413": _answer("body over API_MAX_BODY_BYTES", "Error"),
        "503": _answer("Redis unreachable; retry (same ids: written once)", "Error",
                       **{"Retry-After": retry_after}),
    }  # fmt: skip


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def _probe(summary: str) -> dict[str, Any]:
    responses = {"200": _text("ok"), "503": _text("what is failing")}
    return {"get": {"summary": summary, "security": [], "responses": responses}}


def _paths() -> dict[str, Any]:
    return {
        "/api/publish": {"post": {
            "summary": "Publish one event",
            "operationId": "publish",
            "requestBody": {"required": True, **_json_body("Event")},
            "responses": {"202": _answer("appended (or a duplicate id)", "Published"),
                          **_errors()},
        }},
        "/api/publish/batch": {"post": {
            "summary": "Publish many events in one round trip: all or none are checked valid",
            "operationId": "publishBatch",
            "requestBody": {"required": True, **_json_body("Batch")},
            "responses": {"202": _answer("appended, in order", "BatchPublished"),
                          **_errors()},
        }},
        "/api/openapi.json": {"get": {
            "summary": "This document", "operationId": "openapi", "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1",
                                  "content": {"application/json": {"schema": {}}}}},
        }},
        "/healthz": _probe("200 unless Redis was unreachable longer than HEALTH_THRESHOLD_S"),
        "/livez": _probe("200 whenever the process answers"),
        "/readyz": _probe("200 while Redis answers"),
        "/metrics": {"get": {"summary": "Prometheus metrics", "security": [],
                             "responses": {"200": _text("Prometheus text format")}}},
    }  # fmt: skip


def _components() -> dict[str, Any]:
    (_,), schemas = msgspec.json.schema_components([NotificationPayload], ref_template=_REF)
    event = schemas.pop("NotificationPayload")
    event.update(title="Event", description=EVENT_DESCRIPTION)
    published = {
        "type": "object",
        "required": ["id", "duplicate"],
        "properties": {
            "id": {"type": "string", "description": "stream id of the entry"},
            "duplicate": {
                "type": "boolean",
                "description": "the id was published before: nothing written",
            },
        },
    }
    return {
        "schemas": {
            **schemas,
            "Event": event,
            "Batch": {"type": "object", "required": ["events"], "properties": {
                "events": {"type": "array", "minItems": 1, "items": _schema("Event"),
                           "description": "at most API_MAX_BATCH events"}}},
            "Published": published,
            "BatchPublished": {"type": "object", "required": ["results"], "properties": {
                "results": {"type": "array", "items": _schema("Published")}}},
            "Error": {"type": "object", "required": ["error", "detail"], "properties": {
                "error": {"type": "string", "description": "stable code: schema, "
                          "invalid_json, too_large, too_many_events, unauthorized, ..."},
                "detail": {"type": "string", "description": "for humans; names the field"}}},
        },
        "securitySchemes": {"apikey": {
            "type": "apiKey", "in": "header", "name": "Authorization",
            "description": f"`Authorization: {SCHEME} <key>`; keys from API_KEYS or API_KEYS_FILE",
        }},
    }  # fmt: skip


@cache
def document() -> dict[str, Any]:
    """The whole document (built once)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "streamer publish API",
            "version": "1",
            "description": "Publish notification events over HTTP (`streamer api`).",
        },
        "security": [{"apikey": []}],
        "paths": _paths(),
        "components": _components(),
    }


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
