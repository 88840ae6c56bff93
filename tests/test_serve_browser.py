"""The web app in a real browser: Debian's Chromium, headless, driven by Playwright.

``tessera-search serve`` runs in a subprocess on a free 127.0.0.1 port; the page loads, a
click on a known land pixel searches, and the page's result list must be what
``query --json`` prints for the same point. The screenshot is kept under the test's tmp
folder and must show a map (not a blank canvas); every request the page made went to the
app itself (it works offline).

Run as a script it takes the screenshot for the docs from any workspace:
``python tests/test_serve_browser.py --home indexes --point 36.8,-1.3 --out docs/serve.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]  # (containers often have a small /dev/shm)


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(home: Path, exports: Path, timeout: float = 60.0):
    """``tessera-search serve`` in a subprocess on a free port; yields its URL."""
    port = free_port()
    exports.mkdir(parents=True, exist_ok=True)
    log_path = exports / ".serve.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "tessera_search", "--home", str(home), "serve", "--port", str(port),
                             "--exports", str(exports)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        t0 = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(url + "api/config", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() - t0 > timeout:
                log.flush()
                raise RuntimeError("serve did not start: " + log_path.read_text())
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def click_and_search(url: str, lon: float, lat: float, screenshot: Path, zoom: int = 17,
                     fields: dict | None = None, then=None) -> dict:
    """Open the page, fill the search ``fields`` (element id -> value), click (lon, lat), wait
    for the results; returns what the page shows (and, with ``then``, ``then(page)``'s answer
    under "then", run on the open page after the screenshot)."""
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function("window.tessera && window.tessera.state.index", timeout=30_000)
            page.evaluate(f"window.tessera.map.setView([{lat}, {lon}], {zoom}, {{animate: false}})")
            page.wait_for_function("document.querySelectorAll('.embeddings img.leaflet-tile-loaded').length > 0",
                                   timeout=30_000)
            x, y = page.evaluate(
                f"""(() => {{ const p = window.tessera.map.latLngToContainerPoint([{lat}, {lon}]);
                      const r = document.getElementById('map').getBoundingClientRect();
                      return [p.x + r.left, p.y + r.top]; }})()""")
            for key, value in (fields or {}).items():
                page.fill(f"#{key}", str(value))
            page.mouse.click(x, y)
            at = page.evaluate(f"(() => {{ const p = window.tessera.map.latLngToContainerPoint([{lat}, {lon}]); "
                               "return [p.x, p.y]; })()")
            page.wait_for_function("Number(document.body.dataset.results || 0) > 0", timeout=60_000)
            page.wait_for_timeout(300)  # let the canvas draw the results layer
            shown = page.evaluate("""(() => ({
                result: window.tessera.state.lastResultText,
                items: [...document.querySelectorAll('#results li.match')].map((li) => ({
                    rank: Number(li.dataset.rank), id: li.dataset.id, tile: li.dataset.tile,
                    row: Number(li.dataset.row), col: Number(li.dataset.col),
                    similarity: Number(li.dataset.similarity)})),
                markers: window.tessera.layers.results.getLayers().length,
                status: document.getElementById('search-status').textContent,
                clicked: window.tessera.state.searchExamples[0].geometry.coordinates,
            }))()""")
            page.screenshot(path=str(screenshot))
            page.locator("#map").screenshot(path=str(screenshot.with_name(screenshot.stem + "-map.png")))
            if then is not None:
                shown["then"] = then(page)
        finally:
            browser.close()
    shown["requests"], shown["errors"], shown["at"] = requests, errors, at
    shown["result"] = json.loads(shown["result"])  # the answer as the page received it
    return shown


def label_and_map(url: str, examples: dict, screenshot: Path, lon: float, lat: float, zoom: int = 13,
                  folds: int | None = None) -> str:
    """Open the page, add ``examples`` ({class: [(lon, lat), ...]}) in the Label tab, label the
    whole index (with ``folds``-fold cross-validation), wait for the class map; returns the report."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url)
            page.wait_for_function("window.tessera && window.tessera.state.index", timeout=30_000)
            page.evaluate(f"window.tessera.map.setView([{lat}, {lon}], {zoom}, {{animate: false}})")
            page.click('#tabs button[data-tab="label"]')
            for name, points in examples.items():
                page.evaluate(f"window.tessera.addClass({json.dumps(name)})")
                for x, y in points:
                    page.evaluate(f"window.tessera.addLabelExample({{type: 'Point', coordinates: [{x}, {y}]}})")
            page.select_option("#scope", "index")
            if folds:
                page.fill("#cv", str(folds))
            page.click("#run-label")
            page.wait_for_function("document.body.dataset.classmap || !document.getElementById('error').hidden",
                                   timeout=600_000)
            page.wait_for_timeout(3000)  # the class map's tiles
            page.screenshot(path=str(screenshot))
            return page.inner_text("#label-report") + page.inner_text("#error")
        finally:
            browser.close()


