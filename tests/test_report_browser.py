"""The HTML report in a real headless browser (Debian's Chromium, driven by playwright): it loads
with no console error, makes no request beyond itself and ``data:`` URIs, runs nothing a crafted
document smuggled in, and its screenshot is a page of the expected sections. Skipped without
/usr/bin/chromium (`.ci/run` installs it) or the playwright package."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from cxr.cli import app

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not Path(CHROMIUM).exists():
    pytest.skip("no Chromium (apt-get install chromium)", allow_module_level=True)

EXPECTED = ["Summary", "Paired comparisons", "Per-class results", "Calibration", "Warnings",
            "Figures", "Provenance", "Reporting checklist"]  # fmt: skip


def test_the_report_loads_offline_with_no_error_and_shows_its_sections(
    make_synthetic_store, tmp_path
):
    store = make_synthetic_store({"bacterial": 10, "covid": 10, "normal": 10})
    doc_path, plots, page_path = tmp_path / "e.json", tmp_path / "plots", tmp_path / "r.html"
    args = ["evaluate", "--features", str(store.parent), "--head", "logreg", "--head", "knn"]
    args += ["--folds", "3", "--bootstrap", "20", "--json", str(doc_path), "--plots", str(plots)]
    assert CliRunner().invoke(app, [*args, "--quiet"]).exit_code == 0
    doc = json.loads(doc_path.read_text())  # strings a stranger could plant, and a remote image
    doc["warnings"] += ['<img src="https://example.org/x.png" onerror="console.error(1)">',
                        "<script>console.error('ran')</script>"]  # fmt: skip
    doc_path.write_text(json.dumps(doc))
    result = CliRunner().invoke(app, ["report", str(doc_path), "--out", str(page_path)])
    assert result.exit_code == 0, result.output

    errors: list[str] = []
    outside: list[str] = []
    url = page_path.resolve().as_uri()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: (errors.append(f"dialog {d.message}"), d.dismiss()))
            page.on("request", lambda r: None if r.url in (url,) or r.url.startswith("data:")
                    else outside.append(r.url))  # fmt: skip
            page.goto(url, wait_until="load")
            headings = page.locator("h2").all_inner_texts()
            images = page.evaluate("[...document.images].map(i => i.complete && i.naturalWidth)")
            height = page.evaluate("document.documentElement.scrollHeight")
            shot = page.screenshot(full_page=True)
        finally:
            browser.close()
    assert errors == [] and outside == []
    assert headings == [h for h in headings if h] and set(EXPECTED) <= set(headings)
    assert images and all(images)  # every embedded figure decoded
    picture = Image.open(io.BytesIO(shot)).convert("L")
    assert picture.height == height > 2000  # the whole page, not one screen
    low, high = picture.getextrema()
    assert high - low > 100  # ink on paper, not a blank page
    (tmp_path / "screenshot.png").write_bytes(shot)
