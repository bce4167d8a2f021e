"""Unit tests: the WebSocket protocol contract (paths, frames, close codes), and the browser
client's copy of its constants (read by Node.js from notify-client.js itself)."""

from __future__ import annotations

import json
import shutil
import subprocess

import msgspec

from streamer.contract.event import USER_ID_PATTERN, valid_user_id
from streamer.contract.websocket import (
    CloseCode,
    EventFrame,
    close_code_label,
    event_frame,
    parse_client_frame,
    parse_socket_path,
    recovery_frame,
)
from tests.support.paths import REPO_ROOT

CLIENT_JS = REPO_ROOT / "streamer" / "static" / "notify-client.js"
SAMPLE_USER_IDS = ["u42", "a/b", "a b", "é", "a\u3000b", "a\x85b", "a\ufeffb", "{x}", "", "x" * 256,
                   "x" * 257, "😀" * 256, "tab\there", "u:42"]  # fmt: skip
# Loads the real module (an ES module with no import-time browser dependencies) and prints
# what a client relies on.
_PROBE = """
const m = await import(process.argv[1]);
const ids = JSON.parse(process.argv[2]);
console.log(JSON.stringify({
  closeCodes: m.CloseCode,
  pattern: m.USER_ID_PATTERN.source,
  accepted: ids.map((id) => m.USER_ID_PATTERN.test(id)),
}));
"""


def test_socket_paths_and_client_frames() -> None:
    """Paths yield user, token and last_event_id; bad users and other paths are refused."""
    req = parse_socket_path("/ws/u%3A42?token=abc&last_event_id=1-0")
    assert req is not None and (req.user_id, req.token, req.last_event_id) == ("u:42", "abc", "1-0")
    for bad in ("/ws/", "/ws/a%20b", "/ws/{x}", "/ws/a%00b", "/other/u", "/ws/" + "x" * 257):
        assert parse_socket_path(bad) is None, bad
    # The one user-id rule (the event schema's): "/" is allowed, raw or encoded.
    for path in ("/ws/a/b", "/ws/a%2Fb"):
        req = parse_socket_path(path)
        assert req is not None and req.user_id == "a/b", path
    frame = parse_client_frame('{"type":"resume","last_event_id":"5-0","extra":1}')
    assert frame is not None and (frame.type, frame.last_event_id) == ("resume", "5-0")
    assert parse_client_frame(b"\xff") is None and parse_client_frame("[1]") is None
    assert json.loads(recovery_frame(True, 3)) == {
        "type": "_recovery",
        "recovered": True,
        "replayed": 3,
    }


def test_close_code_label_is_bounded() -> None:
    """Known close codes keep their number as a label; anything a client invents is "other"."""
    assert close_code_label(4008) == "4008"
    assert close_code_label(1001) == "1001"
    assert close_code_label(4999) == "other"
    assert close_code_label(3000) == "other"


def test_socket_frame_matches_the_struct_encoding() -> None:
    """The pre-assembled frame is byte-for-byte what encoding SocketMessage gives."""
    content = {"progress": 40, "t": 'é"x'}
    frame = event_frame("1-2", 'ai"progress', msgspec.json.encode(content))
    assert frame == msgspec.json.encode(EventFrame("1-2", 'ai"progress', content))
    assert json.loads(frame)["content"] == content


def test_browser_client_agrees_with_the_contract() -> None:
    """notify-client.js has the same close codes and the same user-id rule, judged the same
    way on tricky ids, as streamer/contract (Node.js runs the real module)."""
    node = shutil.which("node")
    assert node, "node is required (Debian package nodejs; .ci/run installs it)"
    result = subprocess.run(
        [node, "--input-type=module", "-e", _PROBE, str(CLIENT_JS), json.dumps(SAMPLE_USER_IDS)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    seen = json.loads(result.stdout)
    assert seen["closeCodes"] == {code.name: code.value for code in CloseCode}
    assert seen["pattern"] == USER_ID_PATTERN
    assert seen["accepted"] == [valid_user_id(user) for user in SAMPLE_USER_IDS]