def _browser_or_skip() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("Playwright is not installed (pip install -e '.[serve]'); the browser test cannot run")
    if chromium_path() is None:
        pytest.skip("no Chromium browser: `apt-get install chromium` (scripts/test.sh does where apt can)")


def test_a_click_in_the_browser_finds_what_the_cli_finds(tmp_path, cli):
    pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
    _browser_or_skip()
    import numpy as np
    from _helpers import NAIROBI_TILES, small_tile
    from PIL import Image

    import tessera_search as ts
    from tessera_search.grid import Tile, pixel_to_lonlat
    from tessera_search.index import build_index

    home = tmp_path / "ws"
    w = ts.Workspace(home)
    for name in NAIROBI_TILES[:2]:
        w.put(small_tile(name, height=48, width=56))
    build_index(tiles=NAIROBI_TILES[:2], year=2023, home=home, name="web", progress=False,
                factory="IVF16,PQ16x4fs")  # small lists: trains in a second; results are exact (re-ranked)
    lon, lat = (float(v) for v in pixel_to_lonlat(w.store.grid(Tile.from_name(NAIROBI_TILES[0]), 2023), 24, 30))
    exports = tmp_path / "exports"
    shot = tmp_path / "serve.png"
    grid = w.store.grid(Tile.from_name(NAIROBI_TILES[0]), 2023)
    # small_tile's classes are blocks of 10 rows x 12 columns
    examples = {"a": [(5, 6), (25, 6), (45, 30), (5, 54)], "b": [(15, 6), (35, 6), (5, 18), (45, 42)]}
    examples = {c: [[float(v) for v in pixel_to_lonlat(grid, r, cc)] for r, cc in rc] for c, rc in examples.items()}

    def export_and_label(page) -> dict:
        """Export the search as GeoJSON and download it; then label the index: the class map layer."""
        out = {}
        page.click('.exports button[data-format="geojson"]')
        page.wait_for_selector("#search-status a", timeout=60_000)
        with page.expect_download() as download:
            page.click("#search-status a")
        out["geojson"] = json.loads(Path(download.value.path()).read_text())
        page.click('#tabs button[data-tab="label"]')
        for name, points in examples.items():
            page.evaluate(f"window.tessera.addClass({json.dumps(name)})")
            for x, y in points:
                page.evaluate(f"window.tessera.addLabelExample({{type: 'Point', coordinates: [{x}, {y}]}})")
        page.fill("#label-k", "3")
        page.select_option("#scope", "index")
        page.click("#run-label")
        page.wait_for_function("document.body.dataset.classmap", timeout=60_000)
        page.wait_for_function("window.tessera.state.classLayer && [...window.tessera.state.classLayer"
                               ".getContainer().querySelectorAll('img')].some((i) => i.complete && i.naturalWidth)",
                               timeout=30_000)
        out["legend"] = page.inner_text("#legend")
        out["report"] = page.inner_text("#label-report")
        return out

    with serving(home, exports) as url:
        shown = click_and_search(url, lon, lat, shot, then=export_and_label)
    assert not shown["errors"], shown["errors"]
    host = url.rstrip("/")
    assert shown["requests"] and all(r.startswith(host) or r.startswith("data:") for r in shown["requests"]), \
        [r for r in shown["requests"] if not r.startswith(host)]
    # the same point through the CLI (the click lands inside the pixel, not on its centre)
    clon, clat = shown["clicked"]
    assert abs(clon - lon) < 5e-5 and abs(clat - lat) < 5e-5
    code, out, err = cli("--home", home, "query", "--point", f"{clon!r},{clat!r}", "--index", "web", "--json")
    assert code == 0, err
    expected = json.loads(out)
    assert shown["result"]["matches"] == expected["matches"]
    assert {k: v for k, v in shown["result"].items() if k != "query_id"} == \
        {k: v for k, v in expected.items() if k != "query_id"}
    listed = [{k: str(m[k]) if k == "id" else m[k] for k in ("rank", "id", "tile", "row", "col", "similarity")}
              for m in expected["matches"]]  # IDs as text: 64-bit integers do not fit a JavaScript number
    assert shown["items"] == listed and len(listed) == 10
    assert expected["matches"][0]["row"] == 24 and expected["matches"][0]["col"] == 30
    assert shown["markers"] == 10 and "10 matches" in shown["status"] and " ms" in shown["status"]
    # the screenshot shows a map: false colours and markers, not one flat colour
    assert shot.is_file()
    pixels = np.asarray(Image.open(shot.with_name("serve-map.png")).convert("RGB")).reshape(-1, 3)
    colours = np.unique(pixels, axis=0)
    assert len(colours) > 200 and pixels.std(axis=0).min() > 10
    background = np.all(pixels == (0xDF, 0xE6, 0xEA), axis=1).mean()  # the map's own backdrop colour
    assert background < 0.8
    # the results layer is drawn: the best match (the clicked pixel itself) in red (app.js simColour),
    # the others in yellow
    img = np.asarray(Image.open(shot.with_name("serve-map.png")).convert("RGB")).astype(int)
    cx, cy = (int(round(v)) for v in shown["at"])
    near = img[cy - 6:cy + 7, cx - 6:cx + 7].reshape(-1, 3)
    assert np.all(np.abs(near - (255, 20, 0)) < 30, axis=1).sum() > 10
    assert np.all(np.abs(pixels.astype(int) - (255, 230, 60)) < 30, axis=1).sum() > 10
    # the export button wrote the query with the CLI's writer, and it downloaded
    assert [f["properties"]["id"] for f in shown["then"]["geojson"]["features"]] == [m["id"] for m in expected["matches"]]
    # labelling drew a class map layer with its legend
    assert "a:" in shown["then"]["legend"] and "b:" in shown["then"]["legend"]
    assert "pixels classified" in shown["then"]["report"] and ".tif" in shown["then"]["report"]


