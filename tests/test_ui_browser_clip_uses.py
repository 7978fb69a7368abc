"""The tag facet and the Duplicates view in a real browser (headless Chromium), on the trained model.

A library of held-out Fashion-MNIST images of four classes, two of them with edited copies (a JPEG
re-encode, a half-size copy, a 5 % crop), tagged with the ten class names by `viewfinder tag`, served by
`viewfinder ui`. Picking a tag in the sidebar's facet shows exactly the images `search --tag` finds; the
Duplicates view shows the clusters `viewfinder dupes` finds, keeper first. The browser plumbing is
``tests/test_ui_browser.py``'s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from test_ui_browser import (  # the same DevTools driver and fixtures
    CHROMIUM,
    DevTools,
    body,
    browser,  # noqa: F401 - a fixture
    choose,
    click,
    group_off,
    open_list,
    page_state,
    press,
    result_images,
    type_into,
    ui_server,
    until,
    viewfinder,
    wait_for,
)

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: `apt-get install -y chromium` to run it"),
    pytest.mark.timeout(300),
]

CLASSES = ("sneaker", "trouser", "bag", "dress")
PER_CLASS = 6
EDITED = ("sneaker/00.png", "bag/00.png")  # each gets three edited copies beside it
ALL_LABELS = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")


def edits(source: Path, dest: Path) -> None:
    stem = dest / source.parent.name
    with Image.open(source) as im:
        image = im.convert("L")
    image.save(f"{stem}-00-q60.jpg", quality=60)
    image.resize((14, 14), Image.Resampling.LANCZOS).save(f"{stem}-00-half.png")
    image.crop((1, 1, 27, 27)).save(f"{stem}-00-crop.png")


def run_cli(*args: str, home: Path, env: dict[str, str]) -> Any:
    out = subprocess.run([*viewfinder(), *args, "--home", str(home)], env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if "--json" in args else out.stdout


@pytest.fixture(scope="module")
def served(semantic_model: Path, semantic_images: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("browser-clip-uses")
    pictures = root / "pictures"
    pictures.mkdir()
    for cls in CLASSES:
        for source in sorted((semantic_images / cls).glob("*.png"))[:PER_CLASS]:
            shutil.copy2(source, pictures / f"{cls}-{source.name}")
    for name in EDITED:
        edits(semantic_images / name, pictures)
    home = root / "home"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VIEWFINDER_DEVICE": "cpu"}
    run_cli("index", str(pictures), "--model", str(semantic_model), "--json", home=home, env=env)
    run_cli("tag", *ALL_LABELS, "--json", home=home, env=env)
    with ui_server(home, root / "ui.log", env) as url:
        yield url, home, env


SHOWN = """[...document.querySelectorAll('[data-testid="stMain"] [data-testid="stImageCaption"]')]
  .filter(e => e.getBoundingClientRect().width > 0).map(e => e.innerText)"""


def open_page(browser: DevTools, url: str) -> None:
    browser.call("Page.enable")
    browser.call("Emulation.setDeviceMetricsOverride", width=1440, height=1000, deviceScaleFactor=1, mobile=False)
    browser.call("Page.navigate", url=url)
    wait_for(lambda: browser.js("!!document.querySelector('input[aria-label=\"Search\"]')"), "the search box", 90)


def test_tag_facet_keeps_exactly_the_tagged_images(served: Any, browser: DevTools) -> None:  # noqa: F811
    url, home, env = served
    tagged = {h["path"].rsplit("/", 1)[-1] for h in run_cli("search", "clothes", "--tag", "trouser", "-k", "100", "--json", home=home, env=env)}
    counts = {t["label"]: t["images"] for t in run_cli("tags", "--json", home=home, env=env)["labels"]}
    assert tagged and counts["trouser"] == len(tagged)
    assert sum(name.startswith("trouser-") for name in tagged) >= 0.8 * len(tagged)  # the model knows trousers
    open_page(browser, url)
    assert f"trouser ({counts['trouser']})" not in body(browser)  # the facet lists its options only when opened
    until(lambda: type_into(browser, "Search", "clothes"), lambda: "Results for" in body(browser), "the first results")
    choose(browser, "Relevance cutoff", "Show everything")
    until(lambda: click(browser, '[data-testid="stCheckbox"] label', "Group near-duplicates"), lambda: group_off(browser), "grouping off")
    wait_for(lambda: browser.js(SHOWN), "the first results", 120, explain=lambda: page_state(browser))  # captions: the thumbnails are the grid test's

    def pick_trouser() -> None:
        browser.js("""[...document.querySelectorAll('[data-testid="stSidebar"] [data-testid="stMultiSelect"]')]
          .filter(box => box.querySelector('label') && box.querySelector('label').innerText.trim() === "Tags")
          .forEach(box => box.querySelector('input').setAttribute('data-facet', 'tags'))""")
        open_list(browser, 'input[data-facet="tags"]', "the tag options")
        options = browser.js("""[...document.querySelectorAll('[role="option"]')].map(e => e.innerText.trim())""")
        assert f"trouser ({counts['trouser']})" in options, options  # each label with its count
        click(browser, '[role="option"]', f"trouser ({counts['trouser']})", "the trouser option")
        press(browser, "Escape", 27)

    def only_tagged() -> set[str] | None:
        names = {c.split(" · ")[-1] for c in browser.js(SHOWN) or [] if " · " in c}
        return names if "(filtered)" in body(browser) and names == tagged else None

    until(pick_trouser, only_tagged, "exactly the trouser-tagged images", explain=lambda: f"{tagged} expected; {page_state(browser)}")


def test_duplicates_view_shows_the_clusters_dupes_finds(served: Any, browser: DevTools) -> None:  # noqa: F811
    url, home, env = served
    expected = run_cli("dupes", "--json", home=home, env=env)["clusters"]
    expected_names = sorted(sorted(m["path"].rsplit("/", 1)[-1] for m in c["members"]) for c in expected)
    for name in EDITED:  # each edited source and its three edits are one cluster
        stem = name.replace("/", "-").removesuffix(".png")
        assert [f"{stem}-crop.png", f"{stem}-half.png", f"{stem}-q60.jpg", f"{stem}.png"] in expected_names, expected_names
    open_page(browser, url)
    until(lambda: click(browser, '[data-testid="stSidebar"] [role="radiogroup"] label', "Duplicates"), lambda: "Similarity threshold" in body(browser), "the Duplicates view")

    def clusters_shown() -> list[list[str]] | None:
        groups = browser.js("""[...document.querySelectorAll('[data-testid="stMain"] [class*="st-key-cluster-"]')]
          .map(c => [...c.querySelectorAll('[data-testid="stImageCaption"]')].map(e => e.innerText))""") or []
        loaded = result_images(browser, sum(len(g) for g in groups)) if groups else []
        return groups if groups and loaded else None

    groups = wait_for(clusters_shown, "the clusters with their thumbnails", 90)
    assert sorted(sorted(c.split(" · ")[-1] for c in g) for g in groups) == expected_names
    assert all(g[0].startswith("keeper · ") and not any(c.startswith("keeper") for c in g[1:]) for g in groups)
    assert f"{len(expected)} clusters" in body(browser)
