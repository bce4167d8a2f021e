"""The OpenAPI document: a well-formed OpenAPI 3.1 document (checked structurally: no
validator dependency), listing exactly the routes the server answers, with the event schema
the workers decode with, and docs/openapi.json rendered from it."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import msgspec

from streamer.api import openapi
from streamer.api.server import Api
from streamer.contract.event import NotificationPayload
from streamer.infra.http import HealthTracker
from streamer.producer import Producer
from tests.support.api import api_settings
from tests.support.paths import REPO_ROOT

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
DOC = openapi.document()


def refs(node: Any) -> list[str]:
    """Every $ref in a JSON tree."""
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def served_routes() -> set[tuple[str, str]]:
    """(method, path) of every route of the aiohttp application the server runs."""
    settings = api_settings("redis://127.0.0.1:1/0")  # nothing connects: routes only
    producer = Producer.from_settings(settings.producer, client_name="test")
    app = Api(producer, settings, HealthTracker(1.0, time.monotonic)).app()
    return {(r.method.lower(), r.resource.canonical) for r in app.router.routes() if r.resource}


def documented_routes() -> set[tuple[str, str]]:
    return {(m, path) for path, item in DOC["paths"].items() for m in item if m in METHODS}


def test_every_route_served_is_documented_and_every_documented_route_is_served() -> None:
    """The router's table and the document's paths are the same set of (method, path)."""
    assert served_routes() == documented_routes()


def test_the_document_is_structurally_valid_openapi_3_1() -> None:
    """Required fields, responses keyed by status codes, unique operation ids, every $ref
    and security requirement resolving, paths starting with a slash."""
    assert re.fullmatch(r"3\.1\.\d+", DOC["openapi"])
    assert DOC["info"]["title"] and DOC["info"]["version"]
    schemes = DOC["components"]["securitySchemes"]
    operation_ids = []
    for path, item in DOC["paths"].items():
        assert path.startswith("/") and set(item) <= METHODS, path
        for operation in item.values():
            assert operation["responses"], path
            assert all(re.fullmatch(r"[1-5]\d\d|default", code) for code in operation["responses"])
            assert all(r["description"] for r in operation["responses"].values())
            operation_ids += [operation["operationId"]] if "operationId" in operation else []
            for requirement in operation.get("security", DOC["security"]):
                assert set(requirement) <= set(schemes)
    assert len(operation_ids) == len(set(operation_ids))
    for ref in refs(DOC):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in DOC["components"]["schemas"], ref
    for scheme in schemes.values():
        assert scheme["type"] == "apiKey" and scheme["in"] == "header"


def test_the_event_schema_is_the_workers() -> None:
    """The Event schema's properties are the fields of the Struct the workers decode."""
    event = DOC["components"]["schemas"]["Event"]
    assert set(event["properties"]) == set(NotificationPayload.__struct_fields__)
    assert event["required"] == ["event_type"]
    (_,), generated = msgspec.json.schema_components([NotificationPayload])
    assert event["properties"] == generated["NotificationPayload"]["properties"]


def test_docs_openapi_json_is_the_rendered_document() -> None:
    """docs/openapi.json is `python -m streamer.api.openapi`'s output, and valid JSON."""
    text = (REPO_ROOT / "docs" / "openapi.json").read_text()
    assert text == openapi.render()
    assert json.loads(text) == json.loads(json.dumps(DOC))
