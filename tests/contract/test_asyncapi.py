"""docs/asyncapi.yaml describes the WebSocket protocol streamer/contract/websocket.py defines:
the same server and client frame types with the same fields, the same refusal reasons and
the same close codes, in a well-formed AsyncAPI 3 document."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import yaml

from streamer.contract import websocket
from streamer.contract.websocket import (
    CLIENT_FRAME_TYPES,
    PONG,
    TOPIC_REFUSALS,
    BroadcastFrame,
    ClientFrame,
    CloseCode,
)
from tests.support.paths import REPO_ROOT

DOC: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docs" / "asyncapi.yaml").read_text())
MESSAGES: dict[str, Any] = DOC["components"]["messages"]


def resolve(ref: str) -> Any:
    """A local JSON pointer (``#/a/b``) into the document, following $refs on the way."""
    node: Any = DOC
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
        if isinstance(node, dict) and "$ref" in node:
            node = resolve(node["$ref"])
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def payloads(action: str) -> list[dict[str, Any]]:
    """The payload schemas of the messages of the operations with ``action``."""
    found = []
    for operation in DOC["operations"].values():
        if operation["action"] == action:
            found += [resolve(m["$ref"])["payload"] for m in operation["messages"]]
    return found


def typed(action: str) -> dict[str, dict[str, Any]]:
    """Frame type -> payload schema, for the messages whose type is a constant."""
    return {p["properties"]["type"]["const"]: p for p in payloads(action)
            if "const" in p["properties"]["type"]}  # fmt: skip


def tagged_structs() -> dict[str, type[msgspec.Struct]]:
    """Frame type -> Struct, for the module's tagged server frames."""
    found = {}
    for value in vars(websocket).values():
        if isinstance(value, type) and issubclass(value, msgspec.Struct):
            tag = value.__struct_config__.tag
            if isinstance(tag, str):
                found[tag] = value
    return found


def test_the_document_is_well_formed_asyncapi_3() -> None:
    """Version, info, a ws server, every $ref resolving, operations on declared channels
    whose messages are that channel's."""
    assert DOC["asyncapi"].startswith("3.")
    assert DOC["info"]["title"] and DOC["info"]["version"]
    assert {s["protocol"] for s in DOC["servers"].values()} == {"ws"}
    for ref in refs(DOC):
        assert ref.startswith("#/"), ref
        resolve(ref)  # raises KeyError if dangling
    for name, operation in DOC["operations"].items():
        assert operation["action"] in ("send", "receive"), name
        channel = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(f"{channel}/messages/"), (name, message)
    for message in MESSAGES.values():
        assert message["payload"]["type"] == "object"
        assert set(message["payload"]["required"]) <= set(message["payload"]["properties"])


def test_server_frame_types_and_fields_are_the_codes() -> None:
    """Every tagged server frame (and pong) is documented with exactly its fields, and
    every documented constant type is one the code sends."""
    structs = tagged_structs()
    documented = typed("send")
    pong_type = json.loads(PONG)["type"]
    assert set(documented) == set(structs) | {pong_type}
    for tag, struct in structs.items():
        assert set(documented[tag]["properties"]) == {"type", *struct.__struct_fields__}, tag


def test_event_and_broadcast_frames_have_the_codes_fields() -> None:
    """The frames typed by their event: fields of EventFrame (topic only for a topic's
    event) and of BroadcastFrame."""
    event, topic_event, broadcast = (
        p for p in payloads("send") if "const" not in p["properties"]["type"]
    )
    assert set(event["properties"]) | {"topic"} == set(websocket.EventFrame.__struct_fields__)
    assert set(topic_event["properties"]) == set(websocket.EventFrame.__struct_fields__)
    assert set(broadcast["properties"]) == set(BroadcastFrame.__struct_fields__)


def test_client_frame_types_and_fields_are_the_ones_the_gateway_acts_on() -> None:
    """ping, resume, subscribe, unsubscribe; fields within ClientFrame's."""
    documented = typed("receive")
    assert set(documented) == set(CLIENT_FRAME_TYPES)
    for name, payload in documented.items():
        assert set(payload["properties"]) <= set(ClientFrame.__struct_fields__), name


def test_refusal_reasons_are_the_codes() -> None:
    """subscribe_refused's reason enum is the module's list of reasons."""
    reason = typed("send")["subscribe_refused"]["properties"]["reason"]
    assert reason["enum"] == list(TOPIC_REFUSALS)


def test_close_codes_are_the_codes() -> None:
    """x-close-codes lists every CloseCode, by number and name, and no other."""
    documented = {c["code"]: c["name"] for c in DOC["info"]["x-close-codes"]}
    assert documented == {c.value: c.name for c in CloseCode}
    assert all(c["meaning"] for c in DOC["info"]["x-close-codes"])
