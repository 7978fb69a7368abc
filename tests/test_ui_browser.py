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
from collections.abc import Iterator
from contextlib import contextmanager
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


def wait_for(check: Any, what: str, timeout: float = 60.0, every: float = 0.25, explain: Any = None) -> Any:
    """``check()`` until it is truthy; on a timeout the error holds ``explain()`` (what the page showed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" + (f"; {explain()}" if explain else ""))


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
    with ui_server(home, root / "ui.log", env) as url:
        yield url, home


@contextmanager
def ui_server(home: Path, log_path: Path, env: dict[str, str]) -> Iterator[str]:
    """`viewfinder ui` on ``home`` at a free port, up and healthy; stopped (its process group) afterwards."""
    port = free_port()
    log = log_path.open("wb")
    server = subprocess.Popen(
        [*viewfinder(), "ui", "--home", str(home), "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: http_text(f"http://127.0.0.1:{port}/_stcore/health") == "ok", "the Streamlit server", 90)
        yield f"http://127.0.0.1:{port}/"
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server's own process group: `viewfinder ui` and nothing else
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
        print(log_path.read_text(errors="replace")[-3000:])


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
  .filter(img => img.src.includes('/media/') && img.getBoundingClientRect().width > 0)
  .map(img => ({src: img.src, complete: img.complete, w: img.naturalWidth, h: img.naturalHeight}))"""


FIRST_CAPTION = """(document.querySelector('[data-testid="stMain"] [data-testid="stImageCaption"]') || {}).innerText"""


