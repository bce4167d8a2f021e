"""The container image smoke test.

`just image-test` builds the image and runs these tests (`-m image`; plain `just test`
deselects them). A missing tool, an image missing or built from other sources, or any skipped
test fails the run, saying why: a smoke test that did not run is not a pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.support.containers import image_config, image_size
from tests.support.paths import REPO_ROOT

IMAGE = os.environ.get("STREAMER_IMAGE", "localhost/streamer:dev")
_skipped: list[str] = []
_image_used: list[str] = []


def unavailable(image: str) -> str | None:
    """Why the image cannot be tested here, or None."""
    if shutil.which("buildah") is None:
        return "buildah is not installed"
    if os.geteuid() != 0:
        return "buildah's chroot isolation needs root"
    try:
        labels = image_config(image).get("Labels") or {}
    except RuntimeError:
        return f"no image {image} (`just image` builds it)"
    # `--source-hash` prints the label the build sets: name=hash of the build's inputs.
    source = subprocess.run(
        [REPO_ROOT / "ops/image/build", "--source-hash"], capture_output=True, text=True, check=True
    ).stdout.strip()
    name, _, value = source.partition("=")
    if labels.get(name) != value:
        return f"{image} was built from other sources (`just image` rebuilds it)"
    return None


@pytest.fixture(scope="session")
def image() -> str:
    """The image under test, built from the current sources."""
    problem = unavailable(IMAGE)
    if problem is not None:
        pytest.fail(f"image smoke test cannot run: {problem}", pytrace=False)
    _image_used.append(IMAGE)
    return IMAGE


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a skip is no pass here


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _skipped:
        terminalreporter.write_line(f"image-test: skipped, so failed: {', '.join(_skipped)}")
    if _image_used:
        terminalreporter.write_line(f"image {_image_used[0]}: {image_size(_image_used[0])}")
