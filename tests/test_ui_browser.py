"""The web UI in a real browser: `viewfinder index`, then `viewfinder ui`, driven in headless Chromium.

Chromium is driven over the DevTools protocol (a WebSocket; `websockets`, which Streamlit depends on,
is the client), so nothing beyond Debian's `chromium` package is needed. The screenshot is kept as a test
artefact in test-artifacts/ui-search.png.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from websockets.sync.client import connect  # a Streamlit dependency

try:  # works whether or not tests/ is a package
    from tests.tiny_model import build_tiny_clip
except ImportError:  # pragma: no cover - depends on pytest import mode
    from tiny_model import build_tiny_clip  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = REPO / "test-artifacts" / "ui-search.png"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

if not CHROMIUM.exists() and os.environ.get("CI"):  # CI installs it: a missing browser there is a failure
    raise RuntimeError(f"{CHROMIUM} is missing; .ci/run must `apt-get install -y chromium`.")
pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: `apt-get install -y chromium` to run it"),
    pytest.mark.timeout(300),
]


def viewfinder() -> list[str]:
    script = Path(sys.executable).with_name("viewfinder")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ui.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Any, what: str, timeout: float = 60.0, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


class DevTools:
    """The few DevTools-protocol calls the test needs, over one page's WebSocket."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn  # a websockets.sync.client connection
        self.last_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        self.conn.send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.conn.recv(timeout=60))
            if message.get("id") == self.last_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`viewfinder ui` serving a library of the sample photos, indexed with the tiny model."""
    root = tmp_path_factory.mktemp("browser")
    model = build_tiny_clip(root / "clip")
    pictures = root / "pictures"
    for folder in ("photos", "space", "textures", "science"):
        shutil.copytree(REPO / "data" / folder, pictures / folder)
    home = root / "home"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VIEWFINDER_DEVICE": "cpu"}
    subprocess.run(
        [*viewfinder(), "index", str(pictures), "--home", str(home), "--model", str(model)],
        check=True, env=env, capture_output=True, timeout=240,
    )  # fmt: skip
    port = free_port()
    log = (root / "ui.log").open("wb")
    server = subprocess.Popen(
        [*viewfinder(), "ui", "--home", str(home), "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: http_text(f"http://127.0.0.1:{port}/_stcore/health") == "ok", "the Streamlit server", 90)
        yield f"http://127.0.0.1:{port}/", home
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server's own process group: `viewfinder ui` and nothing else
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
        print((root / "ui.log").read_text(errors="replace")[-3000:])


@pytest.fixture()
def browser(tmp_path: Path) -> Any:
    port = free_port()
    proc = subprocess.Popen(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--remote-debugging-port={port}", f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1440,1000", "--hide-scrollbars", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        targets = wait_for(
            lambda: [t for t in json.loads(http_text(f"http://127.0.0.1:{port}/json/list")) if t["type"] == "page"],
            "Chromium's DevTools endpoint",
        )
        with connect(targets[0]["webSocketDebuggerUrl"], max_size=256 * 2**20, open_timeout=30) as conn:
            yield DevTools(conn)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


RESULT_IMAGES = """[...document.querySelectorAll('[data-testid="stMain"] img')]
  .filter(img => img.src.includes('/media/'))
  .map(img => ({src: img.src, complete: img.complete, w: img.naturalWidth, h: img.naturalHeight}))"""


FIRST_CAPTION = """(document.querySelector('[data-testid="stMain"] [data-testid="stImageCaption"]') || {}).innerText"""


def test_text_query_in_a_real_browser_shows_result_images(served: Any, browser: DevTools) -> None:
    url, home = served
    browser.call("Page.enable")
    browser.call("Emulation.setDeviceMetricsOverride", width=1440, height=1000, deviceScaleFactor=1, mobile=False)
    browser.call("Page.navigate", url=url)
    wait_for(lambda: browser.js("!!document.querySelector('input[aria-label=\"Search\"]')"), "the search box", 90)
    assert "Images indexed" in browser.js("document.body.innerText")

    browser.js("document.querySelector('input[aria-label=\"Search\"]').focus()")
    browser.call("Input.insertText", text="a photo of a cat")
    for kind in ("keyDown", "keyUp"):
        browser.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)

    def loaded() -> list[dict[str, Any]]:
        images = browser.js(RESULT_IMAGES) or []
        return images if len(images) >= 14 and all(i["complete"] and i["w"] > 0 for i in images) else []

    images = wait_for(loaded, "the result grid", 90)
    time.sleep(1.0)  # let the last layout settle before the screenshot
    shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.write_bytes(shot)

    assert len(images) == 14  # every image of the library, as a thumbnail
    assert all(max(i["w"], i["h"]) <= 320 for i in images), "the grid must get thumbnails, not the originals"
    text = browser.js("document.body.innerText")
    assert "Results for" in text and "results in" in text
    assert "chelsea.png" in text and "More like this" in text
    with Image.open(SCREENSHOT) as png:
        assert png.size[0] >= 1000
    assert any((home / "thumbs").rglob("*.jpg")), "thumbnails are cached in the library"

    # the same page, an upload through the real upload endpoint: the image finds itself first
    document = browser.call("DOM.getDocument")["root"]["nodeId"]
    file_input = browser.call("DOM.querySelector", nodeId=document, selector="input[type=file]")["nodeId"]
    browser.call("DOM.setFileInputFiles", nodeId=file_input, files=[str(REPO / "data" / "photos" / "chelsea.png")])
    wait_for(lambda: "Images like the uploaded chelsea.png" in browser.js("document.body.innerText"), "upload results")
    wait_for(lambda: str(browser.js(FIRST_CAPTION)).startswith("1.000 · chelsea.png"), "chelsea.png first, scored 1")