def click(browser: DevTools, selector: str, text: str | None = None, what: str = "") -> None:
    """A real mouse click (pressed + released) at the centre of the first visible element matching
    ``selector`` (and holding ``text``): Streamlit's widgets listen to mouse events, not to el.click()."""
    finder = f"""(() => {{
      const els = [...document.querySelectorAll({json.dumps(selector)})]
        .filter(e => e.getBoundingClientRect().width > 0 && ({json.dumps(text)} === null || e.innerText.trim() === {json.dumps(text)}));
      if (!els.length) return null;
      els[0].scrollIntoView({{block: "center"}});
      const r = els[0].getBoundingClientRect();
      return [r.x + r.width / 2, r.y + r.height / 2];
    }})()"""
    x, y = wait_for(lambda: browser.js(finder), what or f"{selector} {text or ''}", 60)
    for kind in ("mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)


def type_into(browser: DevTools, label: str, text: str) -> None:
    click(browser, f'input[aria-label="{label}"]', what=f"the {label} box")
    browser.js(f'document.querySelector(\'input[aria-label="{label}"]\').select()')
    browser.call("Input.insertText", text=text)
    press(browser, "Enter", 13)


def press(browser: DevTools, key: str, code: int) -> None:
    for kind in ("keyDown", "keyUp"):
        browser.call("Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=code)


def open_list(browser: DevTools, selector: str, what: str) -> None:
    """Open the option list of the select box whose input matches ``selector``: focus it and press the
    down arrow until options show (a mouse click that lands while the page reruns only focuses it)."""
    def opened() -> bool:
        browser.js(f"document.querySelector({json.dumps(selector)}).focus()")
        press(browser, "ArrowDown", 40)
        time.sleep(0.3)
        return bool(browser.js("document.querySelectorAll('[role=\"option\"]').length"))

    wait_for(opened, what, every=0.5)


def choose(browser: DevTools, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox labelled ``label`` (a react-aria combobox: the arrow key opens it)."""
    open_list(browser, f'input[aria-label="{label}"]', f"the {label} list")
    click(browser, '[role="option"]', option, f"the option {option}")
    wait_for(lambda: browser.js(f"document.querySelector('input[aria-label=\"{label}\"]').value") == option, f"{label} = {option}")


def until(action: Any, check: Any, what: str, tries: int = 4, each: float = 15.0, explain: Any = None) -> Any:
    """Do ``action`` until ``check`` holds: a click or a key that lands while the page reruns is lost."""
    for attempt in range(tries):
        action()
        try:
            return wait_for(check, what, each, explain=explain if attempt == tries - 1 else None)
        except AssertionError:
            if attempt == tries - 1:
                raise
    return None


def group_off(browser: DevTools) -> bool:
    return browser.js("""(() => { const box = [...document.querySelectorAll('[data-testid="stCheckbox"]')]
      .find(e => e.innerText.trim() === "Group near-duplicates"); return !!box && !box.querySelector('input').checked; })()""")


def body(browser: DevTools) -> str:
    return str(browser.js("document.body.innerText"))


def result_images(browser: DevTools, least: int = 1) -> list[dict[str, Any]]:
    images = browser.js(RESULT_IMAGES) or []
    return images if len(images) >= least and all(i["complete"] and i["w"] > 0 for i in images) else []


def page_state(browser: DevTools) -> str:
    """What the page shows, for a timed-out wait: each result image's state and the page's text."""
    images = browser.js(RESULT_IMAGES) or []
    states = [f"{i['src'].rsplit('/', 1)[-1]}:{'loaded' if i['complete'] and i['w'] else 'broken' if i['complete'] else 'loading'}" for i in images]
    return f"{len(images)} result images {states}; the page reads: {body(browser)[-2500:]!r}"


def test_text_query_in_a_real_browser_shows_result_images(served: Any, browser: DevTools, tmp_path: Path) -> None:
    url, home = served
    browser.call("Page.enable")
    browser.call("Page.setDownloadBehavior", behavior="allow", downloadPath=str(tmp_path / "downloads"))
    browser.call("Emulation.setDeviceMetricsOverride", width=1440, height=1000, deviceScaleFactor=1, mobile=False)
    browser.call("Page.navigate", url=url)
    wait_for(lambda: browser.js("!!document.querySelector('input[aria-label=\"Search\"]')"), "the search box", 90)
    assert "Images indexed" in body(browser)

    # the page's defaults: relevance cutoff "Automatic", near-duplicates grouped; show everything, ungrouped
    until(lambda: type_into(browser, "Search", "a photo of a cat"), lambda: "Results for" in body(browser), "the first results")
    choose(browser, "Relevance cutoff", "Show everything")
    until(lambda: click(browser, '[data-testid="stCheckbox"] label', "Group near-duplicates"), lambda: group_off(browser), "grouping off")
    def whole_grid() -> list[dict[str, Any]]:  # exactly 14: during a rerun the last run's tiles linger beside the new ones
        images = result_images(browser, 14)
        return images if len(images) == 14 else []

    images = wait_for(whole_grid, "the whole result grid", 90, explain=lambda: page_state(browser))
    time.sleep(1.0)  # let the last layout settle before the screenshot
    shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.write_bytes(shot)
    assert len(images) == 14  # every image of the library, as a thumbnail
    assert all(max(i["w"], i["h"]) <= 320 for i in images), "the grid must get thumbnails, not the originals"
    text = body(browser)
    assert "Results for “a photo of a cat”" in text and "results in" in text
    assert "chelsea.png" in text and "More like this" in text
    with Image.open(SCREENSHOT) as png:
        assert png.size[0] >= 1000
    assert any((home / "thumbs").rglob("*.jpg")), "thumbnails are cached in the library"

    # a minimum score above every random-weight score: all cut, the count shown, "Show them" brings them back
    choose(browser, "Relevance cutoff", "Minimum score")
    wait_for(lambda: "14 results below the relevance cutoff are hidden." in body(browser), "the cut count")
    until(lambda: click(browser, "button", "Show them"), lambda: result_images(browser, 14), "the results shown again", explain=lambda: page_state(browser))

    # a new upload in the main box replaces the query: the image finds itself first
    document = browser.call("DOM.getDocument")["root"]["nodeId"]
    inputs = browser.call("DOM.querySelectorAll", nodeId=document, selector="input[type=file]")["nodeIds"]
    browser.call("DOM.setFileInputFiles", nodeId=inputs[0], files=[str(REPO / "data" / "photos" / "chelsea.png")])
    wait_for(lambda: "Results for chelsea.png" in body(browser), "upload results")
    wait_for(lambda: str(browser.js(FIRST_CAPTION)).startswith("1.000 · chelsea.png"), "chelsea.png first, scored 1")

    # an image term next to a text: the upload box of "Refine the query"
    until(lambda: type_into(browser, "Search", "a photo of a cat"), lambda: "Results for “a photo of a cat”" in body(browser), "the text query again")
    wait_for(lambda: browser.js("document.querySelectorAll('input[type=file]').length") == 2, "the add-an-image box")
    document = browser.call("DOM.getDocument")["root"]["nodeId"]
    inputs = browser.call("DOM.querySelectorAll", nodeId=document, selector="input[type=file]")["nodeIds"]
    browser.call("DOM.setFileInputFiles", nodeId=inputs[1], files=[str(REPO / "data" / "photos" / "chelsea.png")])
    wait_for(lambda: "Results for “a photo of a cat” + chelsea.png" in body(browser), "the added image term")

    # a filter (file name pattern) and a date sort
    pattern_box = "!!document.querySelector('input[aria-label=\"File name pattern\"]') && document.querySelector('input[aria-label=\"File name pattern\"]').getBoundingClientRect().width > 0"
    until(lambda: click(browser, '[data-testid="stSidebar"] [data-testid="stExpander"] summary', None, "More filters"), lambda: browser.js(pattern_box), "the filter box")
    type_into(browser, "File name pattern", "*.jpg")
    shown = """[...document.querySelectorAll('[data-testid="stMain"] [data-testid="stImageCaption"]')]
      .map(e => e.innerText).filter(c => c.includes(" · "))"""

    def only_jpegs() -> list[str]:
        captions = browser.js(shown) or []
        return captions if "(filtered)" in body(browser) and captions and all(c.endswith(".jpg") for c in captions) else []

    captions = wait_for(only_jpegs, "the filtered results")
    choose(browser, "Sort by", "Newest first")
    wait_for(lambda: "(filtered)" in body(browser) and result_images(browser), "the results sorted by date", explain=lambda: page_state(browser))

    # the CSV download holds the results shown
    click(browser, "button", "Download CSV")
    csv_file = wait_for(lambda: next((tmp_path / "downloads").glob("*.csv"), None), "the CSV download")
    rows = csv_file.read_text().splitlines()
    assert rows[0].startswith("rank,score,path") and len(rows) - 1 == len(captions)
    assert all(row.split(",")[2].endswith(".jpg") for row in rows[1:])
