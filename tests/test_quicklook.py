"""The one quicklook painter: base layers on a real grid, markers, legend, colour bar, ticks,
scale bar, the SYNTHETIC badge, size bounds, atomic PNGs and reading rasters to paint."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Transformer

from tessera_search.grid import Tile, expected_grid, pixel_to_lonlat
from tessera_search.quicklook import (
    PALETTE,
    RAMP_CHANGE,
    SYNTHETIC_COLOUR,
    ClassLayer,
    Extent,
    Markers,
    RGBLayer,
    ValueLayer,
    nice_length,
    paint,
    render,
)
from tessera_search.raster_view import read_raster

TILE = Tile.from_name("grid_36.75_-1.25")  # EPSG:32737


def _grid_window(h: int, w: int):
    """(Extent, TileGrid) of an (h, w) window at the top-left of the tile's real grid."""
    from tessera_search.grid import TileGrid

    g = expected_grid(TILE)
    win = TileGrid(TILE, g.epsg, g.transform, h, w)
    return Extent(win.crs, win.transform), win


def _pixels(pic, box: str) -> np.ndarray:
    x0, y0, x1, y1 = pic.boxes[box]
    return np.asarray(pic.image.convert("RGB"))[y0:y1 + 1, x0:x1 + 1].reshape(-1, 3)


def _has(px: np.ndarray, colour) -> bool:
    return bool(np.any(np.all(px == np.array(colour, np.uint8), axis=1)))


def test_nice_length_is_1_2_5():
    assert [nice_length(v) for v in (0, -3, 0.7, 1, 3, 7.5, 19, 420, 2600)] == [0, 0, 0.5, 1, 2, 5, 10, 200, 2000]