def main(argv: list[str] | None = None) -> int:
    """Screenshot for the docs: serve ``--home``, click ``--point``, save ``--out``."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--point", required=True, help="LON,LAT")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--zoom", type=int, default=15)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--min-separation", type=float, default=None)
    ap.add_argument("--colours", type=int, default=None, help="reduce the PNG to this many colours (smaller file)")
    ap.add_argument("--label-examples", type=Path, default=None,
                    help="a GeoJSON of points with a 'class' property: label the index with them instead of searching")
    ap.add_argument("--cv", type=int, default=None, help="with --label-examples: cross-validation folds")
    args = ap.parse_args(argv)
    lon, lat = (float(v) for v in args.point.split(","))
    exports = args.out.parent / ".serve-screenshot-exports"
    try:
        with serving(args.home, exports) as url:
            if args.label_examples is not None:
                examples: dict = {}
                for f in json.loads(args.label_examples.read_text())["features"]:
                    examples.setdefault(str(f["properties"]["class"]), []).append(f["geometry"]["coordinates"])
                status = label_and_map(url, examples, args.out, lon, lat, zoom=args.zoom, folds=args.cv)
            else:
                fields = {"k": args.k} | ({"min-separation": args.min_separation} if args.min_separation else {})
                status = click_and_search(url, lon, lat, args.out, zoom=args.zoom, fields=fields)["status"]
    finally:
        shutil.rmtree(exports, ignore_errors=True)
    args.out.with_name(args.out.stem + "-map.png").unlink(missing_ok=True)
    if args.colours:
        from PIL import Image

        img = Image.open(args.out).convert("RGB")
        img.quantize(args.colours, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(args.out, optimize=True)
    print(status, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