def test_legend_lists_every_class_and_marker_layer():
    ext, g = _grid_window(200, 300)
    codes = np.repeat((np.arange(300) // 100 + 1)[None], 200, axis=0)
    codes[:20] = 0  # no data
    colours = {1: (10, 200, 30), 2: (200, 30, 10), 3: (30, 10, 200)}
    lon, lat = pixel_to_lonlat(g, np.array([100, 120, 150]), np.array([50, 150, 250]))
    layers = [Markers.matches(lon, lat), Markers.positives(lon[:1], lat[:1]), Markers.negatives(lon[1:2], lat[1:2])]
    pic = render(ClassLayer(codes, {1: "forest", 2: "maize", 3: "tea"}, colours), ext, markers=layers, title="t")
    legend = _pixels(pic, "legend")
    for c in colours.values():
        assert _has(legend, c)  # a swatch per class
    for m in layers:
        assert _has(legend, m.colour)  # a symbol per marker layer
    lx0 = pic.boxes["legend"][0]
    assert lx0 > pic.boxes["map"][2]  # beside the map, not over it
    # The markers are on the map at their places.
    mp = _pixels(pic, "map")
    for m in layers:
        assert _has(mp, m.colour)
    # Without a legend: no legend box, and no class colour outside the map.
    bare = render(ClassLayer(codes, {1: "forest"}, colours), ext, legend=False)
    assert "legend" not in bare.boxes


def test_colour_bar_runs_along_the_ramp():
    ext, _ = _grid_window(60, 80)
    vals = np.tile(np.linspace(0, 2, 80), (60, 1))
    vals[:, :5] = np.nan
    pic = render(ValueLayer(vals, 0.0, 1.0, RAMP_CHANGE, "cosine distance"), ext)
    x0, y0, x1, y1 = pic.boxes["colour_bar"]
    img = np.asarray(pic.image.convert("RGB"))
    assert tuple(img[y0, x0 + 3]) == RAMP_CHANGE[-1][1]  # top: vmax
    assert tuple(img[y1, x0 + 3]) == RAMP_CHANGE[0][1]  # bottom: vmin
    assert _has(_pixels(pic, "legend"), (255, 255, 255))  # the "no data" swatch
    # Values above vmax take the top colour on the map.
    assert _has(_pixels(pic, "map"), RAMP_CHANGE[-1][1])


def test_ticks_are_at_their_coordinates():
    ext, g = _grid_window(1000, 900)
    pic = render(RGBLayer(np.full((1000, 900, 3), 128, np.uint8)), ext, max_size=500)
    lon_t = [t for t in pic.ticks if t[0] == "lon"]
    lat_t = [t for t in pic.ticks if t[0] == "lat"]
    assert len(lon_t) >= 2 and len(lat_t) >= 2
    mx0, my0, mx1, my1 = pic.boxes["map"]
    scale = (mx1 - mx0 + 1) / g.width  # picture pixels per grid pixel
    to_ll = Transformer.from_crs(g.crs, 4326, always_xy=True)
    a, _, c, _, e, f = g.transform
    img = np.asarray(pic.image.convert("RGB"))
    for _, value, x, y in lon_t:  # on the bottom edge
        lon, _ = to_ll.transform(c + a * (x - mx0) / scale, f + e * g.height)
        assert abs(lon - value) < 2 * a / scale / 1e5  # within ~2 picture pixels
        assert np.all(img[my1 + 2:my1 + 5, x] == 0)  # the tick mark
    for _, value, x, y in lat_t:  # on the left edge
        _, lat = to_ll.transform(c, f + e * (y - my0) / scale)
        assert abs(lat - value) < 2 * a / scale / 1e5
        assert np.all(img[y, mx0 - 5:mx0 - 2] == 0)
    # the labels are drawn: dark text pixels under the map and left of it
    assert (_pixels(pic, "lon_ticks") < 100).any() and (_pixels(pic, "lat_ticks") < 100).any()
    assert "scale_bar" in pic.boxes and "ticks" not in pic.boxes
    assert not render(RGBLayer(np.zeros((50, 50, 3), np.uint8)), ext, ticks=False).ticks


def test_synthetic_badge_only_for_synthetic_data():
    ext, _ = _grid_window(100, 100)
    base = RGBLayer(np.full((100, 100, 3), 90, np.uint8))
    pic = render(base, ext, synthetic=True)
    assert _has(_pixels(pic, "synthetic"), SYNTHETIC_COLOUR)
    x0, y0, x1, y1 = pic.boxes["synthetic"]
    mx0, my0, mx1, my1 = pic.boxes["map"]
    assert mx0 <= x0 and my0 <= y0 and x1 <= mx1 and y1 <= my1  # on the map itself
    plain = render(base, ext)
    assert "synthetic" not in plain.boxes
    assert not _has(np.asarray(plain.image.convert("RGB")).reshape(-1, 3), SYNTHETIC_COLOUR)


def test_size_is_bounded_and_small_maps_are_enlarged():
    ext, _ = _grid_window(2400, 1800)
    big = render(ClassLayer(np.ones((2400, 1800), np.uint8), {1: "x"}), ext, max_size=600)
    x0, y0, x1, y1 = big.boxes["map"]
    assert (y1 - y0 + 1, x1 - x0 + 1) == (600, 450)
    assert big.image.width < 600 + 400 and big.image.height < 600 + 200
    ext, _ = _grid_window(40, 48)
    small = render(RGBLayer(np.zeros((40, 48, 3), np.uint8)), ext, max_size=1024)
    x0, y0, x1, y1 = small.boxes["map"]
    assert (y1 - y0 + 1, x1 - x0 + 1) == (400, 480)  # whole pixels: 10 x
    with pytest.raises(ValueError, match="max_size"):
        render(RGBLayer(np.zeros((4, 4, 3), np.uint8)), ext, max_size=4)


def test_crowded_markers_become_blocks_and_outside_ones_are_skipped():
    ext, g = _grid_window(300, 300)
    rng = np.random.default_rng(1)
    r, c = rng.integers(0, 300, 3000), rng.integers(0, 300, 3000)
    lon, lat = pixel_to_lonlat(g, r, c)
    colour = (250, 0, 250)
    pic = render(RGBLayer(np.zeros((300, 300, 3), np.uint8)), ext, max_size=300,
                 markers=[Markers(lon, lat, "many", "dot", colour)], max_markers=100)
    mp = np.asarray(pic.image.convert("RGB"))
    x0, y0 = pic.boxes["map"][:2]
    hit = np.all(mp[y0 + r, x0 + c] == colour, axis=1)
    assert hit.all()
    # Points outside the frame draw nothing on the map.
    out = render(RGBLayer(np.zeros((300, 300, 3), np.uint8)), ext, legend=False,
                 markers=[Markers([10.0], [50.0], "far", "dot", colour)])
    assert not _has(_pixels(out, "map"), colour)


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match="north-up"):
        Extent("EPSG:32737", (10.0, 1.0, 0.0, 0.0, -10.0, 0.0))
    with pytest.raises(ValueError, match="symbol"):
        Markers([1.0], [2.0], "x", symbol="star")
    with pytest.raises(ValueError, match="longitudes"):
        Markers([1.0, 2.0], [2.0], "x")
    ext, _ = _grid_window(10, 10)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        render(RGBLayer(np.zeros((10, 10), np.uint8)), ext)
    with pytest.raises(TypeError, match="base layer"):
        render(np.zeros((10, 10)), ext)


def test_paint_writes_a_png_atomically_and_in_lonlat(tmp_path):
    from PIL import Image

    ext = Extent.from_bounds(36.7, -1.3, 36.8, -1.2, 200, 200)  # EPSG:4326
    out = paint(tmp_path / "q.png", ClassLayer(np.full((200, 200), 2), {2: "maize"}), ext, title="maize")
    assert out == tmp_path / "q.png" and [p.name for p in tmp_path.iterdir()] == ["q.png"]
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 200
        px = np.asarray(im.convert("RGB")).reshape(-1, 3)
    assert _has(px, PALETTE[1])


def test_read_raster_decimates_with_the_right_extent(tmp_path):
    import rasterio

    g = expected_grid(TILE)
    path = tmp_path / "r.tif"
    with rasterio.open(path, "w", driver="GTiff", width=g.width, height=g.height, count=1, dtype="uint8",
                       crs=g.crs, transform=g.affine(), nodata=0) as dst:
        dst.write(np.ones((1, g.height, g.width), np.uint8))
        dst.update_tags(synthetic="true")
    view = read_raster(path, max_size=256)
    assert max(view.data.shape[1:]) == 256 and view.synthetic and view.nodata == 0
    a, _, c, _, e, f = view.extent.transform
    assert (c, f) == (g.transform[2], g.transform[5])
    h, w = view.data.shape[1:]
    assert a * w == pytest.approx(g.transform[0] * g.width) and e * h == pytest.approx(g.transform[4] * g.height)
